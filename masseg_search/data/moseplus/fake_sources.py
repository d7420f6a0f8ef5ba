"""Small fake sources in every MOSE+ input format, with the exact masks they encode (for tests and speed checks).

Each writer returns a :class:`FakeSource`: where the source is (``src``, ``ann``) and ``truth``, the id map in
SOURCE ids of every labelled frame (``truth[source_video][source_frame]``), which a conversion must reproduce.
Videos show coloured rectangles drifting over a noisy background; objects never overlap, so every format can
carry them exactly. Polygons are rasterised by pycocotools, and ``truth`` holds that rasterisation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from masseg_search.data.layout import write_mask, write_split_list
from masseg_search.data.moseplus.sources.vis import decode_rle


@dataclass
class FakeVideo:
    """Frames (RGB) and per-frame id maps (source ids) of one generated video."""

    name: str
    frames: list[np.ndarray]
    masks: list[np.ndarray]
    boxes: list[dict[int, tuple[int, int, int, int]]]  # per frame: source id -> (x0, y0, x1, y1), inclusive-exclusive


@dataclass
class FakeSource:
    """A written fake source: the folder, the JSON (if the format has one) and the masks it encodes."""

    format: str
    src: Path
    ann: Path | None = None
    truth: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def fake_videos(count: int, frames: int, height: int, width: int, seed: int, object_ids: tuple[int, ...] = (1, 2),
                late: dict[int, int] | None = None, gone: dict[int, tuple[int, int]] | None = None,
                prefix: str = "video") -> list[FakeVideo]:
    """Generate videos; ``late`` maps an id to its first frame, ``gone`` an id to a [start, end) absence."""
    return list(iter_fake_videos(count, frames, height, width, seed, object_ids, late, gone, prefix))


def iter_fake_videos(count: int, frames: int, height: int, width: int, seed: int, object_ids: tuple[int, ...] = (1, 2),
                     late: dict[int, int] | None = None, gone: dict[int, tuple[int, int]] | None = None,
                     prefix: str = "video") -> Iterator[FakeVideo]:
    """:func:`fake_videos` one video at a time (the same videos; only one is held in memory)."""
    rng = np.random.default_rng(seed)
    late, gone = late or {}, gone or {}
    band = height // max(1, len(object_ids))
    for video_index in range(count):
        background = rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
        colours = {oid: rng.integers(120, 256, size=3, dtype=np.uint8) for oid in object_ids}
        sizes = {oid: (int(rng.integers(max(3, band // 3), max(4, band - 1))), int(rng.integers(4, max(5, width // 3))))
                 for oid in object_ids}
        starts = {oid: int(rng.integers(0, max(1, width // 3))) for oid in object_ids}
        video = FakeVideo(f"{prefix}{video_index:03d}", [], [], [])
        for t in range(frames):
            image, mask, boxes = background.copy(), np.zeros((height, width), dtype=np.int32), {}
            for slot, oid in enumerate(object_ids):
                if t < late.get(oid, 0) or (oid in gone and gone[oid][0] <= t < gone[oid][1]):
                    continue
                box_h, box_w = sizes[oid]
                x0 = min(width - box_w, starts[oid] + t)
                y0 = slot * band
                box = (x0, y0, x0 + box_w, min(height, y0 + box_h))
                mask[box[1]:box[3], box[0]:box[2]] = oid
                image[box[1]:box[3], box[0]:box[2]] = colours[oid]
                boxes[oid] = box
            video.frames.append(image)
            video.masks.append(mask)
            video.boxes.append(boxes)
        yield video


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a bool mask: column-major run lengths, starting with a (maybe empty) 0-run."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict:
    """COCO's compressed RLE (counts as a string) of a bool mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def _polygon(box: tuple[int, int, int, int]) -> list[list[float]]:
    x0, y0, x1, y1 = box
    return [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]


def write_fake_davis(root: str | Path, videos: int = 2, frames: int = 5, height: int = 40, width: int = 56,
                     seed: int = 0) -> FakeSource:
    """DAVIS 2017: ``JPEGImages/480p``, ``Annotations/480p`` palette PNGs, ``ImageSets/2017/{train,val}.txt``."""
    root = Path(root)
    source = FakeSource("davis", root)
    names = []
    for video in iter_fake_videos(videos, frames, height, width, seed, object_ids=(1, 2, 3), prefix="davis-clip"):
        names.append(video.name)
        source.truth[video.name] = {}
        for t, (image, mask) in enumerate(zip(video.frames, video.masks)):
            _write_jpeg(root / "JPEGImages" / "480p" / video.name / f"{t:05d}.jpg", image)
            write_mask(root / "Annotations" / "480p" / video.name / f"{t:05d}.png", mask.astype(np.uint8))
            source.truth[video.name][f"{t:05d}"] = mask
    write_split_list(root / "ImageSets" / "2017" / "train.txt", names[: max(1, len(names) - 1)])
    write_split_list(root / "ImageSets" / "2017" / "val.txt", names[max(1, len(names) - 1):] or names[:1])
    return source


