"""The project's one YAML config schema (pydantic), and loading with errors that name the file and the key.

Sections: ``model``, ``data``, ``scene_types``, ``train`` (one fine-tuning run), ``train_sweep`` (``null``: no
sweep, ``run`` starts from ``model.checkpoint``), ``mss``, ``infer``, ``ensemble``, ``cutie`` (the second model
family), ``moseplus``, ``pipeline`` (``run``). Every section forbids unknown keys: a typo is an error naming the key
path and the closest valid key. Commands take ``--set key.path=value`` overrides (:func:`parse_overrides`),
validated the same way. ``configs/demo.yaml`` is the embedded default.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from masseg_search import CONFIGS_DIR, PROJECT_ROOT
from masseg_search.errors import MassegError
from masseg_search.store.knobs import KNOB_FIELDS, Knobs

DEFAULT_CONFIG = CONFIGS_DIR / "demo.yaml"


class Section(BaseModel):
    """Base of every section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    """Which SAM2 to build and from which weights."""

    config: str = Field("tiny256", description="one of our names under configs/models/, a SAM2 name, or a yaml path")
    checkpoint: str | None = Field(None, description="official {'model': ...} or a training checkpoint; None = random")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    postprocess: bool = Field(False, description="mirror build_sam2_video_predictor(apply_postprocessing=True)")


class SynthSection(Section):
    """The synthetic MOSE-like dataset the demo and tests generate."""

    videos: int = Field(40, ge=1)
    seed: int = 0
    height: int = Field(128, ge=32)
    width: int = Field(128, ge=32)
    frames: int = Field(12, ge=2)
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.5, "val": 0.25, "test": 0.25})


class DataSection(Section):
    """Where the data is; splits are list files (a path ending in .txt) or split names looked up under ``root``."""

    root: str = "results/data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    test_split: str | None = Field("test", description="a list file or split name under test_root; None = every video")
    test_root: str | None = Field(None, description="the test videos' root when they live apart (MOSE valid); None = root")
    synth: SynthSection | None = Field(default_factory=SynthSection, description="set to null for real data")
    build_moseplus: bool = Field(False, description="run's data stage builds MOSE+ (the moseplus section) first; "
                                 "root must then be <moseplus.out>/merged")

    @property
    def test_data_root(self) -> str:
        """Where the test videos are: ``test_root``, else ``root``."""
        return self.test_root or self.root


class FeatureRange(Section):
    """An inclusive range on one scene feature; either end may be open."""

    min: float | None = None
    max: float | None = None


class SceneTypeRule(Section):
    """A named scene type: an object is of this type when every feature range holds."""

    name: str
    when: dict[str, FeatureRange] = Field(default_factory=dict)


class SceneTypesSection(Section):
    """Scene types in priority order (first match wins), and the type of objects no rule matches."""

    types: list[SceneTypeRule] = Field(default_factory=list)
    default: str = "regular"

    @model_validator(mode="after")
    def _unique_names(self) -> "SceneTypesSection":
        names = [rule.name for rule in self.types]
        if len(names) != len(set(names)):
            raise ValueError(f"scene type names must be unique, got {names}")
        if self.default in names:
            raise ValueError(f"default type {self.default!r} must not also be a rule name")
        return self


class LossWeights(Section):
    """Weights of the fine-tuning loss terms (MASSeg eq. 1, plus SAM2's object-score term)."""

    ce: float = Field(20.0, ge=0)
    dice: float = Field(1.0, ge=0)
    sim: float = Field(0.0, ge=0)
    iou: float = Field(1.0, ge=0)
    class_: float = Field(1.0, ge=0, alias="class")
    ce_kind: Literal["focal", "ce"] = "focal"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AugmentationProbabilities(Section):
    """Probability of each augmentation (MASSeg section 2.3)."""

    hflip: float = Field(0.5, ge=0, le=1)
    affine: float = Field(0.3, ge=0, le=1)
    resize: float = Field(0.3, ge=0, le=1)
    color_global: float = Field(0.3, ge=0, le=1)
    color_per_frame: float = Field(0.2, ge=0, le=1)
    grayscale: float = Field(0.05, ge=0, le=1)


