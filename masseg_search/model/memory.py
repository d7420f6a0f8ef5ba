"""Per-row memory selection for the engine: SAM2's inference-time memory knobs, and our admission policies, chosen
per batch row, with rows that read different memory frames batched by padding and an attention key mask.

SAM2's ``_prepare_memory_conditioned_features`` reads the model's scalar knobs (``memory_temporal_stride_for_eval``,
``num_maskmem``, ``max_obj_ptrs_in_encoder``, ``max_cond_frames_in_attn``) for the whole batch. Here the same
selection runs once per row (:meth:`RowMemory.select`, SAM2's rules with that row's values), the chosen frames are
gathered into padded slots (a slot = one memory frame of H*W tokens, or one object pointer), and memory attention
runs once on all rows with a key mask that hides each row's padding (:func:`memory_conditioned_features`). A row
alone gets exactly SAM2's memory (same frames, same temporal encodings, same order); padding only adds masked keys.
``multimask_output_for_tracking`` is per row too: the mask decoder runs once per distinct value on its rows.

Admission policies (ours, not SAM2's; in the spirit of SAMURAI / DAM4SAM, which gate memory on the predicted IoU and
object score):

* ``admit_score`` / ``admit_iou``: a tracked frame enters a row's memory only if its object-score logit and its
  predicted IoU (the decoder's best) are above the row's thresholds; the row then reads the last admitted frames
  (SAM2's stride rule applied to the sequence of admitted frames) instead of the last frames. Empty or unreliable
  frames (the object gone, occluded, confused) no longer push the good ones out.
* ``keep_present`` K: the row keeps the last K frames where the object was confidently present (object score and
  IoU above the thresholds, 0 for unset ones); when they have left the recent window (the object disappeared), they
  take the oldest memory slots, so the row still remembers the object when it reappears.

Object pointers keep SAM2's rule (the last ``max_obj_ptrs`` frames) under every policy. Memory stays flat: a row
needs at most ``stride * (memory_frames - 2) + 1`` admitted frames, K present frames and the pointer window.
"""
from __future__ import annotations

import contextlib
import functools
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from sam2.modeling.position_encoding import apply_rotary_enc
from sam2.modeling.sam.transformer import RoPEAttention
from sam2.modeling.sam2_utils import get_1d_sine_pe, select_closest_cond_frames

from masseg_search.errors import MassegError
from masseg_search.store.knobs import Knobs


# our knob name -> the SAM2Base attribute it sets per row (the reference for parity tests)
SAM2_ATTRIBUTES = {"memory_stride": "memory_temporal_stride_for_eval", "memory_frames": "num_maskmem",
                   "obj_ptrs": "max_obj_ptrs_in_encoder", "cond_frames": "max_cond_frames_in_attn",
                   "multimask": "multimask_output_for_tracking"}


def sam2_attributes(knobs: Knobs) -> dict[str, Any]:
    """The SAM2 attributes that plain SAM2 would set to run ``knobs`` (its admission policy has no SAM2 equivalent)."""
    return {SAM2_ATTRIBUTES[name]: (bool(value) if name == "multimask" else value)
            for name, value in knobs.extras().items() if name in SAM2_ATTRIBUTES}


@dataclass(frozen=True)
class RowKnobs:
    """One row's memory knobs with the model's values filled in."""

    stride: int
    num_maskmem: int
    max_obj_ptrs: int
    max_cond_frames: int
    multimask: bool
    admit_score: float | None
    admit_iou: float | None
    keep_present: int

    @property
    def admission(self) -> bool:
        return self.admit_score is not None or self.admit_iou is not None

    @property
    def memory_window(self) -> int:
        """How many of the latest (admitted) frames SAM2's stride rule can reach back to."""
        return self.stride * (self.num_maskmem - 2) + 1 if self.num_maskmem >= 2 else 0