def write_fake_ytvos(root: str | Path, videos: int = 2, frames: int = 11, height: int = 40, width: int = 56,
                     seed: int = 1, all_frames: str | Path | None = None) -> FakeSource:
    """YouTube-VOS 2019 train: ``JPEGImages`` and palette PNGs every 5th frame (as the split ships them), meta.json
    listing each object's visible frames; id 3 starts at frame 5. ``all_frames``: also write every frame's JPEG
    there (``train_all_frames/JPEGImages``)."""
    root = Path(root)
    source = FakeSource("ytvos", root)
    meta: dict = {"videos": {}}
    for video in iter_fake_videos(videos, frames, height, width, seed, object_ids=(1, 3), late={3: 5}, prefix="ytclip"):
        source.truth[video.name] = {}
        objects: dict[str, dict] = {"1": {"category": "person", "frames": []}, "3": {"category": "dog", "frames": []}}
        for t, (image, mask) in enumerate(zip(video.frames, video.masks)):
            name = f"{t:05d}"
            if all_frames is not None:
                _write_jpeg(Path(all_frames) / video.name / f"{name}.jpg", image)
            if t % 5:
                continue
            _write_jpeg(root / "JPEGImages" / video.name / f"{name}.jpg", image)
            write_mask(root / "Annotations" / video.name / f"{name}.png", mask.astype(np.uint8))
            source.truth[video.name][name] = mask
            for oid in np.unique(mask[mask > 0]):
                objects[str(int(oid))]["frames"].append(name)
        meta["videos"][video.name] = {"objects": objects}
    (root / "meta.json").write_text(json.dumps(meta))
    return source


def write_fake_vis(root: str | Path, videos: int = 2, frames: int = 5, height: int = 40, width: int = 56,
                   seed: int = 2, style: str = "mixed", layout: str = "2021") -> FakeSource:
    """YouTube-VIS: ``JPEGImages/<video>/`` + one JSON (2021: ``instances.json`` beside; 2019: ``train.json`` apart).

    ``style``: ``rle`` (uncompressed counts lists), ``compressed``, ``polygon`` or ``mixed`` (one of each per
    object). Object 2 is absent in frame 2 (a null segmentation).
    """
    root = Path(root)
    src = root / "train" if layout == "2019" else root
    ann = root / "train.json" if layout == "2019" else root / "instances.json"
    return _write_instances_json(FakeSource("vis", src, ann), src / "JPEGImages", videos, frames, height, width,
                                 seed, style, lambda video, t: f"{video}/{t:05d}.jpg", "vis-clip")


def write_fake_ovis(root: str | Path, videos: int = 2, frames: int = 5, height: int = 40, width: int = 56,
                    seed: int = 3) -> FakeSource:
    """OVIS: frames at ``train/<video>/img_0000001.jpg``; ``annotations_train.json`` with compressed RLE."""
    root = Path(root)
    src = root / "train"
    return _write_instances_json(FakeSource("ovis", src, root / "annotations_train.json"), src, videos, frames,
                                 height, width, seed, "compressed", lambda video, t: f"{video}/img_{t + 1:07d}.jpg",
                                 "ovis")


