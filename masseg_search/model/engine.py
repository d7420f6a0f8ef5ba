"""The multi-configuration video engine: every object of a video under K (scale, bias) configurations in one pass.

SAM2's ``sigmoid_scale_for_mem_enc`` / ``sigmoid_bias_for_mem_enc`` act only where a mask is encoded into memory
(``SAM2Base._encode_new_memory``), and the video predictor tracks each object on its own (batch 1). So one video
pass can carry every (object, configuration) pair as a batch row: the image encoder runs once per frame, the rows
share it, and SAM2's own ``track_step`` / ``_encode_new_memory`` run on all rows at once with a per-row scale and
bias (:class:`PerRowValue`). Nothing of SAM2's tracking is re-implemented here; the engine only feeds it.

Parity: for each configuration alone the output equals ``SAM2VideoPredictor`` built as ``tools/vos_inference.py``
builds it (``add_new_mask`` for every object of the first annotated frame, then ``propagate_in_video``); see
tests/model/test_parity.py. Differences from the plain predictor, none of which change a result:

* memory stays flat: only the frames memory attention can still read are kept (the conditioning frame, the last
  ``num_maskmem - 1`` frames (times the eval stride) with their memory features, the object-pointer window with
  only their pointers); SAM2's predictor keeps every frame's memory (sam2 issues #264, #571);
* ``non_overlap_masks_for_mem_enc`` is switched off while rows are batched: in the plain predictor each object is a
  batch of one, where SAM2 skips it anyway;
* the missing ``sam2._C`` extension (hole filling with ``--postprocess``) is reported once, not per frame;
* in inference, a few SAM2 modules run as the subclasses of :mod:`masseg_search.model.fast_modules` (same parameters,
  same values up to float rounding, less per-row work: work shared by all rows done once, cheaper CPU kernels).
"""
from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from masseg_search.data.layout import VOID_ID, Video, image_size
from masseg_search.errors import MassegError
from masseg_search.model.fast_modules import speed_up
from masseg_search.model.memory import RowMemory, enable_key_masks, per_row_memory, resolve_knobs
from masseg_search.store.knobs import Knobs, as_knobs
from masseg_search.store.predictions import VideoPrediction, config_id

logger = logging.getLogger(__name__)

IMAGE_MEAN = (0.485, 0.456, 0.406)  # sam2.utils.misc.load_video_frames defaults
IMAGE_STD = (0.229, 0.224, 0.225)
_hole_filling_warned = False