class TrainSection(Section):
    """One fine-tuning run. Optimiser defaults are sam2's MOSE fine-tune yaml (sam2.1_hiera_b+_MOSE_finetune.yaml:
    base lr 5e-6, vision lr 3e-6, layer decay 0.9, weight decay 0.1, cosine to a tenth, no warm-up); a tiny model
    trained from random weights on a CPU needs about 3e-4 instead (DESIGN.md, configs/pretrain_base.yaml)."""

    lr: float = Field(5e-6, gt=0)
    vision_lr: float | None = Field(3e-6, description="image-encoder lr; None = lr")
    layer_decay: float = Field(0.9, gt=0, le=1)
    weight_decay: float = Field(0.1, ge=0)
    epochs: int = Field(4, ge=1)
    iterations_per_epoch: int = Field(100, ge=1)
    batch_size: int = Field(1, ge=1)
    num_frames: int = Field(6, ge=2)
    max_objects: int = Field(3, ge=1)
    grad_clip: float = Field(0.1, gt=0)
    warmup_iterations: int = Field(0, ge=0)
    amp: bool = True
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    multimask_output_for_tracking: bool = False
    loss: LossWeights = Field(default_factory=LossWeights)
    augment: AugmentationProbabilities = Field(default_factory=AugmentationProbabilities)
    val_videos: int | None = Field(None, description="cap on validation videos per epoch; None = all")


class SearchDimension(Section):
    """One searched hyperparameter: a float range (log or linear) or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None
    grid: bool = Field(False, description="with choices: try every choice in order (train-sweep: tune.grid_search)")

    @model_validator(mode="after")
    def _range_or_choices(self) -> "SearchDimension":
        if self.grid and self.choices is None:
            raise ValueError("grid: true needs a list of choices")
        if self.choices is None and (self.low is None or self.high is None):
            raise ValueError("give either low and high, or choices")
        if self.choices is None and self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.choices is None and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class KnobDimension(Section):
    """How tune-mss searches one configuration knob: a float or int range (log or linear), or categorical choices
    (``null`` among the choices = the model's own value / the policy off)."""

    type: Literal["float", "int", "categorical"] | None = Field(None, description="None = categorical with choices, "
                                                                "else the knob's own kind (int or float)")
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0, description="int/float: search on a grid of this step from low")
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> "KnobDimension":
        if self.type is None and self.choices is not None:
            object.__setattr__(self, "type", "categorical")
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("type categorical needs a non-empty list of choices")
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.choices is not None:
            raise ValueError(f"type {self.type} takes low and high, not choices")
        if self.low is None or self.high is None:
            raise ValueError("give low and high (or choices)")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("a log range takes no step")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()
                                       and (self.step is None or float(self.step).is_integer())):
            raise ValueError("an int range needs whole low, high and step")
        return self

    def values_to_check(self) -> list[Any]:
        """The values whose validity decides the whole dimension (both ends, or every choice)."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


# the ranges tune-mss --knobs uses for a knob that mss.space does not declare
DEFAULT_KNOB_SPACE: dict[str, dict[str, Any]] = {
    "scale": {"type": "float", "low": 1.0, "high": 40.0, "log": True},
    "bias": {"type": "float", "low": -20.0, "high": 0.0},
    "memory_stride": {"type": "int", "low": 1, "high": 4},
    "memory_frames": {"type": "int", "low": 2, "high": 7},
    "obj_ptrs": {"type": "int", "low": 2, "high": 16},
    "cond_frames": {"type": "categorical", "choices": [None, 2]},
    "multimask": {"type": "categorical", "choices": [0, 1]},
    "admit_score": {"type": "float", "low": -2.0, "high": 2.0},
    "admit_iou": {"type": "float", "low": 0.0, "high": 0.9},
    "keep_present": {"type": "int", "low": 0, "high": 3},
}


def knob_dimension(name: str, declared: KnobDimension | None = None) -> KnobDimension:
    """A knob's search dimension: as declared (its kind filled in and checked), else the built-in default range."""
    dimension = declared if declared is not None else KnobDimension(**DEFAULT_KNOB_SPACE[name])
    kind = "float" if name in ("scale", "bias") else KNOB_FIELDS[name][1].__name__
    if dimension.type is None:
        dimension = dimension.model_copy(update={"type": kind})
    if kind == "int" and dimension.type == "float":
        raise ValueError(f"{name} is an integer knob: use type int (or categorical)")
    for value in dimension.values_to_check():
        if value is None and name in ("scale", "bias"):
            raise ValueError(f"{name} has no 'model default' (null) choice")
        if value is None:
            continue
        probe = {"scale": 7.5, "bias": -4.0, name: value}
        try:
            Knobs(**probe)
        except MassegError as exc:
            raise ValueError(f"{name} = {value!r}: {exc.message.split(': ', 1)[-1]}") from None
    return dimension


