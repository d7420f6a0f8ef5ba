"""The engine's fast SAM2 subclasses: same values as SAM2's own modules (up to float rounding), same parameters, and
SAM2's own forward whenever gradients are on."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sam2.modeling.sam.transformer import Attention, RoPEAttention
from sam2.modeling.sam2_utils import LayerNorm2d

from masseg_search.model.build import build_model
from masseg_search.model.engine import MultiConfigEngine
from masseg_search.model.fast_modules import (FastLayerNorm2d, FewKeysAttention, SharedInputMemoryAttention,
                                              SharedPixFeatMemoryEncoder, SharedQueryRoPEAttention, speed_up)
from masseg_search.data.layout import open_dataset

TOLERANCE = 1e-5


def fast_copy(module: torch.nn.Module) -> torch.nn.Module:
    clone = copy.deepcopy(module)
    assert speed_up(clone) >= 1
    return clone


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module.eval()


@pytest.mark.parametrize("shape", [(3, 4, 32, 32), (2, 16, 8, 8), (2, 256, 4, 4)])
def test_layer_norm_matches_sam2(shape):
    sam2_module = randomised(LayerNorm2d(shape[1]))
    fast = fast_copy(sam2_module)
    assert type(fast) is FastLayerNorm2d
    x = torch.randn(shape) * 4 + 1
    before = x.clone()
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), sam2_module(x), atol=TOLERANCE, rtol=TOLERANCE)
    assert torch.equal(x, before)  # the in-place steps work on temporaries, never on the input


def test_fast_modules_defer_to_sam2_with_gradients():
    sam2_module = randomised(LayerNorm2d(8))
    fast = fast_copy(sam2_module)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    out = fast(x)
    assert torch.equal(out, sam2_module(x))  # SAM2's own forward, bit for bit
    out.sum().backward()
    assert x.grad is not None and fast.weight.grad is not None


def rope_attention(kv_in_dim: int = 16, rope_k_repeat: bool = True) -> RoPEAttention:
    return randomised(RoPEAttention(embedding_dim=32, num_heads=1, downsample_rate=1, dropout=0.0, kv_in_dim=kv_in_dim,
                                    feat_sizes=(4, 4), rope_k_repeat=rope_k_repeat))


def test_rope_attention_matches_sam2_with_memory_frames_and_pointer_tokens():
    sam2_module = rope_attention()
    fast = fast_copy(sam2_module)
    assert type(fast) is SharedQueryRoPEAttention
    q, k = torch.randn(3, 16, 32), torch.randn(3, 3 * 16 + 4, 16)  # 3 memory frames of 16 positions + 4 pointers
    with torch.inference_mode():
        expected = sam2_module(q, k, k.clone(), num_k_exclude_rope=4)
        torch.testing.assert_close(fast(q, k, k.clone(), num_k_exclude_rope=4), expected, atol=TOLERANCE, rtol=TOLERANCE)
        # one query row expanded to every row (stride 0) is projected once and gives the same values
        shared = q[:1].expand(3, -1, -1)
        torch.testing.assert_close(fast(shared, k, k.clone(), num_k_exclude_rope=4),
                                   sam2_module(shared.contiguous(), k, k.clone(), num_k_exclude_rope=4),
                                   atol=TOLERANCE, rtol=TOLERANCE)


def test_rope_attention_refuses_keys_it_cannot_rotate():
    fast = fast_copy(rope_attention(rope_k_repeat=False))
    with torch.inference_mode(), pytest.raises(ValueError, match="rotated keys"):
        fast(torch.randn(1, 16, 32), torch.randn(1, 32, 16), torch.randn(1, 32, 16))


@pytest.mark.parametrize("queries, keys", [(256, 8), (64, 3), (8, 256), (8, 8)])
def test_few_keys_attention_matches_sam2(queries, keys):
    sam2_module = randomised(Attention(embedding_dim=32, num_heads=8, downsample_rate=2))
    fast = fast_copy(sam2_module)
    assert type(fast) is FewKeysAttention
    q, k, v = torch.randn(2, queries, 32), torch.randn(2, keys, 32), torch.randn(2, keys, 32)
    with torch.inference_mode():
        torch.testing.assert_close(fast(q, k, v), sam2_module(q, k, v), atol=TOLERANCE, rtol=TOLERANCE)


def test_memory_attention_with_shared_rows_matches_sam2(tmp_path):
    model = build_model("tiny64")
    sam2_attention = randomised(model.memory_attention, seed=3)
    fast = fast_copy(sam2_attention)
    assert type(fast) is SharedInputMemoryAttention
    tokens, rows, dim = 16, 4, sam2_attention.d_model
    curr = torch.randn(tokens, 1, dim).expand(-1, rows, -1)  # sequence first, one frame shared by every row
    curr_pos = torch.randn(tokens, 1, dim).expand(-1, rows, -1)
    memory_dim = sam2_attention.layers[0].cross_attn_image.kv_in_dim
    memory, memory_pos = torch.randn(2 * tokens + 4, rows, memory_dim), torch.randn(2 * tokens + 4, rows, memory_dim)
    with torch.inference_mode():
        expected = sam2_attention(curr=[curr.contiguous()], memory=memory, curr_pos=[curr_pos.contiguous()],
                                  memory_pos=memory_pos, num_obj_ptr_tokens=4)
        got = fast(curr=[curr], memory=memory, curr_pos=[curr_pos], memory_pos=memory_pos, num_obj_ptr_tokens=4)
    assert got.shape == expected.shape == (tokens, rows, dim)
    torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=TOLERANCE)


def test_memory_encoder_with_shared_features_matches_sam2():
    sam2_encoder = randomised(build_model("tiny64").memory_encoder, seed=4)
    fast = fast_copy(sam2_encoder)
    assert type(fast) is SharedPixFeatMemoryEncoder
    rows, channels = 3, sam2_encoder.pix_feat_proj.in_channels
    pix_feat = torch.randn(1, channels, 4, 4).expand(rows, -1, -1, -1)
    masks = torch.randn(rows, 1, 64, 64) * 5
    with torch.inference_mode():
        expected = sam2_encoder(pix_feat.contiguous(), masks, skip_mask_sigmoid=False)
        got = fast(pix_feat, masks, skip_mask_sigmoid=False)
    torch.testing.assert_close(got["vision_features"], expected["vision_features"], atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(got["vision_pos_enc"][0], expected["vision_pos_enc"][0])


def test_speed_up_keeps_the_state_dict_and_engine_results(engine_videos, lively_checkpoint):
    sam2_model = build_model("tiny64", lively_checkpoint)
    keys = {name: tuple(t.shape) for name, t in sam2_model.state_dict().items()}
    slow = MultiConfigEngine(sam2_model, "cpu", logits_dtype=np.float32, fast_modules=False)
    fast = MultiConfigEngine(build_model("tiny64", lively_checkpoint), "cpu", logits_dtype=np.float32)
    assert {name: tuple(t.shape) for name, t in fast.model.state_dict().items()} == keys
    assert any(isinstance(m, FastLayerNorm2d) for m in fast.model.modules())
    assert not any(isinstance(m, FastLayerNorm2d) for m in slow.model.modules())
    video = open_dataset(engine_videos).video("v0")
    configs = {obj: [(20.0, -10.0), (7.5, -4.0)] for obj in (1, 2, 3)}
    expected, got = slow.predict_video(video, configs), fast.predict_video(video, configs)
    for key, prediction in expected.items():
        for obj, logits in prediction.logits.items():
            np.testing.assert_allclose(got[key].logits[obj], logits, atol=1e-3)
            assert ((got[key].logits[obj] > 0) == (logits > 0)).mean() > 0.999
