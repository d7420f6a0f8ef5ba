"""Per object, the stored logits of its rule's configurations fused into one low-res score map, frame by frame."""
from __future__ import annotations

import functools
import itertools
from pathlib import Path

import cv2
import numpy as np

from masseg_search.ensemble.plan import CHOICE_METHODS, PER_OBJECT_FOLDERS, FusionRule
from masseg_search.errors import MassegError
from masseg_search.store import predictions as store

PROBABILITY_EPS = 1e-6


# ------------------------------------------------------------------------------------------------ fusion math


def fuse_logits(logits: list[np.ndarray], method: str, weights: tuple[float, ...] | None = None) -> np.ndarray:
    """Fuse one object's logits over configurations (each (T, h, w)) into a float32 score (positive = foreground)."""
    if not logits:
        raise ValueError("fuse_logits needs at least one array")
    if method == "single" or len(logits) == 1 and method in ("mean", "logit-mean", "confidence"):
        return np.asarray(logits[0], dtype=np.float32)
    if method == "confidence":
        return confidence_fusion(logits)
    if method not in ("mean", "logit-mean", "vote"):
        raise ValueError(f"unknown fusion method {method!r}")
    total = np.zeros(np.shape(logits[0]), np.float32)
    term = np.empty_like(total)  # in place: a few passes per configuration
    for weight, values in zip(_normalised_weights(len(logits), weights), logits):
        _add_term(total, term, values, method, weight)
    return _finish(total, method, total)


def confidence_fusion(logits: list[np.ndarray]) -> np.ndarray:
    """Per pixel, the logit of the most confident configuration (largest ``|logit|``, i.e. ``|p - 0.5|``; ties to
    the first): where the members disagree the surest one decides, where they agree the surest one's logit is
    kept for the merge between objects (CGFSeg's confidence-guided fusion, per object at low resolution)."""
    best = np.asarray(logits[0], dtype=np.float32).copy()
    for values in logits[1:]:
        values = np.asarray(values, dtype=np.float32)
        np.copyto(best, values, where=np.abs(values) > np.abs(best))
    return best


def _normalised_weights(count: int, weights: tuple[float, ...] | None) -> np.ndarray:
    """float32 weights summing to 1 (equal when none are given)."""
    w = np.ones(count, np.float32) if weights is None else np.asarray(weights, np.float32)
    return w / w.sum()


def _add_term(total: np.ndarray, term: np.ndarray, values: np.ndarray, method: str, weight: np.float32) -> None:
    """Add one configuration's weighted term to the running ``total`` (``term``: a float32 buffer of its shape)."""
    if method == "vote":
        np.multiply(_positive(np.asarray(values)), weight, out=term)
    else:
        np.copyto(term, values, casting="unsafe")  # float16 -> float32, exact
        if method == "logit-mean":
            term *= weight
        else:  # sigmoid(x) = (1 + tanh(x / 2)) / 2: total = 2 * mean(p) - 1
            term *= np.float32(0.5)
            np.tanh(term, out=term)
            term *= weight
    total += term


def _finish(total: np.ndarray, method: str, out: np.ndarray) -> np.ndarray:
    """The score from the summed terms (``total`` is overwritten; the result is written to ``out``)."""
    if method == "mean":  # logit(p) = 2 * artanh(2p - 1), with p clipped to [eps, 1 - eps]
        np.clip(total, 2 * PROBABILITY_EPS - 1.0, 1.0 - 2 * PROBABILITY_EPS, out=total)
        np.arctanh(total, out=total)
        return np.multiply(total, np.float32(2.0), out=out)
    if method == "vote":
        return np.subtract(total, np.float32(0.5), out=out)
    if out is not total:
        np.copyto(out, total)
    return out


def _positive(values: np.ndarray) -> np.ndarray:
    """``values > 0``; float16 compared through its bits (sign clear, not +0), much faster than as floats."""
    if values.dtype == np.float16:
        return values.view(np.int16) > 0
    return values > 0