class PerRowValue:
    """A per-row stand-in for SAM2's scalar ``sigmoid_scale_for_mem_enc`` / ``sigmoid_bias_for_mem_enc``.

    ``_encode_new_memory`` does ``if scale != 1.0: mask = mask * scale``; with this object the test is true when any
    row differs from the neutral value, and ``mask * value`` / ``mask + value`` broadcast one value per batch row.
    """

    def __init__(self, values: torch.Tensor):
        self.values = values.reshape(-1, 1, 1, 1)

    def __ne__(self, neutral: object) -> bool:
        return bool((self.values != neutral).any())

    def __eq__(self, neutral: object) -> bool:
        return not self.__ne__(neutral)

    def __rmul__(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * self.values.to(tensor.dtype)

    def __radd__(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor + self.values.to(tensor.dtype)

    __hash__ = None  # type: ignore[assignment]


class FeatureCache:
    """Image-encoder outputs per (model, frame file), least recently used dropped beyond ``max_bytes``.

    Lets tune-mss run many passes over the same videos and pay the image encoder once per frame.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, tuple[list[torch.Tensor], int]] = OrderedDict()

    def get(self, key: tuple) -> list[torch.Tensor] | None:
        """The cached feature maps for ``key`` (and mark them recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: tuple, features: list[torch.Tensor]) -> None:
        """Keep ``features`` if they fit the budget, dropping the least recently used entries."""
        size = sum(t.numel() * t.element_size() for t in features)
        if size > self.max_bytes or key in self._entries:
            return
        while self.bytes + size > self.max_bytes and self._entries:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped
        self._entries[key] = (features, size)
        self.bytes += size

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class CheckedVideo:
    """A video that passed the input checks: its first annotated frame, that frame's mask and objects."""

    video: Video
    start_frame: int
    first_mask: np.ndarray
    object_ids: list[int]
    height: int
    width: int


def check_video(video: Video) -> CheckedVideo:
    """Validate a video for tracking; every problem is a MassegError that names the video and the fix."""
    name = video.name
    if not video.frame_paths:
        raise MassegError(f"video {name!r} has no frames", video.image_dir, "put the frames as <frame>.jpg in this folder")
    names = video.frame_names
    if all(n.isdigit() for n in names) and len(names) > 1:
        numbers = [int(n) for n in names]
        steps = {b - a for a, b in zip(numbers, numbers[1:])}
        if len(steps) > 1:
            step = min(steps)
            gaps = [f"{a + step:0{len(names[0])}d}" for a, b in zip(numbers, numbers[1:]) if b - a != step]
            raise MassegError(f"video {name!r} is missing frames (gap after frame numbering step {step}: {gaps[:5]})",
                              video.image_dir, "restore the missing frames (or use --skip-bad to leave this video out)")
    frame_set = set(names)
    orphan = [p.stem for p in video.annotation_paths() if p.stem not in frame_set]
    if orphan:
        raise MassegError(f"video {name!r} has annotations for frames that are missing: {orphan[:5]}", video.image_dir,
                          "restore the missing frames (or use --skip-bad to leave this video out)")
    start_frame, first_mask = video.first_annotation()
    object_ids = sorted(int(i) for i in np.unique(first_mask) if 0 < i < VOID_ID)
    if not object_ids:
        raise MassegError(f"video {name!r}: the first annotated frame's mask is empty (no object ids)",
                          video.annotation_path(names[start_frame]), "give at least one object (pixel value 1..254)")
    height, width = image_size(video.frame_paths[0])
    for path in video.frame_paths[1:]:
        if image_size(path) != (height, width):
            raise MassegError(f"video {name!r}: frame size {image_size(path)} differs from the first frame's {(height, width)}",
                              path, "resize every frame of a video to one size (or use --skip-bad)")
    if first_mask.shape != (height, width):
        raise MassegError(f"video {name!r}: mask size {first_mask.shape} differs from the frame size {(height, width)}",
                          video.annotation_path(names[start_frame]), "give the mask at the frame's resolution")
    return CheckedVideo(video, start_frame, first_mask, object_ids, height, width)


@dataclass
class _Chunk:
    """Rows tracked together, and their memory (what memory attention can still read)."""

    rows: list[int]
    scale: PerRowValue
    bias: PerRowValue
    row_memory: RowMemory
    memory: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}})
    constants: dict[str, Any] = field(default_factory=dict)


