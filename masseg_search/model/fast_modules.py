"""Inference-only subclasses of SAM2 modules that compute the same values with less work, for the engine.

The engine batches objects x configurations as rows, so per-row work decides its speed. These subclasses keep SAM2's
parameters and state-dict keys and override only ``forward``; :func:`speed_up` swaps them into a model the engine
owns. Results equal SAM2's up to float rounding (tests/model/test_fast_modules.py; parity in test_parity.py). While
gradients are enabled every override defers to SAM2's own forward, so training never runs this code.

* :class:`FastLayerNorm2d`: SAM2's channel LayerNorm in 6 passes over the tensor instead of 10 (the memory
  encoder's mask downsampler runs it on 256x256 masks per row);
* :class:`SharedQueryRoPEAttention`: RoPE applied in place, and the query path run once when every row's query is
  the same (memory attention's first layer reads the current frame's features, shared by all rows);
* :class:`SharedInputMemoryAttention`: memory attention's first layer runs self-attention once for all rows when
  they share the current frame's features (the engine expands one frame to every row);
* :class:`SharedPixFeatMemoryEncoder`: the memory encoder projects the current frame's features once when every
  row shares them, and adds the projection to each row's downsampled mask;
* :class:`FewKeysAttention`: attention over a handful of keys (the mask decoder's image-to-token attention: every
  image position attends to 8 token keys) with the softmax taken along a leading axis, where PyTorch's CPU softmax
  is fast, instead of ``scaled_dot_product_attention``, whose CPU kernel is slow for 8 keys of 4 channels.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.memory_encoder import MemoryEncoder
from sam2.modeling.position_encoding import reshape_for_broadcast
from sam2.modeling.sam.transformer import Attention, RoPEAttention
from sam2.modeling.sam2_utils import LayerNorm2d

from masseg_search.model.memory import rope_attention


class FastLayerNorm2d(LayerNorm2d):
    """SAM2's ``LayerNorm2d`` (normalise over channels per pixel) with the centred tensor computed once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.dtype != torch.float32:  # bf16 autocast on CUDA: SAM2's own order
            return super().forward(x)
        channels = x.shape[1]
        centred = x - x.sum(1, keepdim=True).div_(channels)
        spread = (centred * centred).sum(1, keepdim=True).div_(channels).add_(self.eps).sqrt_()
        return centred.div_(spread).mul_(self.weight[:, None, None]).add_(self.bias[:, None, None])


def _rotate_in_place(x: torch.Tensor, freqs_cis: torch.Tensor) -> None:
    """SAM2's ``apply_rotary_enc`` on one tensor (..., tokens, dim), written back into ``x``."""
    as_complex = torch.view_as_complex(x.view(*x.shape[:-1], -1, 2))
    as_complex.mul_(reshape_for_broadcast(freqs_cis, as_complex))


def _is_shared_rows(x: torch.Tensor, dim: int) -> bool:
    """True when ``x`` holds one row expanded along ``dim`` (stride 0): every row is the same tensor."""
    return x.shape[dim] > 1 and x.stride(dim) == 0