MAX_VOTE_TABLE_CONFIGS = 8  # vote by table lookup up to this many configurations (a uint8 code per pixel)


@functools.lru_cache(maxsize=64)
def _term_table(method: str, weight: float, first: bool) -> np.ndarray:
    """``mean`` / ``logit-mean``: one configuration's weighted term for every float16 bit pattern (65536 float32).

    Made by :func:`_add_term` itself, so a lookup gives the bits fuse_logits computes; the first configuration's
    table is the running total after it (0 + term, as fuse_logits adds to zeros).
    """
    values = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    total = np.zeros(values.shape, np.float32)
    term = np.empty_like(total)
    with np.errstate(invalid="ignore"):  # the NaN bit patterns
        _add_term(total, term, values, method, np.float32(weight))
    return total if first else term


@functools.lru_cache(maxsize=64)
def _vote_table(count: int, weights: tuple[float, ...] | None) -> np.ndarray:
    """``vote``: fuse_logits' score for every pattern of positive configurations (bit k set: configuration k > 0).

    A vote depends on nothing else, so a lookup by pattern gives the bits fuse_logits computes.
    """
    codes = np.arange(1 << count)
    signs = [np.where(codes >> k & 1, 1.0, -1.0).astype(np.float16) for k in range(count)]
    return fuse_logits(signs, "vote", weights)


def _vote_hitting_set(table: np.ndarray) -> tuple[int, ...]:
    """The fewest configurations (first found) such that every pattern the vote ``table`` scores > 0 has one of
    them positive: the fused score can be positive only where one of these is."""
    count = int(table.size).bit_length() - 1
    winning = np.flatnonzero(table > 0)
    for size in range(count + 1):
        for chosen in itertools.combinations(range(count), size):
            bits = sum(1 << k for k in chosen)
            if all(code & bits for code in winning.tolist()):
                return chosen
    return tuple(range(count))


class _TableFusion:
    """Fuses one box of float16 logits by table lookups, with the exact bits of :func:`fuse_logits`.

    ``mean`` and ``logit-mean`` sum one looked-up term per configuration (no float16 conversion nor tanh);
    ``vote`` packs the configurations' signs into a uint8 code per pixel and looks its score up.
    """

    def __init__(self, method: str, count: int, weights: tuple[float, ...] | None, size: int):
        self.method = method
        if method == "vote":
            self.table = _vote_table(count, weights)
            self._code, self._bit = np.empty(size, np.uint8), np.empty(size, np.uint8)
        else:
            w = _normalised_weights(count, weights)
            self.tables = [_term_table(method, float(weight), index == 0) for index, weight in enumerate(w)]
            self._total, self._term = np.empty(size, np.float32), np.empty(size, np.float32)

    def fuse(self, boxes: list[np.ndarray], out: np.ndarray) -> None:
        """Write the fused score of ``boxes`` (one (bh, bw) uint16 view of float16 logits per configuration) to ``out``."""
        shape = boxes[0].shape
        size = shape[0] * shape[1]
        if self.method == "vote":
            code = self._code[:size].reshape(shape)
            bit = self._bit[:size].reshape(shape)
            np.greater(boxes[0].view(np.int16), 0, out=code.view(bool))  # float16 > 0 <=> its int16 bits > 0
            for k, box in enumerate(boxes[1:], 1):
                np.greater(box.view(np.int16), 0, out=bit.view(bool))
                np.left_shift(bit, k, out=bit)
                np.bitwise_or(code, bit, out=code)
            self.table.take(code, out=out, mode="clip")  # codes < 2 ** count: always in range
            return
        total = self._total[:size].reshape(shape)
        term = self._term[:size].reshape(shape)
        self.tables[0].take(boxes[0], out=total, mode="wrap")  # uint16 codes: always in range
        for table, box in zip(self.tables[1:], boxes[1:]):
            table.take(box, out=term, mode="wrap")
            total += term
        _finish(total, self.method, out)


