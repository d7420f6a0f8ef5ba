"""One fine-tuning run: sam2's ``SAM2Train`` on MOSE-layout clips, validation J&F each epoch, sam2-format checkpoints.

The model is the project's model yaml composed by Hydra with the model class switched to sam2's ``SAM2Train``
(as :class:`~masseg_search.finetune.query_features.SAM2TrainWithQueryFeatures`, which also returns the features
the Sim loss compares) and its training-only keys set (the ground-truth mask of frame 0 is the prompt;
no point or box prompts), weights from ``model.checkpoint`` (official, ours, or seeded random when null).
AdamW with layer decay on the Hiera trunk (sam2's ``get_layer_id``), separate image-encoder lr, no weight decay on
biases and norms, linear warm-up then cosine to a tenth (as sam2's MOSE fine-tune yaml), gradient clipping, bf16
autocast on CUDA only. Each epoch: ``iterations_per_epoch`` steps, then J&F on the validation split with the
project's inference engine and evaluator, then a checkpoint ``{"model", "optimizer", "epoch", "steps", ...}``
(``checkpoint.pt`` = last, ``best.pt`` = best J&F) written atomically; ``resume_from`` continues from one.

The same function runs alone (`masseg-search train`), inside a Ray Tune trial, and on each worker of a Ray Train
``TorchTrainer`` (``rank`` / ``world_size`` / ``wrap_model``).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from masseg_search.config import ProjectConfig, TrainSection, dump_config
from masseg_search.data.layout import atomic_write_bytes, open_dataset, read_mask
from masseg_search.errors import MassegError
from masseg_search.evaluation import first_frame_object_ids, score_video
from masseg_search.model.build import (
    apply_state_dict,
    build_model,
    compose_model_config,
    load_weights,
    read_checkpoint,
    resolve_device,
    resolve_model_config,
)
from masseg_search.store.predictions import config_id, logits_to_mask

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "best.pt"
HISTORY_FILE = "history.csv"
FINAL_LR_FRACTION = 0.1  # cosine from lr down to lr / 10, as sam2's MOSE fine-tune yaml


@dataclass
class EpochRecord:
    """What one epoch did: training loss terms (means over steps), validation scores, timings."""

    epoch: int
    steps: int
    loss: float
    loss_terms: dict[str, float]
    val_jf: float
    val_j: float
    val_f: float
    val_objects: int
    train_seconds: float
    val_seconds: float
    iterations_per_second: float
    skipped_steps: int = 0
    lr: float = 0.0
    train_cpu_seconds: float = 0.0  # CPU time of this process while it trained (all its threads: in a Ray trial,
    # Ray's own threads too); against train_seconds it shows whether the run had its cores to itself

    def metrics(self) -> dict[str, float]:
        """Flat numbers (for Ray Tune reports and the history CSV)."""
        flat = {k: v for k, v in asdict(self).items() if k != "loss_terms"}
        flat.update({f"train_{k}": v for k, v in self.loss_terms.items()})
        return flat


@dataclass
class TrainResult:
    """A finished run: where its checkpoints are and every epoch's record."""

    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_val_jf: float
    history: list[EpochRecord] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- model


def training_overrides(train: TrainSection) -> list[str]:
    """Hydra overrides turning a SAM2 model yaml into a ``SAM2Train`` that is prompted by the frame-0 mask."""
    tracking = "true" if train.multimask_output_for_tracking else "false"
    return [
        "++model._target_=masseg_search.finetune.query_features.SAM2TrainWithQueryFeatures",
        "++model.prob_to_use_pt_input_for_train=0.0",
        "++model.prob_to_use_box_input_for_train=0.0",
        "++model.prob_to_use_pt_input_for_eval=0.0",
        "++model.num_init_cond_frames_for_train=1",
        "++model.rand_init_cond_frames_for_train=false",
        "++model.num_frames_to_correct_for_train=1",
        "++model.add_all_frames_to_correct_as_cond=false",
        f"++model.multimask_output_for_tracking={tracking}",
    ]


def build_train_model(model_config: str, checkpoint: str | None, train: TrainSection) -> Any:
    """``SAM2Train`` from a model yaml (+ training overrides) and a checkpoint (None = random, seeded)."""
    import torch
    from hydra.utils import instantiate

    composed = compose_model_config(model_config, training_overrides(train))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        try:
            model = instantiate(composed.model, _recursive_=True)
        except Exception as exc:  # hydra wraps any constructor error
            raise MassegError(f"cannot build SAM2Train from this config ({type(exc).__name__}: {exc})",
                              resolve_model_config(model_config), "check the model yaml") from None
    if checkpoint is not None:
        load_weights(model, checkpoint, model_config=model_config)
    return model


