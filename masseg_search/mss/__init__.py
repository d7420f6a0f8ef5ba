"""tune-mss: Optuna search per scene type of SAM2's memory-encoder mask scaling (sigmoid scale, bias) and the memory
knobs of ``mss.space`` (:mod:`masseg_search.store.knobs`).

One box per file: ``studies`` (storage, samplers, one study per scene type, heartbeat), ``search`` (the batched
ask -> one engine pass -> tell loop), ``pruning`` (stopping trials within a pass on their per-video J&F:
Optuna's WilcoxonPruner or successive halving), ``passes`` (the engine pass: local or Ray actors, in-memory J&F per slot),
``holdout`` (honest held-out estimate over video folds), ``outputs`` (best_configs.yaml, CSV tables, plots,
dashboard attributes, note and artifacts), ``policy_fit`` (fixed / learned-tree policies fit on training folds,
nested), ``policy`` (``--policy learned``: candidate table, held-out comparison, policy.yaml), ``tune`` (the stage
from Python: :func:`masseg_search.mss.tune.tune_mss`).
"""