class FusedVideo:
    """One video's objects with the stored logits their rules fuse; fused frame by frame at low resolution.

    The fused score can be positive only where some configuration is (a mean, logit mean or majority of
    non-positive values is not positive), and an upsampled pixel only where one of its taps is. So each frame's
    fusion runs only on the box of every configuration's positive pixels grown by one low-res pixel, which holds
    every tap :class:`FrameRenderer` reads for that object; nothing else is computed (nor kept in memory). A vote
    needs only the configurations that every winning majority includes one of (2 of 3 equal votes): its box is
    theirs. Stored (float16) logits are fused by table lookups (:class:`_TableFusion`), others by
    :func:`fuse_logits`.
    """

    def __init__(self, video: str, frame_names: list[str], object_ids: list[int], first_frames: dict[int, int],
                 rules: dict[int, FusionRule], sources: dict[int, list[np.ndarray]]):
        self.video, self.frame_names, self.object_ids = video, frame_names, object_ids
        self.first_frames, self.rules, self.sources = first_frames, rules, sources
        self.extents: dict[int, np.ndarray] = {}  # id -> (T, 4) low-res first/last positive row and col, -1 if none
        self._scratch: dict[int, np.ndarray] = {}
        self._arrays: dict[int, list[np.ndarray]] = {}  # plain ndarray views (a memmap's indexing runs Python code)
        self._tables: dict[int, _TableFusion] = {}
        self._window_start, self._window = 0, []  # frames fused ahead: (row, col, box scores) per object and frame
        for object_id in object_ids:
            arrays = [np.asarray(values) for values in sources[object_id]]
            rule = self.rules[object_id]
            fusion = None
            if not self._single(object_id) and all(values.dtype == np.float16 for values in arrays) and (
                    rule.method in ("mean", "logit-mean") or rule.method == "vote" and len(arrays) <= MAX_VOTE_TABLE_CONFIGS):
                fusion = _TableFusion(rule.method, len(arrays), rule.weights, arrays[0].shape[1] * arrays[0].shape[2])
            # a vote is positive only where one of a few configurations is (every winning set includes one)
            scanned = arrays if fusion is None or rule.method != "vote" else [arrays[k] for k in _vote_hitting_set(fusion.table)]
            extents = stored_extents(scanned) if scanned else np.full((len(arrays[0]), 4), -1, np.int64)
            extents[: first_frames.get(object_id, 0)] = -1  # not there before it is given
            self.extents[object_id] = extents
            if self._single(object_id):
                self._arrays[object_id] = arrays
                continue
            self._scratch[object_id] = np.empty(arrays[0].shape[1:], np.float32)
            if fusion is not None:
                self._tables[object_id] = fusion
                arrays = [values.view(np.uint16) for values in arrays]
            self._arrays[object_id] = arrays

    def _single(self, object_id: int) -> bool:
        rule = self.rules[object_id]
        return rule.method == "single" or len(self.sources[object_id]) == 1 and rule.method in ("mean", "logit-mean", "confidence")

    def frame(self, t: int) -> list[tuple[int, np.ndarray]]:
        """``(object_id, score (h, w))`` of the objects that can be present at frame ``t``, in merge order.

        The score is exact on the positive extent grown by one pixel (all the renderer reads); elsewhere undefined.
        Fused objects are fused for the next few frames at once (their tables stay in cache: the PNG writing
        between two frames evicts them), so asking for frames in order fuses each once.
        """
        if not self._window_start <= t < self._window_start + len(self._window):
            self._fuse_window(t)
        fused = self._window[t - self._window_start]
        objects = []
        for object_id in self.object_ids:
            if self.extents[object_id][t, 0] < 0:
                continue
            score = self._scratch.get(object_id)
            if score is None:
                score = self._arrays[object_id][0][t]  # single: float16 as stored, the renderer widens it exactly
            else:
                r0, c0, values = fused[object_id]
                score[r0:r0 + values.shape[0], c0:c0 + values.shape[1]] = values
            objects.append((object_id, score))
        return objects

    def _fuse_window(self, start: int) -> None:
        """Fuse every fused object's box in frames ``start`` .. ``start + FUSION_WINDOW - 1``, an object at a time."""
        frames = range(start, min(start + FUSION_WINDOW, len(self.frame_names)))
        window: list[dict[int, tuple[int, int, np.ndarray]]] = [{} for _ in frames]
        for object_id, score in self._scratch.items():
            height, width = score.shape
            arrays, fusion, rule = self._arrays[object_id], self._tables.get(object_id), self.rules[object_id]
            for t, fused in zip(frames, window):
                row_first, row_last, col_first, col_last = self.extents[object_id][t].tolist()
                if row_first < 0:
                    continue
                r0, r1 = max(row_first - 1, 0), min(row_last + 2, height)
                c0, c1 = max(col_first - 1, 0), min(col_last + 2, width)
                boxes = [values[t, r0:r1, c0:c1] for values in arrays]
                if fusion is not None:
                    values = np.empty((r1 - r0, c1 - c0), np.float32)
                    fusion.fuse(boxes, values)
                else:
                    values = fuse_logits(boxes, rule.method, rule.weights)
                fused[object_id] = (r0, c0, values)
        self._window_start, self._window = start, window


