"""The weighted loss: every term responds to its weight, CE vs focal is a real choice, and the Sim term rewards
memory that keeps object identities apart."""
from __future__ import annotations

import math

import pytest
import torch

from masseg_search.config import LossWeights, TrainSection
from masseg_search.finetune.loss import CORE_LOSS_KEY, WeightedVOSLoss, memory_similarity_loss

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
    return WeightedVOSLoss(weights)(model(batch), batch.masks)


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


def _features(vectors: list[list[float]], masks: torch.Tensor) -> torch.Tensor:
    """Memory features whose every pixel of row o is vector o (so pooling recovers it exactly)."""
    tensor = torch.tensor(vectors, dtype=torch.float32)[:, :, None, None]
    return tensor.expand(-1, -1, masks.shape[-2] // 4, masks.shape[-1] // 4).clone()


def test_sim_is_low_when_memory_keeps_identities_and_high_when_they_swap() -> None:
    masks = torch.zeros(3, 2, 16, 16, dtype=torch.bool)  # (T, O, H, W)
    masks[:, 0, :8] = True
    masks[:, 1, 8:] = True
    apart = [[1.0, 0.0], [0.0, 1.0]]
    swapped = [[0.0, 1.0], [1.0, 0.0]]
    kept = [{"maskmem_features": _features(apart, masks[t])} for t in range(3)]
    confused = [{"maskmem_features": _features(apart if t == 0 else swapped, masks[t])} for t in range(3)]
    low, high = memory_similarity_loss(kept, masks), memory_similarity_loss(confused, masks)
    assert float(low) < 1e-3
    assert float(high) == pytest.approx(10.0, abs=1e-3)  # cos 1 vs 0 at tau 0.1: -log softmax = 10


def test_sim_ignores_absent_objects_and_single_object_clips() -> None:
    masks = torch.zeros(2, 2, 16, 16, dtype=torch.bool)
    masks[:, 0, :8] = True
    masks[0, 1, 8:] = True  # object 2 leaves at frame 1
    outputs = [{"maskmem_features": _features([[1.0, 0.0], [1.0, 0.0]], masks[t])} for t in range(2)]
    # at frame 1 only object 1 is a query; it still contrasts against object 2's memory (identical: log 2)
    assert float(memory_similarity_loss(outputs, masks)) == pytest.approx(math.log(2), abs=1e-4)
    single = [{"maskmem_features": _features([[1.0, 0.0]], masks[t, :1])} for t in range(2)]
    value = memory_similarity_loss(single, masks[:, :1])
    assert float(value) == 0.0