class MultiConfigEngine:
    """Propagate every object of a video from its first-frame mask under several (scale, bias) configurations.

    ``model`` is a ``SAM2VideoPredictor`` from :func:`masseg_search.model.build.build_model`. ``max_rows`` caps the
    rows (objects x configurations) batched at once (None = all). ``logits_dtype`` is the dtype of the returned
    low-res logits (float16 as stored; float32 for exact comparisons). ``fast_modules`` swaps the subclasses of
    :mod:`masseg_search.model.fast_modules` into ``model`` (in place; they defer to SAM2 while gradients are on).
    ``flip``: track the horizontally mirrored video (frames and first-frame masks) and mirror the logits back, a
    test-time-augmentation view for the ensemble. Exact as a view: SAM2's square resize (bilinear, antialiased for
    masks) commutes with a horizontal mirror, so the returned logits are in the video's own orientation.
    ``chunk_by_config``: track each configuration's rows as their own batch (split further by ``max_rows``). Rows
    are independent in exact arithmetic, but the convolution and matrix kernels pick their paths by batch size, so
    the same row in a batch of another size differs by float rounding (about 1e-7 in the logits); chunks whose
    rows do not change give bit-identical results whichever other configurations run (tune-mss pruning).
    """

    def __init__(self, model: Any, device: str | torch.device | None = None, max_rows: int | None = None,
                 logits_dtype: Any = np.float16, fast_modules: bool = True, flip: bool = False,
                 chunk_by_config: bool = False):
        from sam2.sam2_video_predictor import SAM2VideoPredictor

        if not isinstance(model, SAM2VideoPredictor):
            raise MassegError(f"the engine needs a SAM2VideoPredictor, got {type(model).__name__}",
                              fix="build the model with masseg_search.model.build.build_model")
        self.device = torch.device(device) if device is not None else model.device
        self.model = model.to(self.device).eval()
        if fast_modules:
            speed_up(self.model)
        enable_key_masks(self.model)
        self.max_rows = max_rows
        self.logits_dtype = logits_dtype
        self.flip = bool(flip)
        self.chunk_by_config = bool(chunk_by_config)
        self.image_size = int(model.image_size)
        self._mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(IMAGE_STD, dtype=torch.float32)[:, None, None]
        self._vision_pos_enc: list[torch.Tensor] | None = None
        self.peak_stored_frames = 0  # most frames held in memory by any row chunk (flat in video length)
        self.peak_stored_bytes = 0  # most bytes of memory features and pointers held at once
        self.last_rows = 0  # batch rows (object x distinct configuration) of the last video
        self.row_frames = 0  # rows x frames tracked since the engine was made (the per-row work done)
        # set to a list to record, per row of the last video, {frame: memory frames read} (tests, inspection)
        self.memory_reads: list[dict[int, list[int]]] | None = None

    # ----------------------------------------------------------------------------------------- image features
    def _load_frame(self, path: Any) -> torch.Tensor:
        """One frame as SAM2's ``load_video_frames`` prepares it: resized square, scaled to 0-1, normalised."""
        from sam2.utils.misc import _load_img_as_tensor

        try:
            image, _, _ = _load_img_as_tensor(str(path), self.image_size)
        except (OSError, ValueError, RuntimeError) as exc:
            raise MassegError(f"cannot decode frame ({exc})", path, "the file is corrupt or truncated: re-extract it") from None
        image = image.float()
        image -= self._mean
        image /= self._std
        if self.flip:
            image = image.flip(-1)
        return image.to(self.device).unsqueeze(0)

    def _backbone(self, video: Video, frame_idx: int, feature_cache: FeatureCache | None) -> dict[str, list[torch.Tensor]]:
        """The image encoder's output for one frame (batch 1), from the cache when it holds it."""
        key = (id(self.model), self.image_size, self.flip, str(video.frame_paths[frame_idx]))
        fpn = feature_cache.get(key) if feature_cache is not None else None
        if fpn is None or self._vision_pos_enc is None:
            backbone_out = self.model.forward_image(self._load_frame(video.frame_paths[frame_idx]))
            fpn = list(backbone_out["backbone_fpn"])
            self._vision_pos_enc = list(backbone_out["vision_pos_enc"])
            if feature_cache is not None:
                feature_cache.put(key, fpn)
        return {"backbone_fpn": fpn, "vision_pos_enc": self._vision_pos_enc}

    def _expanded_features(self, backbone_out: dict[str, list[torch.Tensor]], rows: int) -> tuple:
        """SAM2's ``_get_image_feature``: the batch-1 features expanded (not copied) to ``rows`` rows."""
        expanded = {"backbone_fpn": [f.expand(rows, -1, -1, -1) for f in backbone_out["backbone_fpn"]],
                    "vision_pos_enc": [p.expand(rows, -1, -1, -1) for p in backbone_out["vision_pos_enc"]]}
        _, vision_feats, vision_pos_embeds, feat_sizes = self.model._prepare_backbone_features(expanded)
        return vision_feats, vision_pos_embeds, feat_sizes

    # ----------------------------------------------------------------------------------------------- tracking
    def _mask_input(self, mask: np.ndarray) -> torch.Tensor:
        """SAM2's ``add_new_mask`` preprocessing: the binary mask at image_size (antialiased resize, >= 0.5)."""
        if self.flip:
            mask = mask[:, ::-1].copy()
        mask_inputs = torch.tensor(mask, dtype=torch.bool)[None, None].float().to(self.device)
        if mask.shape != (self.image_size, self.image_size):
            mask_inputs = F.interpolate(mask_inputs, size=(self.image_size, self.image_size), align_corners=False,
                                        mode="bilinear", antialias=True)
            mask_inputs = (mask_inputs >= 0.5).float()
        return mask_inputs

    def _fill_holes(self, pred_masks: torch.Tensor) -> torch.Tensor:
        """SAM2's ``fill_holes_in_mask_scores`` when postprocessing is on; the missing-extension warning once."""
        global _hole_filling_warned
        if self.model.fill_hole_area <= 0:
            return pred_masks
        from sam2.utils.misc import fill_holes_in_mask_scores

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            filled = fill_holes_in_mask_scores(pred_masks, self.model.fill_hole_area)
        if caught and not _hole_filling_warned:
            _hole_filling_warned = True
            logger.warning("sam2's hole filling is unavailable here (the sam2._C CUDA extension is missing or the "
                           "tensors are on CPU), so --postprocess skips it, as plain SAM2 does; shown once.")
        return filled

    def _store(self, chunk: _Chunk, frame_idx: int, out: dict[str, Any], is_cond: bool) -> None:
        """Keep what later frames read: memory features (bf16, as SAM2 stores them), pointer, object score."""
        compact = {
            "maskmem_features": None if out["maskmem_features"] is None else out["maskmem_features"].to(torch.bfloat16),
            "maskmem_pos_enc": self.model._get_maskmem_pos_enc({"constants": chunk.constants}, out),
            "obj_ptr": out["obj_ptr"],
            "object_score_logits": out["object_score_logits"],
        }
        key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        chunk.memory[key][frame_idx] = compact

    def _prune(self, chunk: _Chunk, next_frame: int, num_frames: int) -> None:
        """Drop what no row's memory selection can read when tracking ``next_frame`` and later frames
        (:meth:`RowMemory.needed`: each row's memory window or admitted frames, present frames, pointer window)."""
        features, oldest_pointer = chunk.row_memory.needed(next_frame, num_frames)
        stored = chunk.memory["non_cond_frame_outputs"]
        for t in list(stored):
            if t in features:
                continue
            if t < oldest_pointer:
                del stored[t]
            else:
                stored[t]["maskmem_features"] = None  # only the object pointer is still read
        self.peak_stored_frames = max(self.peak_stored_frames, len(stored) + len(chunk.memory["cond_frame_outputs"]))
        held = [out for outputs in chunk.memory.values() for out in outputs.values()]
        self.peak_stored_bytes = max(self.peak_stored_bytes, sum(
            t.numel() * t.element_size() for out in held for t in (out["maskmem_features"], out["obj_ptr"]) if t is not None))

    @torch.inference_mode()
    def predict_video(self, video: Video, configs_per_object: dict[int, list[Knobs | tuple[float, float]]],
                      feature_cache: FeatureCache | None = None, progress: bool = False) -> dict[str, VideoPrediction]:
        """Track every object of ``video`` from its first annotated frame under its configurations.

        ``configs_per_object`` maps each object id of the first annotated mask to its configurations: Knobs (scale,
        bias and memory knobs, see :mod:`masseg_search.model.memory`) or (scale, bias) pairs; they may differ per
        object. Returns config_id -> VideoPrediction holding the objects run under that configuration; frames
        before the first annotated frame hold SAM2's no-object score (-1024).
        """
        checked = check_video(video)
        rows = self._rows(checked, configs_per_object)
        num_frames = len(video.frame_paths)
        low_res = self.image_size // 4
        logits = [np.full((num_frames, low_res, low_res), -1024.0, dtype=self.logits_dtype) for _ in rows]
        scores = [np.full(num_frames, -1024.0, dtype=np.float32) for _ in rows]
        ious = [np.zeros(num_frames, dtype=np.float32) for _ in rows]  # 0 before the first annotated frame
        chunks = []
        for group in self._row_groups(rows):
            chunk_size = self.max_rows or len(group)
            for begin in range(0, len(group), chunk_size):
                members = group[begin:begin + chunk_size]
                chunks.append(_Chunk(members,
                                     PerRowValue(torch.tensor([rows[r][1].scale for r in members], dtype=torch.float32, device=self.device)),
                                     PerRowValue(torch.tensor([rows[r][1].bias for r in members], dtype=torch.float32, device=self.device)),
                                     RowMemory([resolve_knobs(self.model, rows[r][1]) for r in members])))
        mask_inputs = {obj: self._mask_input(checked.first_mask == obj) for obj in checked.object_ids}
        self.peak_stored_frames = self.peak_stored_bytes = 0
        if self.memory_reads is not None:
            self.memory_reads = [{} for _ in rows]
        frames = range(checked.start_frame, num_frames)
        self.last_rows = len(rows)
        self.row_frames += len(rows) * len(frames)
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, desc=f"{video.name} ({len(rows)} rows)", leave=False)
        model = self.model
        saved = (model.sigmoid_scale_for_mem_enc, model.sigmoid_bias_for_mem_enc, model.non_overlap_masks_for_mem_enc)
        # tools/vos_inference.py runs under bfloat16 autocast on CUDA (a no-op on CPU); so does the engine
        autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        try:
            model.non_overlap_masks_for_mem_enc = False
            with autocast:
                for frame_idx in frames:
                    backbone_out = self._backbone(video, frame_idx, feature_cache)
                    for chunk in chunks:
                        pred_masks, object_scores, predicted_ious = self._track_frame(
                            chunk, rows, checked, mask_inputs, frame_idx, backbone_out, num_frames)
                        pred_np = pred_masks[:, 0].float().cpu().numpy()
                        if self.flip:  # back to the video's own orientation
                            pred_np = pred_np[:, :, ::-1]
                        score_np = object_scores[:, 0].float().cpu().numpy()
                        iou_np = predicted_ious.float().cpu().numpy()
                        for position, row in enumerate(chunk.rows):
                            logits[row][frame_idx] = pred_np[position]
                            scores[row][frame_idx] = score_np[position]
                            ious[row][frame_idx] = iou_np[position]
        finally:
            model.sigmoid_scale_for_mem_enc, model.sigmoid_bias_for_mem_enc, model.non_overlap_masks_for_mem_enc = saved
        return self._collect(checked, rows, logits, scores, ious)

    def _track_frame(self, chunk: _Chunk, rows: list[tuple[int, Knobs]], checked: CheckedVideo,
                     mask_inputs: dict[int, torch.Tensor], frame_idx: int, backbone_out: dict, num_frames: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One frame for one row chunk: SAM2's ``track_step`` on every row with its own scale and bias; returns
        the low-res mask logits (B, 1, h, w) and object scores (B, 1) that the plain predictor would output, and
        the IoU head's estimate (B,) of the mask each row kept (the best of M when multimask; 1 on the given frame,
        whose mask is the given one)."""
        model = self.model
        model.sigmoid_scale_for_mem_enc, model.sigmoid_bias_for_mem_enc = chunk.scale, chunk.bias
        feats, pos, sizes = self._expanded_features(backbone_out, len(chunk.rows))
        if frame_idx == checked.start_frame:
            pred_masks, object_scores = self._condition(chunk, rows, mask_inputs, frame_idx, feats, pos, sizes, num_frames)
            predicted_ious = torch.ones(len(chunk.rows))
        else:
            captured: dict[str, torch.Tensor] = {}
            with per_row_memory(model, chunk.row_memory, captured):  # each row's memory knobs (model.memory)
                out = model.track_step(frame_idx=frame_idx, is_init_cond_frame=False, current_vision_feats=feats,
                                       current_vision_pos_embeds=pos, feat_sizes=sizes, point_inputs=None,
                                       mask_inputs=None, output_dict=chunk.memory, num_frames=num_frames,
                                       track_in_reverse=False, run_mem_encoder=True)
            self._store(chunk, frame_idx, out, is_cond=False)
            chunk.row_memory.record(frame_idx, out["object_score_logits"], captured.get("ious"))
            if self.memory_reads is not None:
                for position, row in enumerate(chunk.rows):
                    self.memory_reads[row][frame_idx] = list(chunk.row_memory.last_selection[position])
            pred_masks, object_scores = self._fill_holes(out["pred_masks"]), out["object_score_logits"]
            # SAM2's track_step drops the IoU head's output; the per-row decoder (model.memory) keeps it
            predicted_ious = captured["ious"].reshape(len(chunk.rows), -1).amax(dim=1)
        self._prune(chunk, frame_idx + 1, num_frames)
        return pred_masks, object_scores, predicted_ious

    def _condition(self, chunk: _Chunk, rows: list[tuple[int, Knobs]], mask_inputs: dict[int, torch.Tensor],
                   frame_idx: int, feats: list, pos: list, sizes: list, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first annotated frame: SAM2's ``add_new_mask`` (no memory encoder), then the memory encoding that
        ``propagate_in_video_preflight`` runs on the upsampled low-res mask."""
        model = self.model
        masks = torch.cat([mask_inputs[rows[r][0]] for r in chunk.rows], dim=0)
        out = model.track_step(frame_idx=frame_idx, is_init_cond_frame=True, current_vision_feats=feats,
                               current_vision_pos_embeds=pos, feat_sizes=sizes, point_inputs=None, mask_inputs=masks,
                               output_dict=chunk.memory, num_frames=num_frames, track_in_reverse=False, run_mem_encoder=False)
        pred_masks = self._fill_holes(out["pred_masks"])
        high_res = F.interpolate(pred_masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        out["maskmem_features"], out["maskmem_pos_enc"] = model._encode_new_memory(
            current_vision_feats=feats, feat_sizes=sizes, pred_masks_high_res=high_res,
            object_score_logits=out["object_score_logits"], is_mask_from_pts=True)
        self._store(chunk, frame_idx, out, is_cond=True)
        return pred_masks, out["object_score_logits"]

    def _row_groups(self, rows: list[tuple[int, Knobs]]) -> list[list[int]]:
        """Row indices tracked together: all rows, or (``chunk_by_config``) the rows of each configuration."""
        if not self.chunk_by_config:
            return [list(range(len(rows)))]
        groups: dict[str, list[int]] = {}
        for index, (_, knobs) in enumerate(rows):
            groups.setdefault(config_id(knobs), []).append(index)
        return list(groups.values())

    @staticmethod
    def _rows(checked: CheckedVideo, configs_per_object: dict[int, list[Any]]) -> list[tuple[int, Knobs]]:
        """(object id, configuration) per batch row, objects in id order; every object of the first mask needs configs."""
        wanted = {int(k): v for k, v in configs_per_object.items()}
        missing = [obj for obj in checked.object_ids if not wanted.get(obj)]
        extra = sorted(set(wanted) - set(checked.object_ids))
        if missing or extra:
            problem = f"no configurations for objects {missing}" if missing else f"configurations for objects {extra} not in the first mask"
            raise MassegError(f"video {checked.video.name!r}: {problem} (objects: {checked.object_ids})",
                              checked.video.annotation_dir, "give (scale, bias) pairs for exactly the first mask's objects")
        rows = []
        for obj in checked.object_ids:
            seen = set()
            for config in wanted[obj]:
                knobs = as_knobs(config)
                key = config_id(knobs)
                if key not in seen:
                    seen.add(key)
                    rows.append((obj, knobs))
        return rows

    def _collect(self, checked: CheckedVideo, rows: list[tuple[int, Knobs]], logits: list[np.ndarray],
                 scores: list[np.ndarray], ious: list[np.ndarray]) -> dict[str, VideoPrediction]:
        results: dict[str, VideoPrediction] = {}
        for row, (obj, knobs) in enumerate(rows):
            key = config_id(knobs)
            if key not in results:
                results[key] = VideoPrediction(video=checked.video.name, frame_names=checked.video.frame_names,
                                               height=checked.height, width=checked.width, object_ids=[],
                                               first_frames={}, scale=knobs.scale, bias=knobs.bias,
                                               knobs=knobs.extras() or None)
            prediction = results[key]
            prediction.object_ids.append(obj)
            prediction.first_frames[obj] = checked.start_frame
            prediction.logits[obj] = logits[row]
            prediction.object_scores[obj] = scores[row]
            prediction.predicted_ious[obj] = ious[row]
        return results


@torch.inference_mode()
def reference_predict_video(predictor: Any, video: Video, scale: float, bias: float,
                            sam2_knobs: dict[str, Any] | None = None) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Plain SAM2 on one video under one configuration, as ``tools/vos_inference.py`` runs it: the reference for
    parity checks and the benchmark baseline.

    ``predictor`` comes from :func:`masseg_search.model.build.build_plain_predictor` (frames must be numbered JPEGs,
    as sam2's loader wants). Returns (object id -> (T, h, w) float32 low-res logits with -1024 before the first
    annotated frame, (T, H, W) uint8 id masks merged as vos_inference merges them). ``sam2_knobs`` sets SAM2's own
    attributes first (e.g. ``{"memory_temporal_stride_for_eval": 2, "num_maskmem": 4}``): the reference for a
    row's memory knobs.
    """
    checked = check_video(video)
    predictor.sigmoid_scale_for_mem_enc, predictor.sigmoid_bias_for_mem_enc = float(scale), float(bias)
    for name, value in (sam2_knobs or {}).items():
        if not hasattr(predictor, name):
            raise MassegError(f"SAM2 has no attribute {name!r}", fix="name a SAM2Base attribute")
        setattr(predictor, name, value)
    state = predictor.init_state(video_path=str(video.image_dir), async_loading_frames=False)
    for obj in checked.object_ids:
        predictor.add_new_mask(inference_state=state, frame_idx=checked.start_frame, obj_id=obj, mask=checked.first_mask == obj)
    num_frames = len(video.frame_paths)
    low_res = predictor.image_size // 4
    logits = {obj: np.full((num_frames, low_res, low_res), -1024.0, np.float32) for obj in checked.object_ids}
    masks = np.zeros((num_frames, checked.height, checked.width), np.uint8)
    for frame_idx, obj_ids, video_res_logits in predictor.propagate_in_video(state):
        for index, obj in enumerate(obj_ids):
            outputs = state["output_dict_per_obj"][index]
            out = outputs["cond_frame_outputs"].get(frame_idx) or outputs["non_cond_frame_outputs"][frame_idx]
            logits[obj][frame_idx] = out["pred_masks"][0, 0].float().cpu().numpy()
        # vos_inference's put_per_obj_mask: objects painted in descending id order, so the smallest id wins
        for index in reversed(range(len(obj_ids))):
            masks[frame_idx][(video_res_logits[index, 0] > 0).cpu().numpy()] = obj_ids[index]
    return logits, masks