def build_optimizer(model: Any, train: TrainSection) -> Any:
    """AdamW: trunk parameters get ``lr * layer_decay^(depth - layer)`` (sam2's Hiera ``get_layer_id``; position
    embeddings exempt, as in sam2's MOSE fine-tune yaml), the image encoder uses ``vision_lr``, biases / norms /
    position embeddings get no weight decay."""
    import torch

    trunk = model.image_encoder.trunk
    num_layers = trunk.get_num_layers() + 1
    vision_lr = train.vision_lr if train.vision_lr is not None else train.lr
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = vision_lr if name.startswith("image_encoder.") else train.lr
        if name.startswith("image_encoder.trunk.") and "pos_embed" not in name:  # the yaml exempts pos_embed
            layer = trunk.get_layer_id(name[len("image_encoder.trunk."):])
            lr *= train.layer_decay ** (num_layers - min(layer, num_layers))
        no_decay = param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name
        groups.setdefault((lr, 0.0 if no_decay else train.weight_decay), []).append(param)
    param_groups = [{"params": params, "lr": lr, "initial_lr": lr, "weight_decay": wd}
                    for (lr, wd), params in sorted(groups.items(), key=lambda item: item[0])]
    return torch.optim.AdamW(param_groups, lr=train.lr, weight_decay=train.weight_decay)


def lr_multiplier(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from ~0 to 1 over ``warmup_steps``, then cosine from 1 down to ``FINAL_LR_FRACTION``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: Any, multiplier: float) -> float:
    """Scale every group's initial lr; returns the top lr."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier
    return max(group["lr"] for group in optimizer.param_groups)


# ---------------------------------------------------------------------------------------------- validation


@dataclass
class ObjectScore:
    """One validation object's mean J and mean F over its video's scored frames."""

    video: str
    object_id: int
    j: float
    f: float

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


class Validator:
    """J&F of the current weights on a validation split: the project's engine (one config: the model's own
    scale/bias) and the DAVIS evaluator, the same code that scores everything else."""

    def __init__(self, config: ProjectConfig, device: str):
        train = config.train
        tracking = "true" if train.multimask_output_for_tracking else "false"
        self.model = build_model(config.model.config, None, device=device, postprocess=config.model.postprocess,
                                 overrides=[f"++model.multimask_output_for_tracking={tracking}"])
        self.device = device
        dataset = open_dataset(config.data.root, split=config.data.val_split)
        names = dataset.video_names[: train.val_videos] if train.val_videos else dataset.video_names
        self.videos = [dataset.video(name) for name in names]
        if not self.videos:
            raise MassegError(f"validation split {config.data.val_split!r} has no videos", config.data.root,
                              "point data.val_split at a list with held-out, fully annotated videos")

    def object_scores(self, state_dict: dict[str, Any]) -> list[ObjectScore]:
        """Mean J and mean F of every first-frame object of every validation video under ``state_dict``."""
        import torch

        from masseg_search.model.engine import MultiConfigEngine

        self.model.load_state_dict(state_dict, strict=True)
        self.model.eval()
        scale, bias = float(self.model.sigmoid_scale_for_mem_enc), float(self.model.sigmoid_bias_for_mem_enc)
        engine = MultiConfigEngine(self.model, self.device)
        rows: list[ObjectScore] = []
        for video in self.videos:
            _, first_mask = video.first_annotation()
            object_ids = first_frame_object_ids(first_mask)  # void (255) is never an object
            if not object_ids:
                continue
            with torch.inference_mode():
                prediction = engine.predict_video(video, {i: [(scale, bias)] for i in object_ids})[config_id(scale, bias)]
            frames = len(prediction.frame_names)
            predicted = np.stack([
                logits_to_mask(np.stack([prediction.logits[i][t].astype(np.float32) for i in object_ids]),
                               object_ids, prediction.height, prediction.width)
                for t in range(frames)
            ])
            truth = np.stack([read_mask(video.annotation_path(name)) for name in prediction.frame_names])
            scores = score_video(truth, predicted, object_ids, frame_names=prediction.frame_names, video=video.name)
            j_per_object, f_per_object = _object_means(scores, object_ids)
            rows += [ObjectScore(video.name, object_id, j, f)
                     for object_id, j, f in zip(object_ids, j_per_object, f_per_object)]
        return rows

    def __call__(self, state_dict: dict[str, Any]) -> dict[str, float]:
        """J, F and J&F over the validation objects (each object counts once, as the DAVIS protocol)."""
        rows = self.object_scores(state_dict)
        j_mean = float(np.mean([row.j for row in rows])) if rows else float("nan")
        f_mean = float(np.mean([row.f for row in rows])) if rows else float("nan")
        return {"val_jf": (j_mean + f_mean) / 2, "val_j": j_mean, "val_f": f_mean, "val_objects": len(rows)}


def _object_means(scores: Any, object_ids: list[int]) -> tuple[list[float], list[float]]:
    """Per-object mean J and mean F (over the scored frames) from the evaluator's ``VideoScores``."""
    rows = {int(oid): row for row, oid in enumerate(scores.object_ids)}
    return ([float(np.nanmean(scores.j[rows[i]])) for i in object_ids],
            [float(np.nanmean(scores.f[rows[i]])) for i in object_ids])


