"""The weighted loss: every term responds to its weight, CE vs focal is a real choice, and the Sim term (features
after memory attention against each object's memory, InfoNCE within a clip) has the value, the reach and the weight
it should."""
from __future__ import annotations

import math

import pytest
import torch

from masseg_search.config import LossWeights, TrainSection
from masseg_search.finetune.loss import (
    CORE_LOSS_KEY,
    QUERY_FEATURES_KEY,
    SIM_ANCHORS_KEY,
    WeightedVOSLoss,
    memory_cross_attention,
    query_memory_similarity_loss,
)

TERM_OF_WEIGHT = {"ce": "loss_mask", "dice": "loss_dice", "iou": "loss_iou", "class_": "loss_class", "sim": "loss_sim"}


@pytest.fixture(scope="module")
def model_and_batch(tiny_dataset, tiny_checkpoint):
    """A real SAM2Train forward on a real clip with several objects (so Sim has something to contrast)."""
    from masseg_search.finetune.augment import build_train_transforms
    from masseg_search.finetune.clips import build_clip_dataset, check_clip_split, clip_loader
    from masseg_search.finetune.loop import build_train_model

    torch.manual_seed(0)
    train = TrainSection(num_frames=4, max_objects=3)
    model = build_train_model("tiny64", str(tiny_checkpoint), train)
    split = check_clip_split(tiny_dataset, "train", 4)
    dataset = build_clip_dataset(split, 4, 3, build_train_transforms(train.augment, int(model.image_size)))
    for batch in clip_loader(dataset, 20, 1, seed=0):
        if batch.masks.shape[1] >= 2:
            return model.train(), batch
    pytest.fail("no clip with two objects in the tiny dataset")


def _terms(model, batch, weights: LossWeights) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # dropout: the same forward for every weight setting
    loss = WeightedVOSLoss(weights, memory_cross_attention(model))
    return loss(model(batch), batch.masks, object_clips=batch.obj_to_frame_idx[0, :, 1])


def test_core_loss_is_the_weighted_sum_of_the_terms(model_and_batch) -> None:
    model, batch = model_and_batch
    weights = LossWeights(ce=20, dice=1, sim=0.5, iou=1, **{"class": 1})
    terms = _terms(model, batch, weights)
    expected = sum(getattr(weights, w) * float(terms[t].detach()) for w, t in TERM_OF_WEIGHT.items())
    assert math.isclose(float(terms[CORE_LOSS_KEY].detach()), expected, rel_tol=1e-5)
    assert all(float(terms[t].detach()) > 0 for t in TERM_OF_WEIGHT.values())


@pytest.mark.parametrize("weight", list(TERM_OF_WEIGHT))
def test_each_term_responds_to_its_weight(model_and_batch, weight: str) -> None:
    model, batch = model_and_batch
    base = LossWeights(ce=1, dice=1, sim=1, iou=1, **{"class": 1})
    doubled = base.model_copy(update={weight: 3.0})
    low, high = _terms(model, batch, base), _terms(model, batch, doubled)
    low, high = {k: v.detach() for k, v in low.items()}, {k: v.detach() for k, v in high.items()}
    term = float(low[TERM_OF_WEIGHT[weight]])
    assert math.isclose(float(high[CORE_LOSS_KEY]) - float(low[CORE_LOSS_KEY]), 2.0 * term, rel_tol=1e-4, abs_tol=1e-6)
    # with only this weight set, the core loss is exactly this term
    only = LossWeights(ce=0, dice=0, sim=0, iou=0, **{"class": 0}).model_copy(update={weight: 1.0})
    assert math.isclose(float(_terms(model, batch, only)[CORE_LOSS_KEY].detach()), term, rel_tol=1e-5)


def test_zero_weights_give_no_gradient_and_full_weights_do(model_and_batch) -> None:
    model, batch = model_and_batch
    model.zero_grad()
    core = _terms(model, batch, LossWeights(ce=0, dice=0, sim=0, iou=0, **{"class": 0}))[CORE_LOSS_KEY]
    assert float(core.detach()) == 0.0
    core.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())
    model.zero_grad()
    _terms(model, batch, LossWeights(sim=1.0))[CORE_LOSS_KEY].backward()
    assert sum(int(p.grad is not None and bool(p.grad.abs().sum() > 0)) for p in model.parameters()) > 10
    model.zero_grad()