class SharedQueryRoPEAttention(RoPEAttention):
    """SAM2's ``RoPEAttention`` with the rotations done in place and a shared query projected once; honours the
    engine's key mask for rows with different memory (``key_mask``, see :mod:`masseg_search.model.memory`)."""

    key_mask: torch.Tensor | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0) -> torch.Tensor:
        if (torch.is_grad_enabled() or torch.is_autocast_enabled(q.device.type)
                or q.dtype != torch.float32 or k.dtype != torch.float32):
            if self.key_mask is not None:
                return rope_attention(self, q, k, v, num_k_exclude_rope, self.key_mask)
            return super().forward(q, k, v, num_k_exclude_rope)
        rows = q.shape[0]
        shared = _is_shared_rows(q, 0)
        q = self._separate_heads(self.q_proj(q[:1] if shared else q), self.num_heads).contiguous()
        k = self._separate_heads(self.k_proj(k), self.num_heads).contiguous()
        v = self._separate_heads(self.v_proj(v), self.num_heads)
        tokens = q.shape[-2]
        self.freqs_cis = self.freqs_cis.to(q.device)
        if self.freqs_cis.shape[0] != tokens:  # as SAM2: a square feature map of `tokens` positions
            side = tokens ** 0.5
            self.freqs_cis = self.compute_cis(end_x=side, end_y=side).to(q.device)
        _rotate_in_place(q, self.freqs_cis)
        num_k_rope = k.shape[-2] - num_k_exclude_rope
        if num_k_rope:
            if num_k_rope % tokens or (num_k_rope != tokens and not self.rope_k_repeat):
                raise ValueError(f"{num_k_rope} rotated keys for {tokens} queries (rope_k_repeat={self.rope_k_repeat})")
            # the rotated keys are num_k_rope / tokens memory frames of `tokens` positions, each rotated like q
            _rotate_in_place(k[:, :, :num_k_rope].unflatten(2, (num_k_rope // tokens, tokens)), self.freqs_cis)
        if shared:
            q = q.expand(rows, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.key_mask)
        return self.out_proj(self._recombine_heads(out))


class SharedInputMemoryAttention(MemoryAttention):
    """SAM2's ``MemoryAttention``; when every row reads the same current-frame features (stride-0 rows), the first
    layer's self-attention and cross-attention query run once and are broadcast to the rows."""

    def forward(self, curr: Any, memory: torch.Tensor, curr_pos: Any = None, memory_pos: torch.Tensor | None = None,
                num_obj_ptr_tokens: int = 0) -> torch.Tensor:
        one_curr, one_pos = (curr[0], curr_pos[0]) if isinstance(curr, list) else (curr, curr_pos)
        if (torch.is_grad_enabled() or not self.batch_first or one_pos is None
                or not (_is_shared_rows(one_curr, 1) and _is_shared_rows(one_pos, 1))):
            return super().forward(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)
        rows = one_curr.shape[1]
        output = one_curr[:, :1]  # sequence first: (tokens, 1, dim)
        if self.pos_enc_at_input:
            output = output + 0.1 * one_pos[:, :1]
        output = output.transpose(0, 1)
        query_pos = one_pos[:, :1].transpose(0, 1)
        memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
        for index, layer in enumerate(self.layers):
            kwds = {"num_k_exclude_rope": num_obj_ptr_tokens} if isinstance(layer.cross_attn_image, RoPEAttention) else {}
            if index == 0:
                output = _first_layer_shared(layer, output, rows, memory, memory_pos, query_pos, kwds)
            else:
                output = layer(tgt=output, memory=memory, pos=memory_pos, query_pos=query_pos, **kwds)
        return self.norm(output).transpose(0, 1)


def _first_layer_shared(layer: MemoryAttentionLayer, tgt: torch.Tensor, rows: int, memory: torch.Tensor,
                        memory_pos: torch.Tensor, query_pos: torch.Tensor, kwds: dict) -> torch.Tensor:
    """``MemoryAttentionLayer.forward`` for a one-row ``tgt`` shared by ``rows`` rows: the self-attention block and
    the cross-attention query on one row, the memory (which differs per row) on all of them."""
    tgt = layer._forward_sa(tgt, query_pos)
    query = layer.norm2(tgt)
    if layer.pos_enc_at_cross_attn_queries:
        query = query + query_pos
    attended = layer.cross_attn_image(q=query.expand(rows, -1, -1),
                                      k=memory + memory_pos if layer.pos_enc_at_cross_attn_keys else memory,
                                      v=memory, **kwds)
    tgt = tgt + layer.dropout2(attended)
    return tgt + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm3(tgt))))))


class SharedPixFeatMemoryEncoder(MemoryEncoder):
    """SAM2's ``MemoryEncoder``; a frame's features shared by every row (stride 0) are projected once."""

    def forward(self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False) -> dict:
        if torch.is_grad_enabled() or not _is_shared_rows(pix_feat, 0):
            return super().forward(pix_feat, masks, skip_mask_sigmoid)
        if not skip_mask_sigmoid:
            masks = F.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        x = masks + self.pix_feat_proj(pix_feat[:1].to(masks.device))  # the same sum as SAM2's, broadcast
        x = self.out_proj(self.fuser(x))
        return {"vision_features": x, "vision_pos_enc": [self.position_encoding(x).to(x.dtype)]}


class FewKeysAttention(Attention):
    """SAM2's ``Attention``; on CPU with at most ``MAX_KEYS`` keys and many queries, scores are laid out
    (keys, queries) so the softmax runs along a leading axis."""

    MAX_KEYS = 16

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() or q.device.type != "cpu" or k.shape[1] > self.MAX_KEYS
                or q.shape[1] <= 4 * k.shape[1]):
            return super().forward(q, k, v)
        q = self._separate_heads(self.q_proj(q), self.num_heads)
        k = self._separate_heads(self.k_proj(k), self.num_heads)
        v = self._separate_heads(self.v_proj(v), self.num_heads)
        scores = torch.matmul(k, q.transpose(-1, -2)).mul_(k.shape[-1] ** -0.5)  # (B, heads, keys, queries)
        probs = scores.softmax(dim=-2)
        out = torch.matmul(v.transpose(-1, -2), probs).transpose(-1, -2)  # (B, heads, queries, channels)
        return self.out_proj(self._recombine_heads(out))


_SWAPS = {LayerNorm2d: FastLayerNorm2d, RoPEAttention: SharedQueryRoPEAttention, MemoryAttention: SharedInputMemoryAttention,
          MemoryEncoder: SharedPixFeatMemoryEncoder, Attention: FewKeysAttention}


def speed_up(model: torch.nn.Module) -> int:
    """Swap the fast subclasses into ``model``'s SAM2 modules of exactly the replaced classes; returns how many."""
    swapped = 0
    for module in model.modules():
        fast = _SWAPS.get(type(module))
        if fast is not None:
            module.__class__ = fast
            swapped += 1
    return swapped
