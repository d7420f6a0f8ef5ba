"""`train-sweep`: a Ray Tune sweep of fine-tuning runs over ``train`` keys, ASHA on validation J&F.

Each trial is one :func:`masseg_search.finetune.loop.train_run` with the sampled values written into the ``train``
section (dotted keys such as ``loss.dice``, ``augment.grayscale``, ``lr``); it reports ``val_jf`` and a sam2-format
checkpoint every epoch. ASHA stops weak trials; ``CheckpointConfig`` keeps each trial's best checkpoints;
``FailureConfig`` retries a trial that raised, from its last checkpoint. With ``gpus_per_trial`` > 1 a trial runs
data-parallel through Ray Train's ``TorchTrainer``.

Everything lives under ``<storage>/<name>/`` (default ``results/sweeps/<name>/``): Ray's experiment state, the trial
folders, ``results.csv`` / ``results.parquet`` and ``best_checkpoint.txt``. ``resume=True`` restores an interrupted
sweep with ``Tuner.restore``. Ctrl-C, SIGUSR1 and SIGTERM stop it after Tune saves its state; after a hard kill,
what trials reported in Tune's last seconds is redone from their previous checkpoints. With
``train_sweep.searcher: optuna`` the trials are also an Optuna study ``train-sweep-<name>`` in the project's Optuna
storage, so ``optuna-dashboard`` shows it beside the MSS studies.

One box per file: ``space`` (the search space and each trial's config), ``trial`` (one trial inside Ray), ``table``
(the results table), ``driver`` (Ray, the Tuner, signals, resume). Ray's fixed cost per sweep is measured in
``benchmarks/bench_train_sweep.py`` (figures in benchmarks/README.md).
"""
from masseg_search.finetune.sweep.driver import SweepResult, optuna_storage_url, ray_session, run_sweep, sweep_section
from masseg_search.finetune.sweep.space import search_space, trial_config
from masseg_search.finetune.sweep.table import ResultsTable
from masseg_search.finetune.sweep.trial import METRIC, TrialPlan, run_trial, trial_plan

__all__ = [
    "METRIC", "ResultsTable", "SweepResult", "TrialPlan", "optuna_storage_url", "ray_session", "run_sweep",
    "run_trial", "search_space", "sweep_section", "trial_config", "trial_plan",
]