FUSION_WINDOW = 8  # frames fused together (each object's boxes in them: a few hundred KB at most for 256 px logits)


def stored_extents(arrays: list[np.ndarray]) -> np.ndarray:
    """(T, 4) first and last row and column per frame where some of the (T, h, w) arrays is > 0; -1 where none.

    float16 logits (the store's) are compared through their int16 bits (> 0 exactly when the float is), a frame at
    a time: the maximum over the arrays, then OpenCV's bounding box of its positive pixels. The frame's few
    buffers stay in cache, so each stored value is read once.
    """
    if not all(values.dtype == np.float16 for values in arrays):
        return positive_extents(*_positive_rows_cols(arrays))
    keys = [np.asarray(values).view(np.int16) for values in arrays]
    frames, height, width = keys[0].shape
    extents = np.full((frames, 4), -1, np.int64)
    highest = np.empty((height, width), np.int16)
    positive = np.empty((height, width), np.uint8)
    for t in range(frames):
        top = keys[0][t]
        if len(keys) > 1:
            top = np.maximum(top, keys[1][t], out=highest)
            for key in keys[2:]:
                np.maximum(highest, key[t], out=highest)
        np.greater(top, 0, out=positive.view(bool))
        x, y, box_width, box_height = cv2.boundingRect(positive)
        if box_width:
            extents[t] = (y, y + box_height - 1, x, x + box_width - 1)
    return extents


