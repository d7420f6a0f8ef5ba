"""Cutie (rf-cutie on PyPI, import name ``cutie``) as a second model family: a video's objects tracked from the first
given mask, its softmax probabilities stored as the store's low-res pseudo-logits.

Built offline: Cutie's own eval config (Hydra, ``cutie.config``: ``eval_config`` with ``model=small|base``, the
``generic`` dataset settings: long-term memory, a memory frame every 5) and the weights from a path
(``cutie.weights`` in the project config, e.g. ``cutie-small-mega.pth`` from Cutie's releases). Two things in
rf-cutie would download and are avoided: ``CUTIE(cfg)`` builds its ResNet encoders with ``pretrained=True``
(ImageNet weights from the network), so they are built with ``pretrained=False`` while the model is made (the
checkpoint replaces them anyway), and ``cutie.utils.get_default_model`` / ``download_models_if_needed`` are never
called. Without weights the model is random: its masks are useless (tests only).

Per frame, ``InferenceCore.step`` gives (objects + 1, H, W) softmax probabilities (channel 0 the background) at the
frame's size (Cutie works at ``max_internal_size`` on its shortest side and resizes back); they become pseudo-logits
by :func:`masseg_search.store.pseudo_logits.probability_pseudo_logits` (the merge then reproduces Cutie's argmax).
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from masseg_search.data.layout import VOID_ID, Video
from masseg_search.errors import MassegError
from masseg_search.store.predictions import VideoPrediction
from masseg_search.store.pseudo_logits import PSEUDO_LOGIT_EPS, probability_pseudo_logits

logger = logging.getLogger(__name__)

CUTIE_FAMILY = "cutie"
CUTIE_MODELS = ("small", "base")


@contextmanager
def _resnets_without_download() -> Iterator[None]:
    """While Cutie is built, its ResNet-18/50 encoders are made with ``pretrained=False`` (no ImageNet download)."""
    import cutie.model.utils.resnet as cutie_resnet

    resnet18, resnet50 = cutie_resnet.resnet18, cutie_resnet.resnet50
    cutie_resnet.resnet18 = lambda pretrained=True, **kwargs: resnet18(pretrained=False, **kwargs)
    cutie_resnet.resnet50 = lambda pretrained=True, **kwargs: resnet50(pretrained=False, **kwargs)
    try:
        yield
    finally:
        cutie_resnet.resnet18, cutie_resnet.resnet50 = resnet18, resnet50


def cutie_config(model: str = "small", max_internal_size: int = 480) -> Any:
    """Cutie's eval config for ``model`` (small | base) with the generic dataset settings, as its tools make it."""
    try:
        from hydra import compose, initialize_config_module
        from omegaconf import open_dict

        from cutie.inference.utils.args_utils import get_dataset_cfg
    except ImportError as exc:
        raise MassegError(f"Cutie is not installed ({exc})", fix="pip install rf-cutie (masseg-search's dependencies include it)") from None
    if model not in CUTIE_MODELS:
        raise MassegError(f"unknown Cutie model {model!r}", fix=f"use one of {', '.join(CUTIE_MODELS)}")
    from hydra.core.global_hydra import GlobalHydra

    # sam2 initialises Hydra for its own configs when imported: set that aside while Cutie's config is composed
    saved = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(version_base="1.3.2", config_module="cutie.config"):
            cfg = compose(config_name="eval_config", overrides=[f"model={model}"])
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)
    with open_dict(cfg):
        cfg["weights"] = None
        cfg["dataset"] = "generic"
        cfg["max_internal_size"] = int(max_internal_size)
    get_dataset_cfg(cfg)  # lifts mem_every, use_long_term, ... to the top level, where InferenceCore reads them
    return cfg