class KnobSpace(Section):
    """The knobs a tune-mss study searches (every key set here) and their ranges; see masseg_search/store/knobs.py.
    scale and bias are always searched."""

    scale: KnobDimension = Field(default_factory=lambda: KnobDimension(**DEFAULT_KNOB_SPACE["scale"]))
    bias: KnobDimension = Field(default_factory=lambda: KnobDimension(**DEFAULT_KNOB_SPACE["bias"]))
    memory_stride: KnobDimension | None = None
    memory_frames: KnobDimension | None = None
    obj_ptrs: KnobDimension | None = None
    cond_frames: KnobDimension | None = None
    multimask: KnobDimension | None = None
    admit_score: KnobDimension | None = None
    admit_iou: KnobDimension | None = None
    keep_present: KnobDimension | None = None

    @model_validator(mode="after")
    def _valid_for_the_knob(self) -> "KnobSpace":
        for name in type(self).model_fields:
            declared = getattr(self, name)
            if declared is not None:
                object.__setattr__(self, name, knob_dimension(name, declared))
        return self

    def searched(self) -> dict[str, KnobDimension]:
        """Knob name -> dimension, in the config id's order (scale, bias first)."""
        return {name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None}

    def select(self, knobs: list[str]) -> "KnobSpace":
        """The space restricted to ``knobs`` (tune-mss --knobs): declared ranges where given, else the defaults."""
        valid = list(type(self).model_fields)
        unknown = [name for name in knobs if name not in valid]
        if unknown:
            close = difflib.get_close_matches(unknown[0], valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid knobs: {', '.join(valid)}"
            raise MassegError(f"--knobs: unknown knob {unknown[0]!r} ({hint})",
                              fix=f"choose from {', '.join(valid)}; scale and bias are always searched")
        missing = [name for name in ("scale", "bias") if name not in knobs]
        if missing:
            raise MassegError(f"--knobs must include {' and '.join(missing)}: every study searches scale and bias",
                              fix=f"pass --knobs {','.join(['scale', 'bias'] + [k for k in knobs if k not in ('scale', 'bias')])}")
        values = {name: (getattr(self, name) if getattr(self, name) is not None else knob_dimension(name))
                  for name in knobs}
        return KnobSpace(**{name: values.get(name) for name in valid})


class AshaSection(Section):
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class TrainSweepSection(Section):
    """Ray Tune sweep over ``train`` keys (dotted paths such as ``loss.dice`` or ``augment.grayscale``)."""

    name: str = "sweep"
    samples: int = Field(4, ge=1)
    space: dict[str, SearchDimension] = Field(default_factory=dict)
    asha: AshaSection = Field(default_factory=AshaSection)
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(1, ge=0)
    gpus_per_trial: float = Field(0, ge=0, description="> 1: the trial runs data-parallel, one worker per GPU")
    cpus_per_trial: float = Field(1, gt=0, description="per worker when data-parallel")
    workers_per_trial: int | None = Field(None, ge=1, description="data-parallel workers (TorchTrainer); None = "
                                          "gpus_per_trial when > 1, else 1; > 1 without GPUs = CPU workers on gloo")
    max_concurrent: int | None = Field(None, ge=1)
    storage: str = "results/sweeps"
    searcher: Literal["random", "optuna"] = "random"
    optuna_storage: str | None = Field(None, description="searcher optuna: its storage; None = mss.storage, else sqlite:///studies/val.db")
    seed: int = 0


class PolicySection(Section):
    """``tune-mss --policy learned``: a shallow tree choosing each object's (scale, bias) from first-frame features,
    fit and scored on held-out video folds beside the hand-written scene types (masseg_search/mss/policy.py)."""

    learn: bool = Field(False, description="tune-mss learns the policy after its held-out folds (--policy learned; "
                        "needs mss.cv_folds >= 2); `run` then also infers it on test with pipeline.test_baselines")
    grid_points: int = Field(3, ge=0, description="candidates: a grid of this many values per dimension over "
                             "mss.scale x mss.bias, besides the two baselines and the studies' choices; 0 = no grid")
    max_depth: int = Field(3, ge=0, le=8, description="deepest tree the inner CV may pick (0 = one configuration)")
    max_leaves: int = Field(8, ge=1, le=8, description="leaves of the tree at most")
    min_leaf_objects: int = Field(4, ge=1, description="validation objects per leaf at least")
    inner_folds: int = Field(3, ge=2, description="folds over the training videos that choose the depth")
    features: list[str] | None = Field(None, description="first-frame features the tree may split on; None = all "
                                       "of masseg_search/data/scene_types.py")
    videos_per_pass: int = Field(16, ge=1, description="videos per engine pass of the candidate table (saved after "
                                 "each, so a stopped run resumes)")


class PruningSection(Section):
    """Settings of tune-mss's trial pruners (``mss.pruner``); each pass judges trials on their per-video J&F."""

    p_threshold: float = Field(0.1, gt=0, lt=1, description="wilcoxon: prune a trial when the signed-rank test says it "
                               "is worse than the best trial at this p-value (Optuna's WilcoxonPruner)")
    startup_videos: int = Field(2, ge=0, description="wilcoxon: videos paired with the best trial before any pruning")
    rungs: list[float] = Field(default_factory=lambda: [1 / 9, 1 / 3], description="sha: fractions of a type's videos "
                               "after which trials are ranked (the rest of the pass is the last rung)")
    reduction_factor: float = Field(3.0, gt=1, description="sha: the top 1/reduction_factor of the trials at a rung "
                                    "(this pass's and earlier ones') go on")

    @field_validator("rungs")
    @classmethod
    def _increasing_fractions(cls, rungs: list[float]) -> list[float]:
        if any(not 0 < fraction < 1 for fraction in rungs) or sorted(set(rungs)) != list(rungs):
            raise ValueError("rungs must be increasing fractions between 0 and 1, e.g. [0.111, 0.333]")
        return rungs


class MssSection(Section):
    """Optuna search per scene type of a configuration: the memory encoder's sigmoid scale and bias, and the memory
    knobs ``space`` declares (SAM2's and our admission policy, :mod:`masseg_search.store.knobs`)."""

    split: str | None = Field(None, description="split name or list file searched on; None = data.val_split")
    trials: int = Field(24, ge=1, description="finished (complete or pruned) trials per scene-type study (the two "
                        "baselines count)")
    batch: int = Field(8, ge=1, description="trials asked per study and engine pass")
    sampler: Literal["tpe", "gp", "cmaes", "random", "grid"] = "tpe"
    seed: int = 0
    cv_folds: int = Field(3, ge=0, description="held-out estimate over videos; 0 or 1 = none")
    space: KnobSpace = Field(default_factory=KnobSpace, description="the knobs each study searches and their ranges "
                             "(scale and bias always; tune-mss --knobs selects others)")
    grid_points: int = Field(5, ge=2, description="values per float dimension for the grid sampler")
    feature_cache_mb: int = Field(512, ge=0, description="keep image features across passes up to this size")
    engine_max_rows: int | None = Field(None, ge=1, description="object x configuration rows per engine step; None = all")
    engine_chunk_by_config: bool = Field(False, description="batch each configuration's rows on their own: a trial "
                                         "pruned mid-pass then leaves the other trials' results bit for bit the same "
                                         "(batched all together they agree up to float rounding), at the cost of one "
                                         "engine step per configuration and frame")
    pruner: Literal["none", "wilcoxon", "sha"] = Field("none", description="stop trials early within a pass on their "
                                                        "per-video J&F: Optuna's WilcoxonPruner, or successive halving")
    pruning: PruningSection = Field(default_factory=PruningSection)
    bootstrap: int = Field(1000, ge=0)
    storage: str | None = Field(None, description="Optuna storage; None = sqlite:///studies/<study>.db; no passwords")
    artifact_dir: str = Field("studies/artifacts", description="optuna-dashboard --artifact-dir for the plots")
    results_dir: str = Field("results/mss", description="best_configs.yaml, tables and plots go to <dir>/<study>/")
    heartbeat_interval: int = Field(10, ge=1, description="seconds between heartbeats of in-flight trials")
    grace_period: int | None = Field(None, ge=1, description="seconds without heartbeat before a trial is failed; None = 3x")
    policy: PolicySection = Field(default_factory=PolicySection)


class InferSection(Section):
    """Where `infer` runs: in this process, or its videos spread over the workers of a Ray cluster."""

    ray_address: str | None = Field(None, description="Ray cluster to run on (auto, host:port, ray://..., or local "
                                    "for a Ray on this machine); None = RAY_ADDRESS if set, else this process")
    workers: int | None = Field(None, ge=1, description="Ray workers (each keeps its model loaded); None = as many "
                                "as the cluster's GPUs (or CPUs) hold")
    gpus_per_worker: float | None = Field(None, ge=0, le=1, description="GPU share per Ray worker (0.5: two on a "
                                          "GPU; 0: CPU workers); None = 1 when the cluster has GPUs, else 0")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs per Ray worker (its torch threads on a CPU worker)")


class EnsembleSection(Section):
    """How predictions are fused (a plan file can override), and what candidates --select-on compares."""

    method: Literal["select", "single", "mean", "logit-mean", "vote", "confidence", "per-video-consensus",
                    "per-video-confidence", "per-object-consensus", "per-object-confidence"] = Field(
        "select", description="fusion when no --plan is given (select needs --best-configs and --scene-types; "
        "confidence: per pixel the surest config; per-video-*/per-object-*: one config per video/object, chosen "
        "without labels)")
    configs: list[str] = Field(default_factory=list, description="config ids; empty = all present")
    weights: list[float] | None = Field(None, description="one weight per config (mean, logit-mean, vote); None = equal")
    top_k: int = Field(3, ge=1, description="configs in the mean-top-k candidates of --select-on")
    workers: int = Field(2, ge=1, description="processes over videos")
    flip: bool = Field(False, description="run also infers the mirrored videos (view 'flip'; infer --flip) as "
                       "ensemble members")
    trials: int = Field(1, ge=1, description="run also infers the next best sweep trials' checkpoints (views "
                        "'trial2', 'trial3', ...; with flip also 'trial2.flip') as ensemble members; 1 = the best only")
    import_base: bool = Field(False, description="the demo also imports the untuned base checkpoint's masks through "
                              "infer --import-masks as view 'untuned' (another model, hard masks) and applies the best "
                              "per-video / per-object choice rule to test")

    @model_validator(mode="after")
    def _weights_match(self) -> "EnsembleSection":
        if self.weights is not None and len(self.weights) != len(self.configs):
            raise ValueError(f"weights has {len(self.weights)} values for {len(self.configs)} configs")
        return self


class CutieSection(Section):
    """Cutie (rf-cutie), a second model family for the ensemble: ``infer --engine cutie --view NAME``."""

    model: Literal["small", "base"] = Field("small", description="Cutie's size, as its checkpoint was trained")
    weights: str | None = Field(None, description="a Cutie checkpoint (.pth state dict, e.g. cutie-small-mega.pth from "
                                "Cutie's releases); null = random weights, whose masks are useless (tests only)")
    max_internal_size: int = Field(480, description="shortest side Cutie works at (its DAVIS/MOSE setting); -1 = the "
                                   "video's own size")
    pseudo_logit_scale: float = Field(1.0, gt=0, description="scale of the pseudo-logits its probabilities become "
                                      "(masseg_search/store/pseudo_logits.py)")


class PipelineSection(Section):
    """`masseg-search run`: where its outputs go and what its last stages do."""

    out: str = Field("results", description="pipeline.yaml, predictions/, plans/, submissions/, evaluations/, "
                     "report.html; another folder also gathers the sweeps, studies and synthetic data left at their "
                     "default paths")
    study: str = Field("val", description="tune-mss study name (studies <study>/<scene_type>)")
    submission: str = Field("submission", description="submissions/<submission>/ and <submission>.zip")
    test_baselines: bool = Field(False, description="also infer SAM2's 20/-10, MASSeg's 7.5/-4 and the per-type "
                                 "choices on test (the demo's comparison rows), not only what the chosen plan reads")
    evaluate: Literal["auto", "always", "never"] = Field(
        "auto", description="score the test submission: auto = when every test frame has ground truth")
    report: bool = Field(True, description="end with the HTML report of the out folder")
    report_overlays: bool = Field(True, description="the report's overlays of the worst videos")

    @field_validator("submission", "study")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError(f"{value!r} must be a plain folder name")
        return value


class MosePlusSource(Section):
    """One source dataset for MOSE+: where it is, its format, and how many selected clips it may give."""

    name: str = Field(description="short lowercase prefix of its merged video names, e.g. 'ytvos'")
    format: Literal["davis", "ytvos", "vis", "ovis", "burst"]
    src: str = Field(description="the source folder as the dataset ships it")
    ann: str | None = Field(None, description="the annotation JSON where the format keeps it apart (VIS 2019, OVIS, BURST)")
    split: str | None = Field(None, description="DAVIS: ImageSets/2017/<split>.txt; None = every video")
    images: str | None = Field(None, description="YouTube-VOS: another image folder, e.g. train_all_frames/JPEGImages")
    frames: Literal["annotated", "all"] = Field("annotated", description="YouTube-VOS/BURST: unlabelled frames too?")
    max_videos: int | None = Field(None, ge=1, description="convert only the first N videos (a quick look)")
    quota: int | None = Field(None, ge=0, description="at most this many selected clips from this source; None = no cap")
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _prefix_name(cls, value: str) -> str:
        if not value.isascii() or not value.isalnum() or value.lower() != value:
            raise ValueError(f"source name {value!r} must be lowercase letters and digits (it prefixes video names)")
        return value


class StatRange(Section):
    """An inclusive range on one clip statistic; either end may be open."""

    min: float | None = None
    max: float | None = None


class MosePlusSelection(Section):
    """Which converted clips are MOSE-like: hard requirements, then at least ``min_criteria`` criteria met.

    Statistics: num_objects, num_frames, area_drop, bbox_overlap, occlusion, small_object_share,
    disappearance_share, reappearance_share, appearance_similarity (see masseg_search/data/moseplus/select.py).
    """

    required: dict[str, StatRange] = Field(
        default_factory=lambda: {"num_objects": StatRange(min=1), "num_frames": StatRange(min=5)})
    criteria: dict[str, StatRange] = Field(default_factory=lambda: {
        "occlusion": StatRange(min=0.3), "small_object_share": StatRange(min=0.3),
        "reappearance_share": StatRange(min=0.2), "appearance_similarity": StatRange(min=0.7),
        "num_objects": StatRange(min=4)})
    min_criteria: int = Field(1, ge=0)
    max_clips: int | None = Field(None, ge=0, description="cap on all selected clips together, after the quotas")
    small_object_area: float = Field(0.01, gt=0, lt=1, description="an object is small below this share of the frame")
    stats_max_frames: int = Field(60, ge=2, description="labelled frames sampled per clip for the statistics")
    similarity_frames: int = Field(3, ge=1, description="frames whose colours describe each object's appearance")


class MosePlusSection(Section):
    """`data build-moseplus`: convert the sources, select MOSE-like clips, merge them with MOSE train."""

    out: str = Field("results/moseplus", description="converted/, stats/, report/ and the merged root merged/")
    shorter_side: int | None = Field(480, ge=16, description="converted clips' shorter side; None = keep sizes")
    upscale: bool = Field(True, description="also enlarge clips smaller than shorter_side")
    jpeg_quality: int = Field(95, ge=50, le=100)
    workers: int = Field(1, ge=1, description="videos converted at once, one process each")
    mose_root: str | None = Field(None, description="MOSE train (JPEGImages/, Annotations/); None = converted clips only")
    mose_list: str | None = Field(None, description="list file or split name under mose_root; None = every video")
    mose_holdout_list: str | None = Field(None, description="MOSE videos kept out of training, written as val.txt")
    mose_prefix: str = "mose"
    link: Literal["hardlink", "symlink", "copy"] = Field("hardlink", description="how merged/ refers to the files")
    list_name: str = Field("train", description="merged/<list_name>.txt lists the MOSE+ training videos")
    sources: list[MosePlusSource] = Field(default_factory=list)
    selection: MosePlusSelection = Field(default_factory=MosePlusSelection)

    @model_validator(mode="after")
    def _unique_prefixes(self) -> "MosePlusSection":
        names = [source.name for source in self.sources] + [self.mose_prefix]
        if len(names) != len(set(names)):
            raise ValueError(f"source names and mose_prefix must all differ (they prefix video names), got {names}")
        return self


class ProjectConfig(Section):
    """The whole config file."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    scene_types: SceneTypesSection = Field(default_factory=SceneTypesSection)
    train: TrainSection = Field(default_factory=TrainSection)
    train_sweep: TrainSweepSection | None = Field(default_factory=TrainSweepSection,
                                                  description="null: no sweep; run starts from model.checkpoint")
    mss: MssSection = Field(default_factory=MssSection)
    infer: InferSection = Field(default_factory=InferSection)
    ensemble: EnsembleSection = Field(default_factory=EnsembleSection)
    cutie: CutieSection = Field(default_factory=CutieSection)
    moseplus: MosePlusSection = Field(default_factory=MosePlusSection)
    pipeline: PipelineSection = Field(default_factory=PipelineSection)
    source: str | None = Field(None, exclude=True, description="the file this was loaded from")


def _valid_keys(model_class: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at ``loc``'s parent, walking nested models (for the closest-key hint)."""
    current: Any = model_class
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        annotation = fields[part].annotation
        current = _model_in(annotation)
    if current is None:
        return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside an annotation such as ``X | None`` or ``list[X]`` or ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _explain(error: ValidationError, source: str, fix: str = "edit the keys named above") -> MassegError:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        key_path = ".".join(str(part) for part in loc)
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown key {key_path!r} ({closest_key_hint(loc)})")
        else:
            lines.append(f"{key_path}: {item['msg']} (got {item.get('input')!r})")
    return MassegError("invalid config: " + "; ".join(lines), source, fix)


def closest_key_hint(loc: tuple[Any, ...]) -> str:
    """``did you mean 'mss.trials'?`` for an unknown key path (difflib), else the valid keys at that level."""
    valid = _valid_keys(ProjectConfig, loc)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    return f"did you mean {'.'.join(map(str, loc[:-1] + (close[0],)))!r}?" if close else f"valid keys: {', '.join(valid)}"


def config_from_dict(values: dict[str, Any], source: str = "<dict>", fix: str = "edit the keys named above") -> ProjectConfig:
    """Validate a config dictionary; errors name ``source``."""
    if not isinstance(values, dict):
        raise MassegError(f"config must be a mapping of sections, got {type(values).__name__}", source)
    try:
        config = ProjectConfig.model_validate(values)
    except ValidationError as exc:
        raise _explain(exc, source, fix) from None
    config.source = source
    return config


def resolve_config_path(name_or_path: str | Path | None) -> Path:
    """A path as given, or a name under ``configs/`` (``demo`` -> configs/demo.yaml); None = the demo default."""
    if name_or_path is None:
        return DEFAULT_CONFIG
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (CONFIGS_DIR / path, CONFIGS_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
    raise MassegError("config file not found", path, f"pass a yaml path or one of: {', '.join(available)}")


def load_config(name_or_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> ProjectConfig:
    """Load and validate a project config (a path or a name under configs/), with optional dotted overrides
    (``{"mss.trials": 8}``, what ``--set mss.trials=8`` gives). A relative ``model.checkpoint`` missing from the
    working folder but present in this project (the bundled base) is made absolute, so any folder works."""
    path = resolve_config_path(name_or_path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MassegError(f"not valid YAML ({exc})", path, "fix the YAML syntax at the line named") from None
    for dotted, value in (overrides or {}).items():
        set_dotted(values, dotted, value)
    fix = "edit the keys named above" + (" (in the file or in --set)" if overrides else "")
    config = config_from_dict(values, str(path), fix)
    checkpoint = config.model.checkpoint
    if checkpoint and not Path(checkpoint).is_absolute() and not Path(checkpoint).exists() \
            and (PROJECT_ROOT / checkpoint).is_file():
        config.model.checkpoint = str(PROJECT_ROOT / checkpoint)
    return config


def set_dotted(values: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``values['a']['b'] = value`` for ``dotted='a.b'``, creating mappings on the way (also in place of a
    section set to null)."""
    parts = dotted.split(".")
    if not all(parts):
        raise MassegError(f"{dotted!r} is not a key path", fix="write section.key[.key...], e.g. mss.trials")
    node = values
    for depth, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            where = ".".join(parts[: depth + 1])
            raise MassegError(f"cannot set {dotted!r}: {where!r} is a value ({node!r}), not a section",
                              fix=f"set {where} itself, e.g. --set {where}=VALUE")
    node[parts[-1]] = value


def parse_overrides(assignments: list[str] | None) -> dict[str, Any]:
    """``["mss.trials=8", "data.synth=null"]`` (``--set`` arguments) -> ``{"mss.trials": 8, "data.synth": None}``;
    each value is read as YAML (numbers, true/false, null, [lists], {mappings}), else kept as text. Later ones win."""
    overrides: dict[str, Any] = {}
    for assignment in assignments or []:
        key, equals, text = assignment.partition("=")
        key = key.strip()
        if not equals or not key:
            raise MassegError(f"--set {assignment!r} is not KEY=VALUE", fix="write e.g. --set mss.trials=8")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        overrides[key] = value
    return overrides


def dump_config(config: ProjectConfig) -> str:
    """The config as YAML (by alias), e.g. to record beside results what produced them."""
    return yaml.safe_dump(config.model_dump(by_alias=True, exclude={"source"}), sort_keys=False)