def test_ce_kind_switches_between_focal_and_plain_cross_entropy(model_and_batch) -> None:
    model, batch = model_and_batch
    focal = _terms(model, batch, LossWeights(ce_kind="focal"))["loss_mask"].detach()
    plain = _terms(model, batch, LossWeights(ce_kind="ce"))["loss_mask"].detach()
    assert float(plain) > float(focal) > 0  # focal down-weights easy pixels and scales by alpha


def test_sim_weight_adds_exactly_its_term_to_the_total(model_and_batch) -> None:
    model, batch = model_and_batch
    off = _terms(model, batch, LossWeights(sim=0.0))
    on = _terms(model, batch, LossWeights(sim=0.7))
    term = on["loss_sim"].detach()
    assert float(term) > 0 and float(on[SIM_ANCHORS_KEY]) > 0
    assert torch.equal(off["loss_sim"].detach(), term)  # computed (and logged) at weight 0 too
    # bit for bit: the rest of the total is the same forward, and Sim enters as weight * term
    assert torch.equal(on[CORE_LOSS_KEY].detach(), off[CORE_LOSS_KEY].detach() + 0.7 * term)


def test_sim_gradient_reaches_memory_attention_and_the_memory_encoder(model_and_batch) -> None:
    model, batch = model_and_batch
    model.zero_grad()
    only_sim = LossWeights(ce=0, dice=0, sim=1.0, iou=0, **{"class": 0})
    _terms(model, batch, only_sim)[CORE_LOSS_KEY].backward()
    reached = {name for name, p in model.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    model.zero_grad()
    # the query side: every memory-attention layer (not only the projections Sim compares in)
    assert {"memory_attention.layers.0.self_attn.q_proj.weight", "memory_attention.layers.0.linear1.weight",
            "memory_attention.layers.1.cross_attn_image.q_proj.weight",
            "memory_attention.layers.1.cross_attn_image.k_proj.weight"} <= reached
    # the memory side: the memory encoder that wrote frame 0's memory
    assert {"memory_encoder.pix_feat_proj.weight", "memory_encoder.out_proj.weight"} <= reached


def test_query_features_are_what_the_mask_decoder_reads_and_change_nothing_else(model_and_batch) -> None:
    from hydra.utils import instantiate

    from masseg_search.finetune.loop import training_overrides
    from masseg_search.model.build import compose_model_config

    model, batch = model_and_batch
    read_by_decoder: list[torch.Tensor] = []
    decoder = model._forward_sam_heads

    def recording(backbone_features, *args, **kwargs):
        read_by_decoder.append(backbone_features)
        return decoder(backbone_features, *args, **kwargs)

    model._forward_sam_heads = recording
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            outputs = model(batch)
    finally:
        del model._forward_sam_heads
    assert outputs[0][QUERY_FEATURES_KEY] is None  # the conditioning frame attends to no memory
    assert len(read_by_decoder) == 4  # frame 0 too: sam2 runs the heads on the mask prompt for its object pointer
    assert [out[QUERY_FEATURES_KEY] is features for out, features in zip(outputs[1:], read_by_decoder[1:])] == [True] * 3
    # plain SAM2Train with the same weights and the same dropout draws gives the same masks
    overrides = [o if "_target_" not in o else "++model._target_=training.model.sam2.SAM2Train"
                 for o in training_overrides(TrainSection())]
    plain = instantiate(compose_model_config("tiny64", overrides).model, _recursive_=True)
    plain.load_state_dict(model.state_dict())
    plain.train()
    torch.manual_seed(0)
    with torch.no_grad():
        plain_outputs = plain(batch)
    for ours, theirs in zip(outputs, plain_outputs):
        assert torch.equal(ours["pred_masks_high_res"], theirs["pred_masks_high_res"])
        assert QUERY_FEATURES_KEY not in theirs


def _identity_attention(swap_keys: bool = False) -> torch.nn.Module:
    """sam2's Attention on 2-d features with identity q/k projections (k swaps the two axes if asked)."""
    from sam2.modeling.sam.transformer import Attention

    attention = Attention(embedding_dim=2, num_heads=1, kv_in_dim=2)
    with torch.no_grad():
        for projection in (attention.q_proj, attention.k_proj):
            projection.weight.copy_(torch.eye(2))
            projection.bias.zero_()
        if swap_keys:
            attention.k_proj.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    return attention


def _feature_map(vectors: list[list[float]], size: int = 4) -> torch.Tensor:
    """A (O, C, size, size) map whose every pixel of row o is vector o (so pooling recovers it exactly)."""
    return torch.tensor(vectors, dtype=torch.float32)[:, :, None, None].expand(-1, -1, size, size).clone()


def _outputs(memory: list[list[float]], queries: list[list[list[float]]]) -> list[dict]:
    """Frame 0: memory only (a conditioning frame); frames 1..: query features (memory-encoder output unused)."""
    frame0 = {"maskmem_features": _feature_map(memory), QUERY_FEATURES_KEY: None}
    return [frame0] + [{"maskmem_features": _feature_map(memory), QUERY_FEATURES_KEY: _feature_map(q)} for q in queries]


def test_query_memory_infonce_on_a_hand_made_case() -> None:
    # objects A, B in clip 0 (top / bottom halves), C alone in clip 1 with the same memory as A
    masks = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
    masks[:, 0, :8] = True
    masks[:, 1, 8:] = True
    masks[:, 2] = True
    clips = torch.tensor([0, 0, 1])
    outputs = _outputs(memory=[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]],
                       queries=[[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]])  # A right, B leaning to A, C anything
    loss, anchors = query_memory_similarity_loss(outputs, masks, clips, _identity_attention())
    # A: cos 1 with itself, 0 with B -> log(1 + e^-10); B: cos 0.8 with itself, 0.6 with A -> log(1 + e^-2);
    # C has no other object in its clip: no anchor, and never a negative for A (its memory equals A's)
    expected = (math.log1p(math.exp(-10.0)) + math.log1p(math.exp(-2.0))) / 2
    assert anchors == 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    # the memory is compared after the attention's key projection: swapping its axes swaps which memory B matches
    swapped, _ = query_memory_similarity_loss(outputs, masks, clips, _identity_attention(swap_keys=True))
    assert float(swapped.detach()) == pytest.approx((math.log1p(math.exp(10.0)) + math.log1p(math.exp(2.0))) / 2, rel=1e-5)