def resolve_knobs(model: Any, knobs: Knobs) -> RowKnobs:
    """``knobs`` with None replaced by ``model``'s own values; a MassegError for values the model cannot take."""
    trained = int(model.maskmem_tpos_enc.shape[0]) if model.maskmem_tpos_enc is not None else int(model.num_maskmem)
    frames = int(model.num_maskmem if knobs.memory_frames is None else knobs.memory_frames)
    if not 1 <= frames <= trained:
        raise MassegError(f"memory_frames {frames} is outside 1..{trained} (the model's num_maskmem)",
                          fix=f"choose memory_frames (mf) between 1 and {trained}")
    multimask = bool(model.multimask_output_for_tracking if knobs.multimask is None else knobs.multimask)
    multimask = multimask and bool(model.multimask_output_in_sam) and model.multimask_min_pt_num <= 0 <= model.multimask_max_pt_num
    return RowKnobs(stride=int(model.memory_temporal_stride_for_eval if knobs.memory_stride is None else knobs.memory_stride),
                    num_maskmem=frames,
                    max_obj_ptrs=int(model.max_obj_ptrs_in_encoder if knobs.obj_ptrs is None else knobs.obj_ptrs),
                    max_cond_frames=int(model.max_cond_frames_in_attn if knobs.cond_frames is None else knobs.cond_frames),
                    multimask=multimask, admit_score=knobs.admit_score, admit_iou=knobs.admit_iou,
                    keep_present=int(knobs.keep_present or 0))