def _positive_rows_cols(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(T, h) and (T, w) flags of rows / columns where some of the (T, h, w) arrays is > 0, from maxima."""
    if all(values.dtype == np.float16 for values in arrays):
        keys = [values.view(np.int16) for values in arrays]  # float16 > 0 <=> its int16 bits > 0; integer max is faster
    else:
        keys = [np.asarray(values, np.float32) for values in arrays]
    highest = keys[0]
    if len(keys) > 1:
        highest = highest.copy()
        for key in keys[1:]:
            np.maximum(highest, key, out=highest)
    return highest.max(axis=2) > 0, highest.max(axis=1) > 0


def positive_extents(positive_rows: np.ndarray, positive_cols: np.ndarray) -> np.ndarray:
    """(T, 4) first and last positive row and column per frame from (T, h) / (T, w) flags; -1 where none."""
    present = positive_rows.any(axis=1)
    height, width = positive_rows.shape[1], positive_cols.shape[1]
    extents = np.stack([np.argmax(positive_rows, axis=1), height - 1 - np.argmax(positive_rows[:, ::-1], axis=1),
                        np.argmax(positive_cols, axis=1), width - 1 - np.argmax(positive_cols[:, ::-1], axis=1)], axis=1)
    extents[~present] = -1
    return extents


def load_config_prediction(predictions_root: Path, video: str, config: str, object_ids: list[int],
                           cache: dict[str, store.VideoPrediction] | None) -> store.VideoPrediction:
    """A video's prediction under ``config``: its own folder, else the first of ``per_type/`` and ``policy/``
    (``per_type@<view>/``... for a config of that view; infer --per-type / --policy) that stored these objects under
    ``config``."""
    view = store.config_view(config)
    folder = predictions_root / config / video
    if (folder / store.META_FILE).is_file():
        return _cached(cache, config, folder, object_ids)
    stored_elsewhere = []
    for name in PER_OBJECT_FOLDERS:
        per_object_folder = store.view_folder(name, view)
        path = predictions_root / per_object_folder / video
        if not (path / store.META_FILE).is_file():
            continue
        prediction = _cached(cache, per_object_folder, path, object_ids)
        stored = {i: store.config_id(store.as_knobs(pair), view=view) for i, pair in (prediction.object_configs or {}).items()}
        wrong = [i for i in object_ids if stored.get(i) != config]
        if not wrong:
            return prediction
        stored_elsewhere.append((path, wrong, sorted({stored.get(i) for i in wrong}, key=str)))
    if stored_elsewhere:
        path, wrong, configs = stored_elsewhere[0]
        raise MassegError(f"objects {wrong} of {video} are stored under {configs}, not {config}", path,
                          "select with the best_configs.yaml / policy.yaml that infer --per-type / --policy used, or "
                          f"run infer --configs with {config}")
    return _cached(cache, config, folder, object_ids)  # missing: load_video_prediction names the folder


def _cached(cache: dict[str, store.VideoPrediction] | None, key: str, folder: Path,
            object_ids: list[int]) -> store.VideoPrediction:
    """A stored prediction, through ``cache`` (whole video, memory-mapped) when given."""
    if cache is None:
        return store.load_video_prediction(folder, object_ids, mmap=True)
    if key not in cache:
        cache[key] = store.load_video_prediction(folder, mmap=True)
    return cache[key]


def fuse_video(predictions_root: Path, video: str, rules: dict[int, FusionRule],
               cache: dict[str, store.VideoPrediction] | None = None) -> FusedVideo:
    """Load what the rules need from the store (fusion then runs per frame, see :class:`FusedVideo`).

    ``cache`` (config id -> a prediction of this video holding every object) avoids reloading when one video is
    fused under several rule sets, as ``--select-on`` does.
    """
    unresolved = sorted({rule.method for rule in rules.values() if rule.method in CHOICE_METHODS})
    if unresolved:
        raise MassegError(f"{video}: choice rules {unresolved} must be resolved to a member first", Path(predictions_root),
                          "call masseg_search.ensemble.agreement.resolve_choices (run_ensemble and --select-on do)")
    needed: dict[str, list[int]] = {}
    for object_id, rule in rules.items():
        for config in rule.configs:
            needed.setdefault(config, []).append(object_id)
    loaded = {config: load_config_prediction(Path(predictions_root), video, config, ids, cache) for config, ids in needed.items()}
    reference = next(iter(loaded.values()))
    for config, prediction in loaded.items():
        if prediction.frame_names != reference.frame_names:
            raise MassegError(f"config {config} has other frames than {next(iter(loaded))}", Path(predictions_root) / config / video,
                              "rerun infer for this video so every config covers the same frames")
    sources = {}
    for object_id, rule in rules.items():
        for config in rule.configs:
            if object_id not in loaded[config].logits:
                raise MassegError(f"object {object_id} is not stored under {config}", Path(predictions_root) / config / video,
                                  "run infer with this config for every object, or fuse only the configs that hold it")
        arrays = [loaded[config].logits[object_id] for config in rule.configs]
        if len({a.shape for a in arrays}) != 1:
            raise MassegError(f"object {object_id} has logits of different shapes across {rule.configs}",
                              Path(predictions_root), "store every config at the same low resolution")
        sources[object_id] = arrays
    object_ids = [i for i in reference.object_ids if i in rules] + sorted(set(rules) - set(reference.object_ids))
    return FusedVideo(video, reference.frame_names, object_ids, {i: reference.first_frames.get(i, 0) for i in rules}, rules, sources)


