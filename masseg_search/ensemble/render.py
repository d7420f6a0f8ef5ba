"""Per frame: one bilinear upsampling of the fused scores to the video size and SAM2's non-overlap merge."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from masseg_search.data import layout
from masseg_search.ensemble.fuse import FusedVideo, positive_extents
from masseg_search.errors import MassegError

# ---------------------------------------------------------------------------- one upsampling + non-overlap merge


def _axis_table(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis, half-pixel centres, clamped at the borders: (index0, index1, weight0, weight1)."""
    position = ((np.arange(target) + 0.5) * (source / target) - 0.5).astype(np.float32)
    index0 = np.floor(position).astype(np.int64)
    fraction = (position - index0).astype(np.float32)
    low, high = index0 < 0, index0 >= source - 1
    fraction[low | high] = 0.0
    index0 = np.clip(index0, 0, source - 1)
    index1 = np.minimum(index0 + 1, source - 1)
    return index0, index1, (np.float32(1.0) - fraction).astype(np.float32), fraction


class FrameRenderer:
    """Upsamples object scores and merges them, touching only the boxes where an object can be positive.

    A bilinear sample is a convex combination of its 4 low-res taps, so it can be > 0 only if a tap is: the box of
    an object's positive low-res pixels, grown by the taps, holds all its foreground. Only boxes are upsampled; an
    object whose box meets no other box is thresholded at 0, overlapping ones are merged with SAM2's rule
    (highest score wins if > 0; ties to the earlier object). The result is the full-frame upsampling + merge of
    :func:`masseg_search.store.predictions.merge_objects` up to float rounding (OpenCV's resize may round differently).
    (Painting from the signs of each pixel's 4 taps and interpolating only mixed cells was tried: slower.)
    """

    def __init__(self, low_height: int, low_width: int, height: int, width: int):
        self.height, self.width = height, width
        self.rows = _axis_table(low_height, height)
        self.cols = _axis_table(low_width, width)
        self.best = np.zeros((height, width), np.float32)
        self._top = np.empty(height * width, np.float32)
        self._bottom = np.empty(height * width, np.float32)
        self._wins = np.empty(height * width, bool)
        self._left = np.empty(width * low_height, np.float32)  # the horizontal pass (box width x band height)
        self._right = np.empty(width * low_height, np.float32)
        self._mask: np.ndarray | None = None  # render(reuse=True)'s mask and the boxes painted in it
        self._painted: list[tuple[int, int, int, int]] = []

    def boxes(self, extents: np.ndarray) -> np.ndarray:
        """Video-resolution boxes (y0, y1, x0, x1) that can hold foreground, from (T, 4) low-res positive extents.

        A pixel is in the box when one of its taps is inside the extent; rows without an extent get an empty box.
        """
        extents = np.atleast_2d(extents)
        boxes = np.stack([np.searchsorted(self.rows[1], extents[:, 0], "left"), np.searchsorted(self.rows[0], extents[:, 1], "right"),
                          np.searchsorted(self.cols[1], extents[:, 2], "left"), np.searchsorted(self.cols[0], extents[:, 3], "right")], axis=1)
        boxes[extents[:, 0] < 0] = 0
        return boxes

    def box(self, positive_rows: np.ndarray, positive_cols: np.ndarray) -> tuple[int, int, int, int] | None:
        """The box of one frame from its low-res positive rows (h,) and columns (w,); None if nothing is positive."""
        y0, y1, x0, x1 = (int(v) for v in self.boxes(positive_extents(positive_rows[None], positive_cols[None]))[0])
        return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None

    def upsample_box(self, score: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The bilinear upsampling of a (h, w) score restricted to ``box``: horizontal taps, then vertical.

        Returns a view of an internal buffer, valid until the next call. (Gathers run along rows: the horizontal
        pass works on the transposed band.)
        """
        y0, y1, x0, x1 = box
        rows, cols = self.rows, self.cols
        r0, r1, c0, c1 = rows[0][y0:y1], rows[1][y0:y1], cols[0][x0:x1], cols[1][x0:x1]
        low_top, low_bottom = int(r0[0]), int(r1[-1]) + 1
        low_left, low_right = int(c0[0]), int(c1[-1]) + 1
        band = np.ascontiguousarray(score[low_top:low_bottom, low_left:low_right].T, dtype=np.float32)
        shape = (x1 - x0, low_bottom - low_top)
        left = self._left[: shape[0] * shape[1]].reshape(shape)
        right = self._right[: shape[0] * shape[1]].reshape(shape)
        band.take(c0 - low_left, axis=0, out=left, mode="clip")
        band.take(c1 - low_left, axis=0, out=right, mode="clip")
        np.multiply(left, self.cols[2][x0:x1, None], out=left)
        np.multiply(right, self.cols[3][x0:x1, None], out=right)
        horizontal = np.ascontiguousarray(np.add(left, right, out=left).T)
        shape = (y1 - y0, x1 - x0)
        top = self._top[: shape[0] * shape[1]].reshape(shape)
        bottom = self._bottom[: shape[0] * shape[1]].reshape(shape)
        horizontal.take(r0 - low_top, axis=0, out=top, mode="clip")
        horizontal.take(r1 - low_top, axis=0, out=bottom, mode="clip")
        np.multiply(top, self.rows[2][y0:y1, None], out=top)
        np.multiply(bottom, self.rows[3][y0:y1, None], out=bottom)
        return np.add(top, bottom, out=top)

    def render(self, objects: list[tuple[int, np.ndarray, tuple[int, int, int, int] | None]],
               reuse: bool = False) -> np.ndarray:
        """Id mask from ``(object_id, score (h, w), box)`` in merge order (box from :meth:`boxes`; None/empty = absent).

        Only the score's taps of the box are read. ``reuse=True`` paints into the renderer's own mask, cleared only
        where the previous such call painted (a new 1 MB mask, or clearing all of one, costs more than the boxes):
        the caller must leave it unchanged and be done with it before the next call.
        """
        boxes = [(object_id, score, box) for object_id, score, box in objects
                 if box is not None and box[1] > box[0] and box[3] > box[2]]
        if reuse:
            if self._mask is None:
                self._mask = np.zeros((self.height, self.width), np.uint8)
            mask = self._mask
            for y0, y1, x0, x1 in self._painted:
                mask[y0:y1, x0:x1] = 0
            self._painted = [box for _, _, box in boxes]
        else:
            mask = np.zeros((self.height, self.width), np.uint8)
        # per box: does an earlier box overlap it (then pixels may be taken), does a later one (then it must keep
        # the best score so far, in self.best, for that one to beat)
        earlier, later = [False] * len(boxes), [False] * len(boxes)
        for k, (_, _, box) in enumerate(boxes):
            for j in range(k + 1, len(boxes)):
                if _overlap(box, boxes[j][2]):
                    later[k] = earlier[j] = True
        for (_, _, (y0, y1, x0, x1)), taken in zip(boxes, earlier):
            if taken:  # before anything is painted: the earlier boxes then write their scores over these zeros
                self.best[y0:y1, x0:x1] = 0.0
        for (object_id, score, box), taken, kept in zip(boxes, earlier, later):
            y0, y1, x0, x1 = box
            region = mask[y0:y1, x0:x1]
            upsampled = self.upsample_box(score, box)
            wins = self._wins[: upsampled.size].reshape(upsampled.shape)
            if taken:
                best = self.best[y0:y1, x0:x1]
                np.greater(upsampled, best, out=wins)  # strict: a tie keeps the earlier object, as argmax does
                if kept:
                    np.maximum(best, upsampled, out=best)
                np.copyto(region, np.uint8(object_id), where=wins)
            else:  # no earlier object claimed these pixels (still 0): the rule reduces to > 0
                np.greater(upsampled, 0.0, out=wins)
                np.multiply(wins.view(np.uint8), np.uint8(object_id), out=region)
                if kept:  # the best so far is this score where it is above 0, else 0
                    np.maximum(upsampled, 0.0, out=self.best[y0:y1, x0:x1])
        return mask


@functools.lru_cache(maxsize=2)
def _shared_renderer(low_height: int, low_width: int, height: int, width: int) -> FrameRenderer:
    """One renderer per size for the videos a process writes (its buffers stay mapped between videos)."""
    return FrameRenderer(low_height, low_width, height, width)


def _palette_largest_index(path: Path, height: int, width: int) -> int | None:
    """The largest pixel value of a palette PNG of ``width`` x ``height`` (the decoded image is not copied, as
    :func:`layout.read_mask` does); None for anything else, which :func:`layout.read_mask` then judges."""
    try:
        with Image.open(path) as image:
            if image.mode != "P" or image.size != (width, height):
                return None
            return int(np.asarray(image).max())  # Pillow's own getextrema is slower than numpy's max
    except (OSError, SyntaxError, ValueError):
        return None  # missing or corrupt: read_mask reports it


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two (y0, y1, x0, x1) boxes share a pixel."""
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def video_masks(fused: FusedVideo, video: layout.Video, height: int, width: int,
                exact_given: set[str] | None = None, reuse: bool = False,
                given_as_file: bool = False) -> Iterator[tuple[str, np.ndarray | None]]:
    """(frame name, id mask) for every frame; frames where objects are given take the dataset's annotation.

    ``exact_given``, when passed, collects the names of frames whose mask is exactly the given annotation PNG (a
    writer may copy that file instead of encoding the mask); with ``given_as_file=True`` such a frame comes with
    None instead of the decoded mask. ``reuse=True`` renders every frame into one array, overwritten when the next
    frame is asked for (for a consumer that is done with a mask by then, as a writer is; one such generator at a
    time per process: the array belongs to a renderer shared by every video of the same size).
    """
    object_ids = fused.object_ids
    if not object_ids:
        for name in fused.frame_names:
            yield name, np.zeros((height, width), np.uint8)
        return
    some = fused.sources[object_ids[0]][0]
    sizes = (some.shape[1], some.shape[2], height, width)
    renderer = _shared_renderer(*sizes) if reuse else FrameRenderer(*sizes)
    boxes = {i: [tuple(int(v) for v in box) for box in renderer.boxes(fused.extents[i])] for i in object_ids}
    given_at: dict[int, list[int]] = {}
    for object_id in object_ids:
        given_at.setdefault(fused.first_frames.get(object_id, 0), []).append(object_id)
    for t, name in enumerate(fused.frame_names):
        starting = given_at.get(t, [])
        if len(starting) == len(object_ids):
            mask = None
        else:
            mask = renderer.render([(i, score, boxes[i][t]) for i, score in fused.frame(t)], reuse)
        if starting:
            path = video.annotation_path(name)
            if mask is None and exact_given is not None and given_as_file and height * width:
                largest = _palette_largest_index(path, height, width)  # the test below, without an array
                if largest is not None and set(range(1, largest + 1)) <= set(starting):
                    exact_given.add(name)
                    yield name, None
                    continue
            given = layout.read_mask(path)
            if given.shape != (height, width):
                raise MassegError(f"given mask is {given.shape[1]}x{given.shape[0]}, frames are {width}x{height}",
                                  path, "use the dataset the predictions were made on")
            if mask is None and given.size and set(range(1, int(given.max()) + 1)) <= set(starting):
                mask = given  # every value is 0 or a starting object (MOSE's first frame): the given mask as it is
                if exact_given is not None:
                    exact_given.add(name)
                yield name, mask
                continue
            keep = np.isin(given, np.asarray(starting, np.uint8))
            if mask is None:
                mask = np.where(keep, given, 0).astype(np.uint8)
            else:
                if reuse:
                    mask = mask.copy()  # the renderer's own mask must stay as it painted it
                mask[np.isin(mask, np.asarray(starting, np.uint8))] = 0
                mask[keep] = given[keep]
        yield name, mask