class RowMemory:
    """The memory bookkeeping of one row chunk: each row's knobs, admitted and present frames, and the selection."""

    def __init__(self, rows: list[RowKnobs]):
        self.rows = rows
        # admitted frames per row: the conditioning frame counts as virtual index 0, admitted frames 1, 2, ...
        self.admitted = [deque(maxlen=max(row.memory_window, 1)) for row in rows]
        self.admitted_count = [1] * len(rows)
        self.present = [deque(maxlen=row.keep_present) for row in rows]
        self.last_selection: list[list[int]] = [[] for _ in rows]  # memory frames each row read on the last frame

    def record(self, frame_idx: int, object_scores: torch.Tensor, ious: torch.Tensor | None) -> None:
        """After tracking ``frame_idx``: admit it (or not) per row, and note where the object was present."""
        scores = object_scores.reshape(-1).float().tolist()
        best_ious = ious.reshape(len(self.rows), -1).float().amax(1).tolist() if ious is not None else [1.0] * len(scores)
        for position, row in enumerate(self.rows):
            score, iou = scores[position], best_ious[position]
            if row.admission:
                if ((row.admit_score is None or score > row.admit_score)
                        and (row.admit_iou is None or iou > row.admit_iou)):
                    self.admitted[position].append(frame_idx)
                    self.admitted_count[position] += 1
            if row.keep_present and score > (row.admit_score or 0.0) and iou > (row.admit_iou or 0.0):
                self.present[position].append(frame_idx)

    def _admitted_frame(self, position: int, virtual: int) -> int | None:
        """The frame at virtual index ``virtual`` of a row's admitted sequence (None: the conditioning frame,
        before it, or no longer kept)."""
        offset = self.admitted_count[position] - len(self.admitted[position])
        if virtual < max(offset, 1):
            return None
        return self.admitted[position][virtual - offset]

    def select(self, position: int, frame_idx: int, cond_outputs: dict[int, Any], non_cond: dict[int, Any],
               num_frames: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """SAM2's memory selection for one row with its knobs: ([(temporal encoding index, frame)] of mask memory
        in SAM2's order, [(pointer temporal position, frame)] of object pointers)."""
        row = self.rows[position]
        selected, unselected = select_closest_cond_frames(frame_idx, cond_outputs, row.max_cond_frames)
        n = row.num_maskmem
        memory = [(n - 1, t) for t in selected]
        recent: list[tuple[int, int]] = []
        for t_pos in range(1, n):
            t_rel = n - t_pos
            if row.admission:
                current = self.admitted_count[position]
                virtual = current - 1 if t_rel == 1 else ((current - 2) // row.stride) * row.stride - (t_rel - 2) * row.stride
                prev = self._admitted_frame(position, virtual)
            else:
                prev = frame_idx - 1 if t_rel == 1 else ((frame_idx - 2) // row.stride) * row.stride - (t_rel - 2) * row.stride
            if prev is not None and (prev in non_cond or prev in unselected):
                recent.append((n - t_pos - 1, prev))
        if row.keep_present:
            chosen = {t for _, t in recent}
            missing = [t for t in self.present[position] if t not in chosen and t in non_cond]
            missing = missing[-len(recent):] if recent else []
            # the oldest slots (first in SAM2's order) take the last frames where the object was present
            recent = [(index, t) for (index, _), t in zip(recent, missing)] + recent[len(missing):]
        memory += recent
        pointers: list[tuple[int, int]] = []
        window = min(num_frames, row.max_obj_ptrs)
        for t, _ in selected.items():
            if t <= frame_idx:  # only_obj_ptrs_in_the_past_for_eval (checked by the engine)
                pointers.append((frame_idx - t, t))
        for t_diff in range(1, window):
            t = frame_idx - t_diff
            if t < 0:
                break
            if t in non_cond or t in unselected:
                pointers.append((t_diff, t))
        self.last_selection[position] = [t for _, t in memory]
        return memory, pointers

    def needed(self, next_frame: int, num_frames: int) -> tuple[set[int], int]:
        """Non-conditioning frames whose memory features some row may still read, and the oldest frame whose object
        pointer some row may still read (from ``next_frame`` on)."""
        features: set[int] = set()
        oldest_pointer = next_frame
        for position, row in enumerate(self.rows):
            if row.admission:
                features.update(self.admitted[position])
            else:
                features.update(range(next_frame - row.memory_window, next_frame))
            features.update(self.present[position])
            oldest_pointer = min(oldest_pointer, next_frame - (min(num_frames, row.max_obj_ptrs) - 1))
        return features, oldest_pointer


def _gather(frames: list[int | None], tensors: dict[int, torch.Tensor], template: torch.Tensor) -> torch.Tensor:
    """One slot for every row: row i takes row i of ``tensors[frames[i]]``; zeros where ``frames[i]`` is None."""
    unique = set(frames)
    if len(unique) == 1 and None not in unique:
        return tensors[frames[0]]
    slot = torch.zeros_like(template)
    for frame in unique - {None}:
        index = torch.tensor([i for i, f in enumerate(frames) if f == frame], device=template.device)
        slot[index] = tensors[frame][index]
    return slot


def memory_conditioned_features(model: Any, row_memory: RowMemory, frame_idx: int, is_init_cond_frame: bool,
                                current_vision_feats: list, current_vision_pos_embeds: list, feat_sizes: list,
                                output_dict: dict, num_frames: int, track_in_reverse: bool = False) -> torch.Tensor:
    """SAM2's ``_prepare_memory_conditioned_features`` with every row's own memory (same signature, so it can stand
    in for the model's method): rows' memory frames and pointers padded to a common length, padding masked."""
    if is_init_cond_frame or model.num_maskmem == 0:
        return type(model)._prepare_memory_conditioned_features(
            model, frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds, feat_sizes,
            output_dict, num_frames, track_in_reverse)
    if track_in_reverse or model.training:
        raise MassegError("per-row memory selection tracks forward at inference only", fix="track forward (eval mode)")
    rows = len(row_memory.rows)
    channels, (height, width) = model.hidden_dim, feat_sizes[-1]
    device = current_vision_feats[-1].device
    cond, non_cond = output_dict["cond_frame_outputs"], output_dict["non_cond_frame_outputs"]
    everything = {**non_cond, **cond}
    selections = [row_memory.select(i, frame_idx, cond, non_cond, num_frames) for i in range(rows)]
    memory_slots = max(len(memory) for memory, _ in selections)
    pointer_slots = max(len(pointers) for _, pointers in selections)

    tokens, token_pos, keep = [], [], []
    features = {t: out["maskmem_features"] for t, out in everything.items() if out["maskmem_features"] is not None}
    any_frame = next(iter(cond.values()))
    pos_enc = any_frame["maskmem_pos_enc"][-1].to(device)
    template = any_frame["maskmem_features"]
    for slot in range(memory_slots):
        frames = [memory[slot][1] if slot < len(memory) else None for memory, _ in selections]
        missing = [t for t in frames if t is not None and t not in features]
        if missing:
            raise RuntimeError(f"memory features of frames {missing} were dropped while still needed")
        gathered = _gather(frames, features, template).to(device)
        tokens.append(gathered.flatten(2).permute(2, 0, 1))
        tpos = torch.stack([model.maskmem_tpos_enc[memory[slot][0] if slot < len(memory) else 0].reshape(-1)
                            for memory, _ in selections])  # (rows, mem_dim)
        token_pos.append(pos_enc.flatten(2).permute(2, 0, 1) + tpos.unsqueeze(0))
        keep.append(torch.tensor([slot < len(memory) for memory, _ in selections], device=device)
                    .unsqueeze(1).expand(rows, height * width))
    num_obj_ptr_tokens = 0
    if model.use_obj_ptrs_in_encoder and pointer_slots:
        if not model.only_obj_ptrs_in_the_past_for_eval:
            raise MassegError("per-row memory needs SAM2's only_obj_ptrs_in_the_past_for_eval", fix="use SAM2's eval setting")
        pointers = {t: out["obj_ptr"] for t, out in everything.items()}
        ptr_rows, pos_rows = [], []
        for slot in range(pointer_slots):
            frames = [ptrs[slot][1] if slot < len(ptrs) else None for _, ptrs in selections]
            ptr_rows.append(_gather(frames, pointers, any_frame["obj_ptr"]).to(device))
            pos_rows.append([ptrs[slot][0] if slot < len(ptrs) else 0 for _, ptrs in selections])
        obj_ptrs = torch.stack(ptr_rows, dim=0)  # (slots, rows, C)
        if model.add_tpos_enc_to_obj_ptrs:
            t_diff_max = torch.tensor([min(num_frames, row.max_obj_ptrs) - 1 for row in row_memory.rows],
                                      dtype=torch.float32, device=device)
            positions = torch.tensor(pos_rows, dtype=torch.float32, device=device) / t_diff_max
            tpos_dim = channels if model.proj_tpos_enc_in_obj_ptrs else model.mem_dim
            obj_pos = model.obj_ptr_tpos_proj(get_1d_sine_pe(positions, dim=tpos_dim))
        else:
            obj_pos = obj_ptrs.new_zeros(pointer_slots, rows, model.mem_dim)
        split = 1
        if model.mem_dim < channels:
            split = channels // model.mem_dim
            obj_ptrs = obj_ptrs.reshape(-1, rows, split, model.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(split, dim=0)
        tokens.append(obj_ptrs)
        token_pos.append(obj_pos)
        keep.append(torch.tensor([[slot < len(ptrs) for slot in range(pointer_slots)] for _, ptrs in selections],
                                 device=device).repeat_interleave(split, dim=1))
        num_obj_ptr_tokens = obj_ptrs.shape[0]
    memory = torch.cat(tokens, dim=0)
    memory_pos = torch.cat(token_pos, dim=0)
    key_keep = torch.cat(keep, dim=1)  # (rows, keys)
    mask = None if bool(key_keep.all()) else key_keep[:, None, None, :]
    with key_mask(model, mask):
        pix_feat_with_mem = model.memory_attention(curr=current_vision_feats, curr_pos=current_vision_pos_embeds,
                                                   memory=memory, memory_pos=memory_pos,
                                                   num_obj_ptr_tokens=num_obj_ptr_tokens)
    return pix_feat_with_mem.permute(1, 2, 0).view(rows, channels, height, width)


def rope_attention(module: RoPEAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   num_k_exclude_rope: int, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """SAM2's ``RoPEAttention.forward`` with an attention mask (True = attend) passed to scaled_dot_product_attention."""
    q = module._separate_heads(module.q_proj(q), module.num_heads)
    k = module._separate_heads(module.k_proj(k), module.num_heads)
    v = module._separate_heads(module.v_proj(v), module.num_heads)
    side = q.shape[-2] ** 0.5
    module.freqs_cis = module.freqs_cis.to(q.device)
    if module.freqs_cis.shape[0] != q.shape[-2]:
        module.freqs_cis = module.compute_cis(end_x=side, end_y=side).to(q.device)
    num_k_rope = k.size(-2) - num_k_exclude_rope
    q, k[:, :, :num_k_rope] = apply_rotary_enc(q, k[:, :, :num_k_rope], freqs_cis=module.freqs_cis,
                                               repeat_freqs_k=module.rope_k_repeat)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return module.out_proj(module._recombine_heads(out))


class KeyMaskedRoPEAttention(RoPEAttention):
    """SAM2's ``RoPEAttention`` that honours a key mask set by :func:`key_mask` (None: SAM2's own forward)."""

    key_mask: torch.Tensor | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0) -> torch.Tensor:
        if self.key_mask is None:
            return super().forward(q, k, v, num_k_exclude_rope)
        return rope_attention(self, q, k, v, num_k_exclude_rope, self.key_mask)


def enable_key_masks(model: Any) -> None:
    """Let memory attention's cross-attention take key masks: plain ``RoPEAttention`` becomes
    :class:`KeyMaskedRoPEAttention` (same parameters); the engine's fast subclass honours them itself."""
    for layer in model.memory_attention.layers:
        if type(layer.cross_attn_image) is RoPEAttention:
            layer.cross_attn_image.__class__ = KeyMaskedRoPEAttention


@contextlib.contextmanager
def key_mask(model: Any, mask: torch.Tensor | None) -> Iterator[None]:
    """Set memory attention's key mask ((rows, 1, 1, keys), True = attend) for the duration of one call."""
    modules = [layer.cross_attn_image for layer in model.memory_attention.layers]
    for module in modules:
        module.key_mask = mask
    try:
        yield
    finally:
        for module in modules:
            module.key_mask = None


def forward_sam_heads_per_row(model: Any, row_memory: RowMemory, captured: dict, backbone_features: torch.Tensor,
                              point_inputs: Any = None, mask_inputs: Any = None, high_res_features: Any = None,
                              multimask_output: bool = False) -> tuple:
    """SAM2's ``_forward_sam_heads`` with each row's ``multimask_output_for_tracking``; the decoder's IoU predictions
    are left in ``captured["ious"]`` for the admission policy. Rows that differ run as one decoder call per value;
    with mixed values the multimask outputs returned are the chosen masks (tracking reads only those)."""
    run = type(model)._forward_sam_heads
    values = [row.multimask for row in row_memory.rows]
    if point_inputs is not None or mask_inputs is not None or len(set(values)) == 1:
        wanted = multimask_output if (point_inputs is not None or mask_inputs is not None) else values[0]
        outputs = run(model, backbone_features, point_inputs, mask_inputs, high_res_features, wanted)
        captured["ious"] = outputs[2]
        return outputs
    parts = {}
    for value in (False, True):
        index = torch.tensor([i for i, v in enumerate(values) if v == value], device=backbone_features.device)
        highs = None if high_res_features is None else [h[index] for h in high_res_features]
        parts[value] = (index, run(model, backbone_features[index], None, None, highs, value))
    merged = []
    for position in (3, 4, 5, 6, 2):  # chosen low/high-res masks, object pointer, object score, IoU
        pieces = {value: out[position] if position != 2 else out[2].amax(1, keepdim=True) for value, (_, out) in parts.items()}
        first = pieces[False]
        whole = first.new_empty((len(values), *first.shape[1:]))
        for value, (index, _) in parts.items():
            whole[index] = pieces[value]
        merged.append(whole)
    low, high, obj_ptr, object_score, ious = merged
    captured["ious"] = ious
    return low, high, ious, low, high, obj_ptr, object_score


@contextlib.contextmanager
def per_row_memory(model: Any, row_memory: RowMemory, captured: dict) -> Iterator[None]:
    """While tracking one row chunk, ``model`` selects memory per row and runs the mask decoder with each row's
    multimask setting (instance attributes shadowing SAM2's methods; removed afterwards)."""
    model._prepare_memory_conditioned_features = functools.partial(memory_conditioned_features, model, row_memory)
    model._forward_sam_heads = functools.partial(forward_sam_heads_per_row, model, row_memory, captured)
    try:
        yield
    finally:
        del model._prepare_memory_conditioned_features
        del model._forward_sam_heads