# ---------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary name and rename (a killed run never leaves half a checkpoint)."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_training_state(path: Path) -> dict[str, Any]:
    """A training checkpoint written by this loop (read by :func:`read_checkpoint`); clear errors for anything else."""
    path = Path(path)
    if not path.exists():
        raise MassegError("checkpoint to resume from not found", path, "drop --resume to start a new run")
    state = read_checkpoint(path)
    missing = [key for key in ("model", "optimizer", "epoch", "steps") if not isinstance(state, dict) or key not in state]
    if missing:
        raise MassegError(f"not a training checkpoint (missing {missing})", path,
                          "resume only from checkpoint.pt written by `masseg-search train`; "
                          "use model.checkpoint to start from other weights")
    return state


def _append_history(path: Path, record: EpochRecord) -> None:
    """One row per epoch; a run resumed from an older version's history keeps that file's columns."""
    metrics = record.metrics()
    write_header = not path.is_file() or path.stat().st_size == 0
    fieldnames = list(metrics)
    if not write_header:
        with path.open(newline="") as handle:
            fieldnames = next(csv.reader(handle), fieldnames)
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, extrasaction="ignore")
        if write_header:
            writer.writeheader()
        writer.writerow(metrics)


# ------------------------------------------------------------------------------------------------- the run


def _train_epoch(train_model: Any, model: Any, batches: Any, optimizer: Any, loss_fn: Any, train: TrainSection,
                 steps: int, total_steps: int, device: str, use_amp: bool) -> tuple[dict[str, float], int, float, int]:
    """One epoch of steps; returns (mean of each loss term, skipped steps, last lr, steps so far).

    Every rank always back-propagates (DDP needs it); a step whose clipped gradient norm is not finite (the same on
    every rank: DDP averages gradients first) is skipped rather than ending the run, as a sweep trial should still
    be scored on what it has.
    """
    import torch

    from masseg_search.finetune.loss import CORE_LOSS_KEY

    train_model.train()
    sums: dict[str, float] = {}
    skipped, lr, done = 0, 0.0, 0
    for batch in batches:
        lr = set_lr(optimizer, lr_multiplier(steps, total_steps, train.warmup_iterations))
        batch = batch.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            terms = loss_fn(train_model(batch), batch.masks, object_clips=batch.obj_to_frame_idx[0, :, 1])
        optimizer.zero_grad(set_to_none=True)
        terms[CORE_LOSS_KEY].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        steps += 1
        if not torch.isfinite(grad_norm) or not torch.isfinite(terms[CORE_LOSS_KEY].detach()):
            skipped += 1
            continue
        optimizer.step()
        done += 1
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{sums[CORE_LOSS_KEY] / done:.3f}")
    return {key: value / max(1, done) for key, value in sums.items()}, skipped, lr, steps


