"""Overlay viewer: masks over a video's frames, ground truth and several predictions side by side.

Each prediction source is one of

- an Annotations-style tree: ``DIR/<video>/<frame>.png`` or ``DIR/Annotations/<video>/<frame>.png`` (a submission,
  saved masks); frames are matched to the video's by sorted position, as the MOSE scorer does;
- a stored-predictions configuration folder (masseg_search/store/predictions.py): ``DIR/<video>/meta.json`` +
  ``object_<id>.npz``, turned into id masks with the non-overlap merge (shown as stored: on an object's first frame
  that is the model's output for the given mask, which a submission replaces by the given mask itself);
- a stored-predictions root holding several configuration folders (``DIR/s20_b-10/<video>/``...): each configuration
  becomes its own panel.

For every frame a strip is drawn: the ground truth (when the dataset has annotations) then each prediction, ids in
the DAVIS palette blended over the frame with their contours, a label bar on top naming the panel and, when the
whole video is annotated, that frame's J&F ((J + F) / 2 with the DAVIS evaluator's per-frame J and F, mean over the
first frame's objects). Outputs under ``out_dir/<video>/``: ``frames/<frame>.png`` (one strip per frame),
``contact_sheet.png`` (a few evenly spaced strips stacked) and ``<video>.gif`` (at most MAX_GIF_FRAMES evenly spaced
frames) or ``<video>.mp4`` (every frame, streamed). Frames are read, scored and drawn one at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from masseg_search.data.layout import (
    ANNOTATION_DIR,
    DAVIS_LEVELS,
    DAVIS_PALETTE,
    VOID_ID,
    Video,
    atomic_write_bytes,
    list_files,
    open_dataset,
    read_frame,
    read_mask,
)
from masseg_search.errors import MassegError
from masseg_search.evaluation import FrameScorer
from masseg_search.store import predictions

OVERLAY_ALPHA = 0.5
MIN_PANEL_WIDTH = 256
MAX_PANEL_WIDTH = 640
LABEL_BAR_FRACTION = 0.09
CONTACT_SHEET_ROWS = 6
GIF_FRAME_MS = 250
MAX_GIF_FRAMES = 150  # a GIF holds every frame in memory: longer videos are sampled evenly
MP4_FPS = 4
_PANEL_GAP = 4
_GAP_COLOUR = (255, 255, 255)
_BAR_COLOUR = (32, 32, 32)
_TEXT_COLOUR = (255, 255, 255)


@dataclass
class MaskSource:
    """One panel's masks for one video: a label and a way to get the id mask of frame ``t``."""

    label: str
    path: Path
    kind: str  # "annotations" or "stored"
    mask_at: Callable[[int], np.ndarray]


def _annotation_source(label: str, folder: Path, video: Video, height: int, width: int) -> MaskSource:
    """Masks from ``folder/<frame>.png`` matched to the video's frames by sorted position."""
    paths = list_files(folder, (".png",))
    if len(paths) != len(video.frame_paths):
        raise MassegError(
            f"{len(paths)} mask PNGs for {len(video.frame_paths)} frames of video {video.name!r}",
            folder,
            "write one PNG per frame (a full Annotations-style prediction), or pass another folder",
        )

    def mask_at(index: int) -> np.ndarray:
        mask = read_mask(paths[index])
        if mask.shape != (height, width):
            raise MassegError(f"mask is {mask.shape[1]}x{mask.shape[0]}, the video is {width}x{height}",
                              paths[index], "predict at the video's resolution")
        return mask

    return MaskSource(label, folder, "annotations", mask_at)


def _stored_source(label: str, video_dir: Path, video: Video, height: int, width: int) -> MaskSource:
    """Masks from stored low-res logits (one configuration), merged and upsampled per frame."""
    stored = predictions.load_video_prediction(video_dir)
    if len(stored.frame_names) != len(video.frame_paths) or (stored.height, stored.width) != (height, width):
        raise MassegError(
            f"stored prediction has {len(stored.frame_names)} frames of {stored.width}x{stored.height}, the video "
            f"has {len(video.frame_paths)} of {width}x{height}",
            video_dir / predictions.META_FILE,
            "rerun `masseg-search infer` on this dataset",
        )
    object_ids = stored.object_ids

    def mask_at(index: int) -> np.ndarray:
        if not object_ids:
            return np.zeros((height, width), np.uint8)
        logits = np.stack([stored.logits[object_id][index] for object_id in object_ids])
        return predictions.logits_to_mask(logits, object_ids, height, width)

    return MaskSource(label, video_dir, "stored", mask_at)