def test_query_memory_skips_absent_objects_and_gives_zero_without_negatives() -> None:
    masks = torch.zeros(3, 2, 16, 16, dtype=torch.bool)
    masks[:, 0, :8] = True
    masks[:2, 1, 8:] = True  # B leaves at frame 2
    outputs = _outputs(memory=[[1.0, 0.0], [0.0, 1.0]], queries=[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [5.0, 5.0]]])
    loss, anchors = query_memory_similarity_loss(outputs, masks, torch.tensor([0, 0]), _identity_attention())
    # frame 1: A right (log(1+e^-10)), B swapped (log(1+e^10)); frame 2: A swapped, B absent (its query unused)
    expected = (math.log1p(math.exp(-10.0)) + 2 * math.log1p(math.exp(10.0))) / 3
    assert anchors == 3 and float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    # one object per clip (or two clips of one object each): nothing to contrast, Sim is 0 and says so
    for clips, objects in ((torch.tensor([0]), 1), (torch.tensor([0, 1]), 2)):
        memory = torch.nn.Parameter(_feature_map([[1.0, 0.0], [0.0, 1.0]][:objects]))
        single = [{"maskmem_features": memory, QUERY_FEATURES_KEY: None},
                  {"maskmem_features": memory, QUERY_FEATURES_KEY: _feature_map([[1.0, 0.0]] * objects)}]
        loss, anchors = query_memory_similarity_loss(single, masks[:2, :objects], clips, _identity_attention())
        assert anchors == 0 and str(float(loss.detach())) == "0.0"  # 0.0, not -0.0
        loss.backward()  # still in the graph: a zero gradient, not an error
        assert memory.grad is not None and float(memory.grad.abs().sum()) == 0.0


def test_sim_names_the_model_class_it_needs() -> None:
    masks = torch.ones(2, 2, 8, 8, dtype=torch.bool)
    plain_outputs = [{"maskmem_features": _feature_map([[1.0, 0.0], [0.0, 1.0]])}] * 2  # plain SAM2Train's outputs
    with pytest.raises(ValueError, match="SAM2TrainWithQueryFeatures"):
        query_memory_similarity_loss(plain_outputs, masks, torch.tensor([0, 0]), _identity_attention())
