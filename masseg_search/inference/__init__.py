"""Inference (`masseg-search infer`): propagate every object of a split under K configurations in one engine pass
and store the low-res logits (:mod:`masseg_search.store.predictions`); or store another model family as a view
(``--import-masks``: any tool's masks; ``--engine cutie``). Torch loads only when a model runs."""
from masseg_search.inference.cutie_infer import run_cutie_inference
from masseg_search.inference.import_masks import import_masks
from masseg_search.inference.infer import run_inference, write_masks

__all__ = ["import_masks", "run_cutie_inference", "run_inference", "write_masks"]