def _annotation_folder(directory: Path, video_name: str) -> Path | None:
    """``DIR/<video>`` or ``DIR/Annotations[/<level>]/<video>`` when it holds PNGs."""
    candidates = [directory / video_name, directory / ANNOTATION_DIR / video_name]
    candidates += [directory / ANNOTATION_DIR / level / video_name for level in DAVIS_LEVELS]
    for folder in candidates:
        if list_files(folder, (".png",)):
            return folder
    return None


def resolve_sources(directory: str | Path, video: Video, height: int, width: int,
                    label: str | None = None) -> list[MaskSource]:
    """The panel(s) one ``--predictions`` folder gives for ``video`` (several for a stored-predictions root)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MassegError("prediction folder not found", directory, "pass an existing folder")
    default_label = directory.parent.name if directory.name == ANNOTATION_DIR else directory.name
    if (directory / video.name / predictions.META_FILE).is_file():
        return [_stored_source(label or default_label, directory / video.name, video, height, width)]
    folder = _annotation_folder(directory, video.name)
    if folder is not None:
        return [_annotation_source(label or default_label, folder, video, height, width)]
    config_ids = [c for c in predictions.list_config_ids(directory) if (directory / c / video.name).is_dir()]
    if config_ids:
        prefix = f"{label}: " if label else ""
        return [_stored_source(prefix + c, directory / c / video.name, video, height, width) for c in config_ids]
    if (directory / video.name).is_dir():
        raise MassegError(
            f"video {video.name!r} is there but has neither mask PNGs nor a complete stored prediction (meta.json)",
            directory / video.name,
            "rerun the command that wrote it (`masseg-search infer` resumes)",
        )
    raise MassegError(
        f"no prediction of video {video.name!r}",
        directory,
        "pass an Annotations-style folder (<video>/<frame>.png), a stored-predictions configuration folder "
        "(<video>/meta.json + object_<id>.npz) or a predictions root holding s<scale>_b<bias>/ folders",
    )


def _ground_truth(video: Video) -> tuple[dict[int, Path], bool]:
    """Annotated frames (index -> PNG) and whether every frame is annotated (then scores are shown)."""
    index_of = {name: index for index, name in enumerate(video.frame_names)}
    annotated = {index_of[p.stem]: p for p in video.annotation_paths() if p.stem in index_of}
    return annotated, bool(annotated) and len(annotated) == len(video.frame_paths)


class FrameJF:
    """Per-frame J and F of one prediction against the ground truth, frame by frame, with the evaluator's scorer."""

    def __init__(self, height: int, width: int, object_ids: Sequence[int]):
        self.object_ids = [int(i) for i in object_ids]
        self._scorer = FrameScorer(height, width, self.object_ids) if self.object_ids else None

    def add(self, gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
        """(J, F) of one frame, each the mean over the objects (1, 1 for a video without objects)."""
        if self._scorer is None:
            return 1.0, 1.0
        self._scorer.add(gt, pred)
        return float(np.mean(self._scorer.j_rows[-1])), float(np.mean(self._scorer.f_rows[-1]))


def frame_scores(gt_masks: Sequence[np.ndarray], pred_masks: Sequence[np.ndarray],
                 object_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(J, F) of every frame, each averaged over ``object_ids``, with the DAVIS evaluator's per-frame scorer.

    Unlike the evaluator's video score this covers every frame (the first and last too), since it is shown per
    frame; the frames the evaluator scores (1..T-2) get exactly its values.
    """
    if not len(gt_masks):
        return np.zeros(0), np.zeros(0)
    scorer = FrameJF(*gt_masks[0].shape, object_ids)
    values = np.array([scorer.add(gt, pred) for gt, pred in zip(gt_masks, pred_masks)], dtype=np.float64)
    return values[:, 0], values[:, 1]


def _panel_size(height: int, width: int) -> tuple[int, int]:
    """Panel (height, width): small videos scaled up so labels are legible, big ones down so strips stay small."""
    target = min(max(width, MIN_PANEL_WIDTH), MAX_PANEL_WIDTH)
    return max(1, round(height * target / width)), target


def overlay(frame: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """The frame (RGB) resized to ``size`` with ``mask``'s ids blended in palette colours and their contours."""
    panel_h, panel_w = size
    image = cv2.resize(frame, (panel_w, panel_h), interpolation=cv2.INTER_AREA if panel_w < frame.shape[1] else cv2.INTER_LINEAR)
    if mask is None:
        return image
    ids_image = cv2.resize(mask, (panel_w, panel_h), interpolation=cv2.INTER_NEAREST)
    colours = DAVIS_PALETTE[ids_image]
    objects = (ids_image > 0) & (ids_image != VOID_ID)
    blended = image.astype(np.float32)
    blended[objects] = (1 - OVERLAY_ALPHA) * blended[objects] + OVERLAY_ALPHA * colours[objects]
    result = blended.round().astype(np.uint8)
    thickness = max(1, panel_w // 256)
    for object_id in np.unique(ids_image[objects]):
        contours, _ = cv2.findContours((ids_image == object_id).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        colour = tuple(int(c) for c in np.minimum(255, DAVIS_PALETTE[object_id].astype(int) + 96))
        cv2.drawContours(result, contours, -1, colour, thickness, lineType=cv2.LINE_AA)
    return result


def _label_bar(text: str, width: int, height: int) -> np.ndarray:
    """A dark bar with ``text`` in white, the font shrunk until the text fits."""
    bar = np.full((height, width, 3), _BAR_COLOUR, dtype=np.uint8)
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, height / 30, 1
    (text_w, text_h), _ = cv2.getTextSize(text, font, scale, thickness)
    while text_w > width - 8 and scale > 0.25:
        scale *= 0.9
        (text_w, text_h), _ = cv2.getTextSize(text, font, scale, thickness)
    cv2.putText(bar, text, (4, (height + text_h) // 2), font, scale, _TEXT_COLOUR, thickness, cv2.LINE_AA)
    return bar


def _strip(panels: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Panels side by side, each under its label bar, separated by thin gaps."""
    bar_height = max(18, round(panels[0].shape[0] * LABEL_BAR_FRACTION))
    columns = []
    for index, (panel, label) in enumerate(zip(panels, labels)):
        if index:
            columns.append(np.full((panel.shape[0] + bar_height, _PANEL_GAP, 3), _GAP_COLOUR, np.uint8))
        columns.append(np.vstack([_label_bar(label, panel.shape[1], bar_height), panel]))
    return np.hstack(columns)


def _save_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MassegError("OpenCV could not encode the PNG", path)
    atomic_write_bytes(path, encoded.tobytes())


def _save_gif(path: Path, strips: list[np.ndarray]) -> None:
    import io

    # Fast octree quantisation: about 10x quicker than Pillow's default median cut, with no visible loss here.
    images = [Image.fromarray(strip).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
              for strip in strips]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0)
    atomic_write_bytes(path, buffer.getvalue())


class _Mp4Writer:
    """Streams strips into an MP4 (OpenCV mp4v) under a temporary name, renamed when closed."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(f".{path.stem}.tmp.mp4")
        self.writer = None
        self.size: tuple[int, int] | None = None

    def write(self, strip: np.ndarray) -> None:
        if self.writer is None:
            height, width = strip.shape[:2]
            self.size = (width - width % 2, height - height % 2)  # mp4v wants even sizes
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), MP4_FPS, self.size)
            if not self.writer.isOpened():
                raise MassegError("OpenCV cannot write MP4 (mp4v) here", self.path, "use --gif instead")
        width, height = self.size
        self.writer.write(cv2.cvtColor(np.ascontiguousarray(strip[:height, :width]), cv2.COLOR_RGB2BGR))

    def close(self, keep: bool) -> None:
        if self.writer is not None:
            self.writer.release()
            if keep:
                self.tmp.replace(self.path)
            else:
                self.tmp.unlink(missing_ok=True)


def _evenly_spaced(count: int, wanted: int) -> set[int]:
    return {round(i) for i in np.linspace(0, count - 1, min(wanted, count))}


def render_overlays(
    data_root: str | Path,
    video: str,
    prediction_dirs: Sequence[str | Path],
    out_dir: str | Path,
    labels: Sequence[str] | None = None,
    gif: bool = True,
    mp4: bool = False,
    frame_strips: bool = True,
    contact_rows: int = CONTACT_SHEET_ROWS,
    progress: bool = True,
) -> list[Path]:
    """Draw ``video`` of the dataset at ``data_root`` with the ground truth and every prediction side by side.

    Writes under ``out_dir/<video>/``: ``frames/<frame>.png`` (when ``frame_strips``), ``contact_sheet.png`` (up to
    ``contact_rows`` evenly spaced frames), ``<video>.gif`` and/or ``<video>.mp4``. Returns the written paths.
    ``progress``: a per-frame progress bar on stderr.
    """
    if labels is not None and len(labels) != len(prediction_dirs):
        raise MassegError(f"{len(labels)} labels for {len(prediction_dirs)} prediction folders",
                          fix="give one --labels entry per --predictions folder")
    dataset = open_dataset(data_root)
    clip = dataset.video(video)
    if not clip.frame_paths:
        raise MassegError(f"video {video!r} has no frames", clip.image_dir,
                          f"pick one of: {', '.join(dataset.video_names[:10])}")
    height, width = read_frame(clip.frame_paths[0]).shape[:2]
    sources: list[MaskSource] = []
    for index, directory in enumerate(prediction_dirs):
        sources += resolve_sources(directory, clip, height, width, labels[index] if labels else None)
    if not sources:
        raise MassegError("no prediction folder given", fix="pass --predictions DIR [DIR ...]")

    annotated, fully_annotated = _ground_truth(clip)
    frame_count = len(clip.frame_paths)
    scorers: list[FrameJF | None] = [None] * len(sources)
    if fully_annotated:
        first_ids = [int(i) for i in np.unique(read_mask(annotated[0])) if i not in (0, VOID_ID)]
        scorers = [FrameJF(height, width, first_ids) for _ in sources]

    size = _panel_size(height, width)
    out_video = Path(out_dir) / video
    written: list[Path] = []
    sheet_rows, gif_rows = _evenly_spaced(frame_count, contact_rows), _evenly_spaced(frame_count, MAX_GIF_FRAMES)
    sheet_strips: list[np.ndarray] = []
    gif_strips: list[np.ndarray] = []
    mp4_writer = _Mp4Writer(out_video / f"{video}.mp4") if mp4 else None
    finished = False
    try:
        for t in tqdm(range(frame_count), desc=f"overlays {video}", unit="frame", leave=False, disable=not progress):
            frame = read_frame(clip.frame_paths[t])
            gt = read_mask(annotated[t]) if t in annotated else None
            panels, panel_labels = [], []
            if annotated:
                panels.append(overlay(frame, gt, size))
                panel_labels.append(f"GT {clip.frame_names[t]}" if gt is not None else f"{clip.frame_names[t]} (no GT)")
            for source, scorer in zip(sources, scorers):
                mask = source.mask_at(t)
                panels.append(overlay(frame, mask, size))
                if scorer is None:
                    panel_labels.append(source.label)
                else:
                    j_value, f_value = scorer.add(gt, mask)
                    panel_labels.append(f"{source.label}  J&F {(j_value + f_value) / 2:.3f}")
            strip = _strip(panels, panel_labels)
            if frame_strips:
                path = out_video / "frames" / f"{clip.frame_names[t]}.png"
                _save_png(path, strip)
                written.append(path)
            if t in sheet_rows:
                sheet_strips.append(strip)
            if gif and t in gif_rows:
                gif_strips.append(strip)
            if mp4_writer is not None:
                mp4_writer.write(strip)
        finished = True
    finally:
        if mp4_writer is not None:
            mp4_writer.close(keep=finished)

    sheet_path = out_video / "contact_sheet.png"
    gap = np.full((_PANEL_GAP, sheet_strips[0].shape[1], 3), _GAP_COLOUR, np.uint8)
    _save_png(sheet_path, np.vstack([part for strip in sheet_strips for part in (strip, gap)][:-1]))
    written.append(sheet_path)
    if gif:
        gif_path = out_video / f"{video}.gif"
        _save_gif(gif_path, gif_strips)
        written.append(gif_path)
    if mp4_writer is not None:
        written.append(mp4_writer.path)
    return written