def _write_instances_json(source: FakeSource, image_root: Path, videos: int, frames: int, height: int, width: int,
                          seed: int, style: str, file_name, prefix: str) -> FakeSource:
    data: dict = {"info": {"description": "fake"}, "licenses": [], "videos": [], "annotations": [],
                  "categories": [{"id": 1, "name": "cat", "supercategory": "animal"},
                                 {"id": 2, "name": "car", "supercategory": "vehicle"}]}
    generated = iter_fake_videos(videos, frames, height, width, seed, object_ids=(1, 2), gone={2: (2, 3)},
                                 prefix=prefix)
    for video_index, video in enumerate(generated):
        video_id, file_names = video_index + 1, [file_name(video.name, t) for t in range(frames)]
        data["videos"].append({"id": video_id, "width": width, "height": height, "length": frames,
                               "file_names": file_names})
        truth = {Path(f).stem: np.zeros((height, width), dtype=np.int32) for f in file_names}
        for slot, oid in enumerate((1, 2)):
            annotation_id = 100 * video_id + oid
            kind = style if style != "mixed" else ("rle", "compressed", "polygon")[(video_index + slot) % 3]
            segmentations = []
            for t, mask in enumerate(video.masks):
                if oid not in video.boxes[t]:
                    segmentations.append(None)
                    continue
                if kind == "polygon":
                    polygon = _polygon(video.boxes[t][oid])
                    segmentations.append(polygon)
                    drawn = decode_rle(mask_utils.merge(mask_utils.frPyObjects(polygon, height, width)))
                    truth[Path(file_names[t]).stem][drawn.astype(bool)] = annotation_id
                else:
                    binary = mask == oid
                    segmentations.append(uncompressed_rle(binary) if kind == "rle" else compressed_rle(binary))
                    truth[Path(file_names[t]).stem][binary] = annotation_id
            areas, bboxes = [], []
            for t in range(frames):
                box = video.boxes[t].get(oid)
                areas.append(None if box is None else float((box[2] - box[0]) * (box[3] - box[1])))
                bboxes.append(None if box is None else [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                                         float(box[3] - box[1])])
            data["annotations"].append({"id": annotation_id, "video_id": video_id, "category_id": oid, "iscrowd": 0,
                                        "segmentations": segmentations, "areas": areas, "bboxes": bboxes})
        for t, image in enumerate(video.frames):
            _write_jpeg(image_root / file_names[t], image)
        source.truth[video.name] = truth
    source.ann.parent.mkdir(parents=True, exist_ok=True)
    source.ann.write_text(json.dumps(data))
    return source


def write_fake_burst(root: str | Path, videos: int = 2, frames: int = 7, height: int = 40, width: int = 56,
                     seed: int = 4) -> FakeSource:
    """BURST: ``frames/train/<dataset>/<seq>/frame0001.jpg``; ``train.json`` with RLE strings every 2nd frame."""
    root = Path(root)
    source = FakeSource("burst", root / "frames", root / "train.json")
    data: dict = {"split": "train", "sequences": [], "categories": [
        {"id": 805, "name": "person", "synset": "person.n.01", "def": "a human being", "synonyms": ["person"]},
        {"id": 95, "name": "bicycle", "synset": "bicycle.n.01", "def": "a wheeled vehicle", "synonyms": ["bicycle"]}]}
    generated = iter_fake_videos(videos, frames, height, width, seed, object_ids=(2, 5), prefix="seq")
    for index, video in enumerate(generated):
        dataset = ("LaSOT", "YFCC100M")[index % 2]
        all_paths = [f"frame{t + 1:04d}.jpg" for t in range(frames)]
        annotated = all_paths[::2]
        segmentations, truth = [], {}
        for t in range(0, frames, 2):
            mask = video.masks[t]
            segmentations.append({str(tid): {"rle": compressed_rle(mask == tid)["counts"], "is_gt": True, "score": 1.0}
                                  for tid in (2, 5) if np.any(mask == tid)})
            truth[Path(all_paths[t]).stem] = mask
        for t, image in enumerate(video.frames):
            _write_jpeg(source.src / "train" / dataset / video.name / all_paths[t], image)
        data["sequences"].append({
            "id": index + 1, "width": width, "height": height, "dataset": dataset, "seq_name": video.name, "fps": 30,
            "all_image_paths": all_paths, "annotated_image_paths": annotated, "neg_category_ids": [],
            "not_exhaustive_category_ids": [], "track_category_ids": {"2": 805, "5": 95},
            "segmentations": segmentations,
        })
        source.truth[f"{dataset}_{video.name}"] = truth
    source.ann.write_text(json.dumps(data))
    return source


def write_fake_mose(root: str | Path, videos: int = 3, frames: int = 6, height: int = 40, width: int = 56,
                    seed: int = 5, list_name: str = "train") -> Path:
    """A MOSE-layout root (``JPEGImages``, ``Annotations``, ``<list_name>.txt``) standing in for MOSE train."""
    root = Path(root)
    names = []
    for video in iter_fake_videos(videos, frames, height, width, seed, object_ids=(1, 2), prefix="mose"):
        names.append(video.name)
        for t, (image, mask) in enumerate(zip(video.frames, video.masks)):
            _write_jpeg(root / "JPEGImages" / video.name / f"{t:05d}.jpg", image)
            write_mask(root / "Annotations" / video.name / f"{t:05d}.png", mask.astype(np.uint8))
    write_split_list(root / f"{list_name}.txt", names)
    return root