def seed_everything(seed: int) -> None:
    """Seed python ``random`` (sam2's sampler and transforms), numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_run(
    config: ProjectConfig,
    out_dir: str | Path,
    resume_from: str | Path | None = None,
    on_epoch: Callable[[EpochRecord, Path], None] | None = None,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[Any], Any] | None = None,
    device: str | None = None,
    write_best: bool = True,
) -> TrainResult:
    """Fine-tune ``config.model`` per ``config.train``; write checkpoints under ``out_dir/checkpoints``.

    ``write_best`` keeps a copy of the best epoch as ``best.pt`` (a sweep leaves that to Tune's checkpoint
    ranking). ``on_epoch(record, checkpoint_path)`` runs after each epoch's checkpoint is written (Ray Tune reports from it).
    With ``world_size`` > 1 (Ray Train workers), ``wrap_model`` makes the DDP module, each rank draws its own clips,
    and rank 0 alone validates and writes checkpoints (the others get NaN scores and no checkpoint path).
    """
    import torch
    from tqdm import tqdm

    from masseg_search.finetune.augment import build_train_transforms
    from masseg_search.finetune.clips import build_clip_dataset, check_clip_split, clip_loader
    from masseg_search.finetune.loss import CORE_LOSS_KEY, WeightedVOSLoss, memory_cross_attention

    train = config.train
    out_dir = Path(out_dir)
    checkpoint_dir = out_dir / "checkpoints"
    device = device or resolve_device(config.model.device)
    is_main = rank == 0
    seed_everything(train.seed + 1000 * rank)

    model = build_train_model(config.model.config, config.model.checkpoint, train).to(device)
    split = check_clip_split(config.data.root, config.data.train_split, train.num_frames)
    transforms = build_train_transforms(train.augment, int(model.image_size))
    dataset = build_clip_dataset(split, train.num_frames, train.max_objects, transforms)
    optimizer = build_optimizer(model, train)
    loss_fn = WeightedVOSLoss(train.loss, memory_cross_attention(model), pred_obj_scores=bool(model.pred_obj_scores))
    validator = Validator(config, device) if is_main else None

    start_epoch, steps, best_jf, history = 0, 0, float("-inf"), []
    if resume_from is not None:
        state = load_training_state(Path(resume_from))
        apply_state_dict(model, state["model"], resume_from, config.model.config)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError) as exc:  # parameter groups of another model or optimizer
            raise MassegError(f"the checkpoint's optimizer state does not fit this run ({exc})", resume_from,
                              "resume with the config the run was started with, or drop --resume") from None
        start_epoch, steps = int(state["epoch"]), int(state["steps"])
        best_jf = float(state.get("best_val_jf", float("-inf")))
        log.info("resuming from %s at epoch %d (step %d)", resume_from, start_epoch, steps)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / "config.yaml", dump_config(config).encode())

    train_model = wrap_model(model) if wrap_model is not None else model
    total_steps = train.epochs * train.iterations_per_epoch
    use_amp = train.amp and str(device).startswith("cuda")
    last_path = checkpoint_dir / LAST_CHECKPOINT
    best_path: Path | None = checkpoint_dir / BEST_CHECKPOINT if (checkpoint_dir / BEST_CHECKPOINT).is_file() else None

    for epoch in range(start_epoch, train.epochs):
        epoch_seed = train.seed * 7919 + epoch * 104729 + rank
        random.seed(epoch_seed)  # per-epoch streams (clips, augmentation, dropout): a resumed run repeats a straight one
        torch.manual_seed(epoch_seed)
        loader = clip_loader(dataset, train.iterations_per_epoch, train.batch_size, seed=epoch_seed,
                             num_workers=train.num_workers)
        bar = tqdm(loader, total=train.iterations_per_epoch, desc=f"epoch {epoch + 1}/{train.epochs}",
                   disable=not (progress and is_main), leave=False)
        started, cpu_started = time.perf_counter(), time.process_time()
        means, skipped, lr, steps = _train_epoch(train_model, model, bar, optimizer, loss_fn, train, steps, total_steps,
                                                 device, use_amp)
        train_seconds, train_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

        started = time.perf_counter()
        scores = validator(model.state_dict()) if validator is not None else {
            "val_jf": float("nan"), "val_j": float("nan"), "val_f": float("nan"), "val_objects": 0}
        record = EpochRecord(
            epoch=epoch + 1, steps=steps, loss=means.get(CORE_LOSS_KEY, float("nan")),
            loss_terms={k: v for k, v in means.items() if k != CORE_LOSS_KEY},
            val_jf=scores["val_jf"], val_j=scores["val_j"], val_f=scores["val_f"], val_objects=scores["val_objects"],
            train_seconds=train_seconds, val_seconds=time.perf_counter() - started,
            iterations_per_second=train.iterations_per_epoch / max(train_seconds, 1e-9), skipped_steps=skipped, lr=lr,
            train_cpu_seconds=train_cpu_seconds,
        )
        history.append(record)
        if is_main:
            improved = math.isfinite(record.val_jf) and record.val_jf > best_jf
            best_jf = max(best_jf, record.val_jf) if math.isfinite(record.val_jf) else best_jf
            payload = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "steps": steps,
                "loss": {}, "time_elapsed": train_seconds, "best_meter_values": {"val_jf": best_jf},
                "best_val_jf": best_jf, "val_jf": record.val_jf, "model_config": str(config.model.config),
            }
            save_checkpoint(last_path, payload)
            if improved and write_best:
                save_checkpoint(checkpoint_dir / BEST_CHECKPOINT, payload)
                best_path = checkpoint_dir / BEST_CHECKPOINT
            _append_history(out_dir / HISTORY_FILE, record)
            log.info("epoch %d: loss %.4f  val J&F %.4f  (%.2f it/s)", record.epoch, record.loss, record.val_jf,
                     record.iterations_per_second)
        if on_epoch is not None:
            on_epoch(record, last_path if is_main else None)
    return TrainResult(out_dir, last_path, best_path, best_jf, history)