def build_cutie(model: str = "small", weights: str | Path | None = None, device: str = "cpu",
                max_internal_size: int = 480) -> tuple[Any, Any]:
    """(network in eval mode on ``device``, config); ``weights``: a Cutie checkpoint (state dict) or None = random."""
    from cutie.model.cutie import CUTIE

    cfg = cutie_config(model, max_internal_size)
    with _resnets_without_download():
        network = CUTIE(cfg)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise MassegError("Cutie weights not found", path, "set cutie.weights in the config to a Cutie checkpoint "
                              f"(e.g. cutie-{model}-mega.pth from Cutie's releases)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, ValueError, EOFError) as exc:
            raise MassegError(f"cannot read Cutie weights ({exc})", path, "pass a Cutie .pth checkpoint") from None
        if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
            raise MassegError("not a Cutie state dict (a mapping of parameter names to tensors)", path,
                              "pass Cutie's .pth checkpoint as released (e.g. cutie-small-mega.pth)")
        expected = set(network.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:  # Cutie's load_weights loads with strict=False: a wrong file would load nothing
            raise MassegError(f"the weights do not fit Cutie-{model}: {len(missing)} parameters missing (e.g. "
                              f"{missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})", path,
                              "set cutie.model to the size the checkpoint was trained as (small or base)")
        try:
            network.load_weights(state)
        except RuntimeError as exc:
            raise MassegError(f"the weights do not fit Cutie-{model} ({str(exc).splitlines()[0]})", path,
                              "set cutie.model to the size the checkpoint was trained as (small or base)") from None
    else:
        logger.warning("Cutie runs with random weights: its masks are useless (tests only); set cutie.weights")
    return network.to(device).eval(), cfg


def working_tokens(size: tuple[int, int], max_internal_size: int) -> int:
    """Memory tokens of one frame as Cutie sees it: shortest side at most ``max_internal_size`` (when > 0), padded
    to a multiple of 16, one token per 16x16 cell."""
    height, width = size
    if max_internal_size > 0 and min(height, width) > max_internal_size:
        shortest = min(height, width)
        height, width = int(height / shortest * max_internal_size), int(width / shortest * max_internal_size)
    return -(-height // 16) * -(-width // 16)


class CutieEngine:
    """One Cutie network; :meth:`predict_video` tracks a video's objects and returns its pseudo-logits."""

    def __init__(self, network: Any, cfg: Any, device: str = "cpu"):
        self.network, self.cfg, self.device = network, cfg, torch.device(device)

    @torch.inference_mode()
    def predict_video(self, video: Video, low_res: tuple[int, int], scale: float = 1.0) -> VideoPrediction:
        """Every object of the first given mask, from its frame on; frames before it hold no object."""
        with warnings.catch_warnings():  # rf-cutie's torch.cuda.amp.autocast calls warn on every frame
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.cuda\.amp\.autocast")
            return self._predict_video(video, low_res, scale)

    def _predict_video(self, video: Video, low_res: tuple[int, int], scale: float) -> VideoPrediction:
        from cutie.inference.inference_core import InferenceCore

        start, first_mask = video.first_annotation()
        object_ids = sorted(int(i) for i in np.unique(first_mask) if 0 < i < VOID_ID)
        if not object_ids:
            raise MassegError(f"video {video.name!r}: the first annotated frame's mask is empty", video.annotation_dir,
                              "give at least one object (pixel value 1..254)")
        frames = len(video.frame_paths)
        empty = np.float16(np.log(PSEUDO_LOGIT_EPS) * scale)  # no object: the rule's floor
        logits = {i: np.full((frames, *low_res), empty, np.float16) for i in object_ids}
        processor = InferenceCore(self.network, cfg=self.cfg)
        # Cutie reads memory through a top-k (30) over the memory's tokens: a video smaller than ~90 px has fewer
        # tokens (one per 16x16 cell) in its first memory frame, so k is capped there
        processor.memory.top_k = min(int(self.cfg.top_k), working_tokens(first_mask.shape, int(self.cfg.max_internal_size)))
        given = torch.from_numpy(np.where(first_mask == VOID_ID, 0, first_mask).astype(np.int64)).to(self.device)
        for t, rgb in enumerate(video.read_frames()):
            if t < start:
                continue
            if rgb.shape[:2] != first_mask.shape:
                raise MassegError(f"frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the mask's "
                                  f"{first_mask.shape[1]}x{first_mask.shape[0]}", video.frame_paths[t],
                                  "resize every frame of a video to one size")
            image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div_(255.0).to(self.device)
            if t == start:
                probabilities = processor.step(image, given, objects=object_ids)
            else:
                probabilities = processor.step(image, end=t == frames - 1)
            probabilities = probabilities.float().cpu().numpy()
            channels = [processor.object_manager.find_tmp_by_id(i) for i in object_ids]
            planes = probability_pseudo_logits(probabilities[channels], *low_res, background=probabilities[0], scale=scale)
            for index, object_id in enumerate(object_ids):
                logits[object_id][t] = planes[index]
        height, width = first_mask.shape
        return VideoPrediction(
            video=video.name, frame_names=video.frame_names, height=height, width=width, object_ids=object_ids,
            first_frames={i: start for i in object_ids}, logits=logits,
            object_scores={i: logits[i].reshape(frames, -1).max(axis=1).astype(np.float32) for i in object_ids},
            family=CUTIE_FAMILY)
