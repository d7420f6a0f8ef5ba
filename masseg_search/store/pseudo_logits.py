"""Another model's masks or probabilities as the store's low-res logits (pseudo-logits), by one documented rule.

The store keeps per object a (T, h, w) logit map that the ensemble upsamples and merges with SAM2's rule (per pixel
the object with the highest logit wins if that logit is above 0). A model that writes hard id masks (Cutie, XMem,
DeAOT, SAM2Long, SeC: an ``Annotations`` tree of palette PNGs) or softmax probabilities gives no logits, so they are
made from what it gives, at the store's low resolution:

1. *fractions*: per object k and low-res cell, the area average (OpenCV ``INTER_AREA``) of its indicator
   ``mask == k`` (hard masks) or of its probability (probability maps); the background's fraction likewise (hard
   masks: ``1 - sum_k f_k``; probability maps: their background channel, else ``1 - sum_k p_k``, at least 0);
2. *pseudo-logit*: the log-odds of the object against the strongest other label of the cell (the background or
   another object): ``scale * (log(max(f_k, eps)) - log(max(max_{j != k} f_j, eps)))`` with ``eps = 0.01``.

For one object this is ``scale * logit(f)`` with ``f`` clipped to [eps, 1 - eps]: a cell the object covers fully
gets ``+4.6 * scale``, an empty one ``-4.6 * scale``, a half-covered one 0 (the mask's edge). With several objects
only the label with the largest fraction can be above 0: the store's merge (highest above 0 wins) gives back the
tool's own argmax (background included) at low resolution. With ``scale = 1`` the probability
``sigmoid(pseudo-logit)`` of a lone object is its clipped coverage, so ``mean`` fusion averages SAM2's
probabilities with the tool's coverage; a smaller scale makes the tool less sure in ``confidence`` fusion and
``logit-mean``.

The per-frame ``object_score`` of such a member is the largest pseudo-logit of the object in that frame (above 0
exactly where the merge can show it); it has no predicted IoU. No torch here.
"""
from __future__ import annotations

import cv2
import numpy as np

PSEUDO_LOGIT_EPS = 0.01  # fractions are clipped here: |pseudo-logit| <= log(1 / eps) * scale = 4.6 * scale


def area_fraction(plane: np.ndarray, low_height: int, low_width: int) -> np.ndarray:
    """(h, w) area average of a (H, W) float plane: each low-res cell's mean value (OpenCV ``INTER_AREA``)."""
    plane = np.asarray(plane, np.float32)
    if plane.shape == (low_height, low_width):
        return plane
    return cv2.resize(plane, (low_width, low_height), interpolation=cv2.INTER_AREA)


def pseudo_logits(fractions: np.ndarray, background: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
    """(N, h, w) pseudo-logits from the objects' low-res fractions (N, h, w) and the background's (h, w); without a
    background, ``1 - sum`` of the objects' (at least 0). See the module docstring for the rule (ties between the
    two largest fractions give 0, so neither shows: background)."""
    fractions = np.asarray(fractions, np.float32)
    if background is None:
        background = np.maximum(1.0 - fractions.sum(axis=0), 0.0)
    labels = np.log(np.maximum(np.concatenate([np.asarray(background, np.float32)[None], fractions]), PSEUDO_LOGIT_EPS))
    order = np.argsort(labels, axis=0, kind="stable")
    largest = np.take_along_axis(labels, order[-1:], axis=0)[0]
    second = np.take_along_axis(labels, order[-2:-1], axis=0)[0] if len(labels) > 1 else np.full_like(largest, -np.inf)
    is_largest = order[-1] == np.arange(len(labels))[:, None, None]  # the strongest other label: the second for the top one
    strongest_other = np.where(is_largest, second[None], largest[None])[1:]
    return ((labels[1:] - strongest_other) * np.float32(scale)).astype(np.float32)


def mask_pseudo_logits(mask: np.ndarray, object_ids: list[int], low_height: int, low_width: int,
                       scale: float = 1.0) -> np.ndarray:
    """(N, h, w) pseudo-logits of one frame's (H, W) id mask for ``object_ids`` (hard masks)."""
    fractions = np.stack([area_fraction(mask == object_id, low_height, low_width) for object_id in object_ids]) \
        if object_ids else np.zeros((0, low_height, low_width), np.float32)
    return pseudo_logits(fractions, None, scale)


def probability_pseudo_logits(probabilities: np.ndarray, low_height: int, low_width: int,
                              background: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
    """(N, h, w) pseudo-logits of one frame's (N, H, W) per-object probabilities in [0, 1] (and its (H, W)
    background probability, when the tool gives one, e.g. a softmax's channel 0)."""
    fractions = np.stack([area_fraction(plane, low_height, low_width) for plane in probabilities]) \
        if len(probabilities) else np.zeros((0, low_height, low_width), np.float32)
    low_background = None if background is None else area_fraction(background, low_height, low_width)
    return pseudo_logits(fractions, low_background, scale)
