"""Fine-tuning SAM2 (stage 3): clips (:mod:`.clips`), augmentation (:mod:`.augment`), the weighted loss
(:mod:`.loss`), one run (:mod:`.loop`, `masseg-search train`) and the Ray Tune sweep (:mod:`.sweep`,
`masseg-search train-sweep`). Never named ``training``: sam2 installs a top-level package of that name.
"""
