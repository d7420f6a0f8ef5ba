"""Converters read what each dataset really ships. Every fixture here is written by hand in this file, field by
field from the published description of its format (cited at each writer), NOT by the project's fake_sources:
so a wrong assumption shared by our writer and our parser cannot pass. Where an official reader exists, it judges
the fixtures too: pycocotools (``frPyObjects`` for list counts and polygons, ``decode``) for the COCO RLEs of
YouTube-VIS, OVIS and BURST, and the DAVIS readers' rules (davis-matlab ``db_read_annot.m``: one channel, values
{0, 255}, ``> 0``; davis2017-evaluation: the palette PNG's indices are the ids) for DAVIS.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pycocotools.mask as coco_mask
import pytest
from PIL import Image

from masseg_search.cli import main
from masseg_search.data.check import ERROR, check_dataset
from masseg_search.data.layout import open_dataset, read_mask, read_split_list
from masseg_search.data.moseplus import convert_source
from masseg_search.errors import MassegError

H, W = 24, 32
# pycocotools' Cython conversion warns under numpy 2 (harmless; the project's own decoder silences it too)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# --------------------------------------------------------------------------------------------- shared helpers
def write_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_palette_png(path: Path, ids: np.ndarray) -> None:
    """An indexed PNG with a palette of our own (not the project's DAVIS palette): only the indices matter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[1:] = np.random.default_rng(7).integers(30, 255, (255, 3), dtype=np.uint8)
    image.putpalette(palette.tobytes())
    image.save(path)


def coco_uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts (cocodataset.org "format-data": column-major runs, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


def official_decode(segmentation, height: int, width: int) -> np.ndarray:
    """pycocotools as the datasets' own APIs call it (ytvos.py annToRLE / burstapi rle_ann_to_mask)."""
    if isinstance(segmentation, list):  # polygons
        return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))).astype(bool)
    if isinstance(segmentation["counts"], list):  # uncompressed RLE
        return coco_mask.decode(coco_mask.frPyObjects(segmentation, height, width)).astype(bool)
    return coco_mask.decode({"size": [height, width], "counts": segmentation["counts"].encode()}).astype(bool)


def back_to_source_ids(out: Path) -> dict[tuple[str, str], np.ndarray]:
    """Every labelled converted frame, its ids mapped back to the source's through the manifests."""
    frames = pd.read_csv(out / "manifest_frames.csv", dtype=str, keep_default_na=False)
    objects = pd.read_csv(out / "manifest_objects.csv", dtype={"video": str, "source_video": str})
    result = {}
    for row in frames.itertuples():
        if row.labelled != "True":
            continue
        mask = read_mask(out / "Annotations" / row.video / f"{row.frame}.png").astype(np.int64)
        mapped = np.where(mask == 255, 255, 0)
        for obj in objects[objects["video"] == row.video].itertuples():
            mapped[mask == int(obj.object_id)] = int(obj.source_object_id)
        result[(row.source_video, row.source_frame)] = mapped
    return result


def labelled_frames(out: Path) -> list[tuple[str, str, str]]:
    frames = pd.read_csv(out / "manifest_frames.csv", dtype=str, keep_default_na=False)
    return list(zip(frames["source_video"], frames["source_frame"], frames["labelled"]))


def convert(format_name: str, src: Path, out: Path, **kwargs) -> object:
    return convert_source(format_name, src, out, shorter_side=None, progress=False, **kwargs)


# --------------------------------------------------------------------------------------------- DAVIS 2016
def write_davis2016(root: Path, level: str = "480p", image_sets: bool = True) -> dict[tuple[str, str], np.ndarray]:
    """DAVIS 2016 as released (Perazzi et al., CVPR 2016; davischallenge.org/davis2016/code.html):
    ``JPEGImages/<480p|1080p>/<seq>/00000.jpg``, ``Annotations/<level>/<seq>/00000.png`` 8-bit grayscale, 0 =
    background and 255 = the single object; ``ImageSets/<level>/{train,val}.txt`` one frame pair a line,
    ``/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png``. Returns the object (id 1) per frame."""
    truth = {}
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for seq, split, frames in (("bear", "train", 4), ("blackswan", "val", 3)):
        for t in range(frames):
            write_jpeg(root / "JPEGImages" / level / seq / f"{t:05d}.jpg", seed=t)
            obj = box(4, 14, 3 + t, 12 + t)
            png = root / "Annotations" / level / seq / f"{t:05d}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.where(obj, 255, 0).astype(np.uint8), mode="L").save(png)
            truth[(seq, f"{t:05d}")] = obj.astype(np.int64)
            lists[split].append(f"/JPEGImages/{level}/{seq}/{t:05d}.jpg /Annotations/{level}/{seq}/{t:05d}.png")
    if image_sets:
        for split, lines in lists.items():
            path = root / "ImageSets" / level / f"{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
    return truth


def test_davis2016_masks_match_the_official_reader_rule(tmp_path: Path) -> None:
    root = tmp_path / "DAVIS"
    truth = write_davis2016(root)
    for (seq, frame), obj in truth.items():  # davis-matlab db_read_annot.m: one channel, values {0,255}, annot > 0
        raw = np.asarray(Image.open(root / "Annotations" / "480p" / seq / f"{frame}.png"))
        assert raw.ndim == 2 and set(np.unique(raw)) <= {0, 255}
        np.testing.assert_array_equal((raw > 0).astype(np.int64), obj)
    summary = convert("davis", root, tmp_path / "out", split="train")
    assert summary.videos == ["bear"]
    converted = back_to_source_ids(tmp_path / "out")
    assert set(converted) == {k for k in truth if k[0] == "bear"}
    for key, mask in converted.items():
        np.testing.assert_array_equal(mask, truth[key])
    assert [p for p in check_dataset(tmp_path / "out") if p.severity == ERROR] == []


def test_davis2016_without_image_sets_and_at_1080p(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    truth = write_davis2016(bare, image_sets=False)
    assert convert("davis", bare, tmp_path / "out").videos == ["bear", "blackswan"]
    assert back_to_source_ids(tmp_path / "out").keys() == truth.keys()
    full_hd = tmp_path / "hd"
    write_davis2016(full_hd, level="1080p")
    summary = convert("davis", full_hd, tmp_path / "out-hd", split="val")
    assert summary.videos == ["blackswan"]


def test_davis2016_frame_pair_lists(tmp_path: Path) -> None:
    root = tmp_path / "DAVIS"
    write_davis2016(root)
    assert read_split_list(root / "ImageSets" / "480p" / "train.txt") == ["bear"]
    assert open_dataset(root, split="val").video_names == ["blackswan"]
    # a list that names only some frames converts exactly those
    (root / "ImageSets" / "480p" / "part.txt").write_text(
        "/JPEGImages/480p/bear/00001.jpg /Annotations/480p/bear/00001.png\n"
        "/JPEGImages/480p/bear/00003.jpg /Annotations/480p/bear/00003.png\n")
    convert("davis", root, tmp_path / "out", split="part")
    assert labelled_frames(tmp_path / "out") == [("bear", "00001", "True"), ("bear", "00003", "True")]


def test_davis2016_mask_with_other_gray_values_is_named(tmp_path: Path) -> None:
    root = tmp_path / "DAVIS"
    write_davis2016(root, image_sets=False)
    png = root / "Annotations" / "480p" / "bear" / "00002.png"
    raw = np.asarray(Image.open(png)).copy()
    raw[0, 0] = 128
    Image.fromarray(raw, mode="L").save(png)
    with pytest.raises(MassegError, match=r"grayscale mask holds values \[128\] besides 0 and 255") as error:
        convert("davis", root, tmp_path / "out")
    assert error.value.path == png


def test_data_check_explains_a_davis2016_mask(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "DAVIS"
    write_davis2016(root)
    problems = check_dataset(root)
    kinds = {p.kind for p in problems if p.severity == ERROR}
    assert kinds == {"davis2016-grayscale"}
    assert main(["data", "check", str(root), "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert "a DAVIS 2016 mask (0 = background, 255 = the one object)" in out
    assert f"masseg-search data convert --format davis --src {root} --out" in out
    assert main(["data", "convert", "--format", "davis", "--src", str(root), "--out", str(tmp_path / "out"),
                 "--shorter-side", "0"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path / "out")]) == 0


# --------------------------------------------------------------------------------------------- DAVIS 2017
def write_davis2017(root: Path, level: str = "480p") -> dict[tuple[str, str], np.ndarray]:
    """DAVIS 2017 trainval as released (Pont-Tuset et al., arXiv:1704.00675; davischallenge.org/davis2017):
    ``JPEGImages/<480p|Full-Resolution>/<seq>/00000.jpg``, ``Annotations/<level>/<seq>/00000.png`` indexed PNGs
    whose indices are object ids (0 background, 255 void in davis2017-evaluation), ``ImageSets/2017/{train,val}
    .txt`` and the 2016 subset ``ImageSets/2016/{train,val}.txt``, one sequence name a line."""
    truth = {}
    for seq in ("dogs-jump", "gold-fish"):
        for t in range(3):
            write_jpeg(root / "JPEGImages" / level / seq / f"{t:05d}.jpg", seed=10 + t)
            ids = np.zeros((H, W), np.int64)
            ids[box(2, 10, 2 + t, 10 + t)] = 1
            ids[box(14, 22, 16, 28)] = 3  # ids need not be contiguous
            ids[box(0, 2, 0, W)] = 255  # a void band
            write_palette_png(root / "Annotations" / level / seq / f"{t:05d}.png", ids)
            truth[(seq, f"{t:05d}")] = ids
    for year, split, names in (("2017", "train", ["dogs-jump"]), ("2017", "val", ["gold-fish"]),
                               ("2016", "val", ["gold-fish"])):
        path = root / "ImageSets" / year / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(names) + "\n")
    return truth


@pytest.mark.parametrize("level", ["480p", "Full-Resolution"])
def test_davis2017_palette_ids_and_sequence_lists(tmp_path: Path, level: str) -> None:
    root = tmp_path / "DAVIS"
    truth = write_davis2017(root, level)
    for key, ids in truth.items():  # davis2017-evaluation reads np.array(Image.open(png)): the indices
        np.testing.assert_array_equal(np.asarray(Image.open(root / "Annotations" / level / key[0] / f"{key[1]}.png")), ids)
    assert convert("davis", root, tmp_path / "train", split="train").videos == ["dogs-jump"]
    assert convert("davis", root, tmp_path / "val16", split="2016/val").videos == ["gold-fish"]
    for out in ("train", "val16"):
        for key, mask in back_to_source_ids(tmp_path / out).items():
            np.testing.assert_array_equal(mask, truth[key])  # void stays 255, ids map back


# --------------------------------------------------------------------------------------------- YouTube-VOS
def write_ytvos_train(split_dir: Path, all_frames: Path) -> dict[tuple[str, str], np.ndarray]:
    """YouTube-VOS 2018/2019 train (Xu et al., ECCV 2018; youtube-vos.org): ``train/JPEGImages/<video>/`` holds
    every 5th frame named by its number (00000, 00005, ...), ``train/Annotations/<video>/`` an indexed PNG for each
    of them, ``train/meta.json`` = ``{"videos": {video: {"objects": {"<id>": {"category": str, "frames": [the
    frames where the object is visible]}}}}}``; ``train_all_frames/JPEGImages`` holds every frame."""
    truth = {}
    meta: dict = {"videos": {"0a2f2bd294": {"objects": {}}}}
    objects = meta["videos"]["0a2f2bd294"]["objects"]
    for t in range(16):
        frame = f"{t:05d}"
        write_jpeg(all_frames / "0a2f2bd294" / f"{frame}.jpg", seed=20 + t)
        if t % 5:
            continue
        write_jpeg(split_dir / "JPEGImages" / "0a2f2bd294" / f"{frame}.jpg", seed=20 + t)
        ids = np.zeros((H, W), np.int64)
        if t <= 5:
            ids[box(3, 11, 2 + t, 12 + t)] = 1
        if 5 <= t <= 10:
            ids[box(14, 22, 10, 20)] = 2  # appears late, leaves; frame 15 shows no object at all
        write_palette_png(split_dir / "Annotations" / "0a2f2bd294" / f"{frame}.png", ids)
        truth[("0a2f2bd294", frame)] = ids
        for object_id, category in ((1, "person"), (2, "frisbee")):
            if (ids == object_id).any():
                objects.setdefault(str(object_id), {"category": category, "frames": []})["frames"].append(frame)
    (split_dir / "meta.json").write_text(json.dumps(meta))
    return truth


def test_ytvos_train_sparse_frames_and_train_all_frames(tmp_path: Path) -> None:
    src, all_frames = tmp_path / "train", tmp_path / "train_all_frames" / "JPEGImages"
    truth = write_ytvos_train(src, all_frames)
    convert("ytvos", src, tmp_path / "annotated")
    assert labelled_frames(tmp_path / "annotated") == [("0a2f2bd294", f, "True") for f in ("00000", "00005", "00010", "00015")]
    converted = back_to_source_ids(tmp_path / "annotated")
    for key, mask in converted.items():
        np.testing.assert_array_equal(mask, truth[key])
    summary = convert("ytvos", src, tmp_path / "every", frames="all", images=all_frames)
    assert summary.labels == ["full"]
    rows = labelled_frames(tmp_path / "every")
    assert len(rows) == 16 and [r[1] for r in rows if r[2] == "True"] == ["00000", "00005", "00010", "00015"]
    objects = pd.read_csv(tmp_path / "every" / "manifest_objects.csv", dtype=str)
    assert dict(zip(objects["source_object_id"], objects["category"])) == {"1": "person", "2": "frisbee"}
    assert dict(zip(objects["source_object_id"], objects["first_source_frame"])) == {"1": "00000", "2": "00005"}


def write_ytvos_valid(split_dir: Path, all_frames: Path) -> dict[tuple[str, str], np.ndarray]:
    """YouTube-VOS valid (youtube-vos.org; the challenge's semi-supervised protocol): ``valid/meta.json`` lists,
    per object, every frame from its first appearance on (no ``category``); ``valid/Annotations/<video>/`` has a
    PNG only where an object first appears, holding only the objects that start there; ``valid_all_frames``."""
    truth = {}
    frames = [f"{t:05d}" for t in range(0, 15, 5)]
    for t in range(15):
        write_jpeg(all_frames / "f7255a57d0" / f"{t:05d}.jpg", seed=40 + t)
    for frame in frames:
        write_jpeg(split_dir / "JPEGImages" / "f7255a57d0" / f"{frame}.jpg", seed=40 + int(frame))
    first = np.zeros((H, W), np.int64)
    first[box(2, 9, 2, 9)] = 1
    later = np.zeros((H, W), np.int64)
    later[box(12, 20, 14, 24)] = 2  # object 1 is still visible here but not drawn: only the new object is
    for frame, ids in (("00000", first), ("00005", later)):
        write_palette_png(split_dir / "Annotations" / "f7255a57d0" / f"{frame}.png", ids)
        truth[("f7255a57d0", frame)] = ids
    meta = {"videos": {"f7255a57d0": {"objects": {"1": {"frames": frames}, "2": {"frames": frames[1:]}}}}}
    (split_dir / "meta.json").write_text(json.dumps(meta))
    return truth


def test_ytvos_valid_first_appearance_masks_and_valid_all_frames(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, all_frames = tmp_path / "valid", tmp_path / "valid_all_frames" / "JPEGImages"
    truth = write_ytvos_valid(src, all_frames)
    summary = convert("ytvos", src, tmp_path / "out", frames="all", images=all_frames)
    assert summary.labels == ["first-appearance"]
    rows = labelled_frames(tmp_path / "out")
    assert len(rows) == 15 and [r[1] for r in rows if r[2] == "True"] == ["00000", "00005"]
    for key, mask in back_to_source_ids(tmp_path / "out").items():
        np.testing.assert_array_equal(mask, truth[key])
    assert json.loads((tmp_path / "out" / "conversion.json").read_text())["labels"] == ["first-appearance"]
    assert main(["data", "convert", "--format", "ytvos", "--src", str(src), "--out", str(tmp_path / "cli"),
                 "--shorter-side", "0"]) == 0
    assert "prompts for inference, not training labels" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------- YouTube-VIS / OVIS
def write_instances(json_path: Path, image_root: Path, name_of, style: dict[int, str],
                    absent: dict[int, set[int]], frames: int = 4) -> dict[tuple[str, str], np.ndarray]:
    """One video in the YouTube-VIS JSON format (codalab.org/competitions/20128 "get data": ``info``, ``videos``
    [{id, width, height, length, file_names}], ``annotations`` [{id, video_id, category_id, segmentations: [RLE
    or [polygon] or None per frame], areas, bboxes, iscrowd}], ``categories`` [{id, name, supercategory}]).
    ``style`` per annotation id: ``list`` (uncompressed RLE counts), ``string`` (compressed counts), ``polygon``;
    ``absent``: annotation id -> frames where it is ``null``. Returns the drawn masks (annotation ids)."""
    file_names = [name_of(t) for t in range(frames)]
    video = Path(file_names[0]).parent.as_posix()
    truth = {(video, Path(f).stem): np.zeros((H, W), np.int64) for f in file_names}
    annotations = []
    for slot, (annotation_id, kind) in enumerate(sorted(style.items())):
        segmentations, areas, bboxes = [], [], []
        for t, file_name in enumerate(file_names):
            if t in absent.get(annotation_id, set()):
                segmentations.append(None)
                areas.append(None)
                bboxes.append(None)
                continue
            y0, x0 = 2 + 8 * slot, 2 + t
            obj = box(y0, y0 + 6, x0, x0 + 9)
            if kind == "polygon":
                segmentations.append([[x0, y0, x0 + 9, y0, x0 + 9, y0 + 6, x0, y0 + 6]])
                obj = official_decode(segmentations[-1], H, W)  # a polygon's pixels are what pycocotools draws
            elif kind == "list":
                segmentations.append({"counts": coco_uncompressed_counts(obj), "size": [H, W]})
            else:
                encoded = coco_mask.encode(np.asfortranarray(obj.astype(np.uint8)))
                segmentations.append({"counts": encoded["counts"].decode(), "size": [H, W]})
            areas.append(float(obj.sum()))
            bboxes.append([float(x0), float(y0), 9.0, 6.0])
            truth[(video, Path(file_name).stem)][obj] = annotation_id
        annotations.append({"id": annotation_id, "video_id": 5, "category_id": 1 + slot, "segmentations": segmentations,
                            "areas": areas, "bboxes": bboxes, "iscrowd": 0})
    for t, file_name in enumerate(file_names):
        write_jpeg(image_root / file_name, seed=60 + t)
    data = {"info": {"description": "YouTube-VIS-like fixture"}, "licenses": [],
            "videos": [{"id": 5, "width": W, "height": H, "length": frames, "file_names": file_names}],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "supercategory": "object"},
                           {"id": 2, "name": "giant_panda", "supercategory": "object"},
                           {"id": 3, "name": "duck", "supercategory": "object"}]}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data))
    return truth


def assert_official_decode_agrees(json_path: Path, truth: dict[tuple[str, str], np.ndarray]) -> None:
    """The fixture's JSON, decoded by pycocotools alone, paints the same masks the test drew."""
    data = json.loads(json_path.read_text())
    video = data["videos"][0]
    for t, file_name in enumerate(video["file_names"]):
        painted = np.zeros((video["height"], video["width"]), np.int64)
        for annotation in sorted(data["annotations"], key=lambda a: a["id"]):
            segmentation = annotation["segmentations"][t]
            if segmentation is not None:
                painted[official_decode(segmentation, video["height"], video["width"])] = annotation["id"]
        np.testing.assert_array_equal(painted, truth[(Path(file_name).parent.as_posix(), Path(file_name).stem)])


def test_ytvis2019_json_beside_the_split_folder_list_counts(tmp_path: Path) -> None:
    """YouTube-VIS 2019: ``train/JPEGImages/<video>/00000.jpg`` and ``train.json`` beside ``train/``."""
    root = tmp_path / "ytvis2019"
    truth = write_instances(root / "train.json", root / "train" / "JPEGImages", lambda t: f"0043f083b5/{5 * t:05d}.jpg",
                            {11: "list", 12: "list"}, {12: {0, 2}})
    assert_official_decode_agrees(root / "train.json", truth)
    convert("vis", root / "train", tmp_path / "out", ann=root / "train.json")
    converted = back_to_source_ids(tmp_path / "out")
    assert converted.keys() == truth.keys()
    for key, mask in converted.items():
        np.testing.assert_array_equal(mask, truth[key])


def test_ytvis2021_instances_json_inside_the_split_folder_mixed_kinds(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """YouTube-VIS 2021: ``train/JPEGImages/...`` and ``train/instances.json`` inside the split folder."""
    root = tmp_path / "ytvis2021" / "train"
    truth = write_instances(root / "instances.json", root / "JPEGImages", lambda t: f"3e03f623bb/{5 * t:05d}.jpg",
                            {3: "string", 7: "polygon", 9: "list"}, {3: {1}, 9: {0, 3}})
    assert_official_decode_agrees(root / "instances.json", truth)
    assert main(["data", "convert", "--format", "vis", "--src", str(root), "--out", str(tmp_path / "out"),
                 "--shorter-side", "0"]) == 0  # no --ann: instances.json is found inside
    converted = back_to_source_ids(tmp_path / "out")
    for key, mask in converted.items():
        np.testing.assert_array_equal(mask, truth[key])
    objects = pd.read_csv(tmp_path / "out" / "manifest_objects.csv")
    assert dict(zip(objects["source_object_id"], objects["category"])) == {3: "person", 7: "giant_panda", 9: "duck"}


def test_ovis_string_counts_and_null_frames(tmp_path: Path) -> None:
    """OVIS (Qi et al., IJCV 2022; songbai.site/ovis): ``train/<video>/img_0000001.jpg``, file_names relative to the
    split folder, ``annotations_train.json`` apart, compressed RLE strings, ``null`` where an instance is hidden."""
    root = tmp_path / "OVIS"
    truth = write_instances(root / "annotations_train.json", root / "train",
                            lambda t: f"2592056/img_{t + 1:07d}.jpg", {1: "string", 2: "string"}, {1: {2}, 2: {0}})
    assert_official_decode_agrees(root / "annotations_train.json", truth)
    convert("ovis", root / "train", tmp_path / "out", ann=root / "annotations_train.json")
    converted = back_to_source_ids(tmp_path / "out")
    assert sorted(k[1] for k in converted) == [f"img_{t:07d}" for t in range(1, 5)]
    for key, mask in converted.items():
        np.testing.assert_array_equal(mask, truth[key])


# --------------------------------------------------------------------------------------------- BURST
def write_burst(root: Path) -> dict[tuple[str, str], np.ndarray]:
    """BURST (Athar et al., WACV 2023), field by field from the repo's ANNOTATION_FORMAT.md: top level ``sequences``,
    ``categories`` [{id, name, synset, def, synonyms}], ``split``; a sequence has ``width, height, id, seq_name,
    dataset, fps, all_image_paths, annotated_image_paths, neg_category_ids, not_exhaustive_category_ids,
    track_category_ids`` ({"<track id>": category id}) and ``segmentations``: one dict per annotated frame,
    {"<track id>": {"rle": <compressed counts>, "is_gt", "score"}}. Images at ``<frames>/<split>/<dataset>/
    <seq_name>/<path>`` (burstapi BURSTDataset). Returns the masks painted in track ids."""
    all_paths = [f"frame{t:04d}.jpg" for t in range(1, 8)]
    annotated = all_paths[::3]  # frames 1, 4, 7
    truth, segmentations = {}, []
    for t, path in enumerate(all_paths):
        write_jpeg(root / "frames" / "train" / "YFCC100M" / "v_25685519b728afd746dfd1b2fe77c" / path, seed=80 + t)
    for k, path in enumerate(annotated):
        tracks, painted = {}, np.zeros((H, W), np.int64)
        for track_id, y0 in ((4, 2), (17, 13)):
            if track_id == 17 and k == 1:
                continue  # track 17 not visible in the second annotated frame
            obj = box(y0, y0 + 8, 3 + 2 * k, 14 + 2 * k)
            encoded = coco_mask.encode(np.asfortranarray(obj.astype(np.uint8)))
            tracks[str(track_id)] = {"rle": encoded["counts"].decode(), "is_gt": True, "score": 1.0}
            painted[obj] = track_id
        segmentations.append(tracks)
        truth[("YFCC100M_v_25685519b728afd746dfd1b2fe77c", Path(path).stem)] = painted
    data = {"split": "train",
            "categories": [{"id": 805, "name": "person", "synset": "person.n.01", "def": "a human being",
                            "synonyms": ["person", "individual"]},
                           {"id": 95, "name": "bicycle", "synset": "bicycle.n.01", "def": "a wheeled vehicle",
                            "synonyms": ["bicycle", "bike"]}],
            "sequences": [{"width": W, "height": H, "id": 3, "seq_name": "v_25685519b728afd746dfd1b2fe77c",
                           "dataset": "YFCC100M", "fps": 30, "all_image_paths": all_paths,
                           "annotated_image_paths": annotated, "neg_category_ids": [12],
                           "not_exhaustive_category_ids": [], "track_category_ids": {"4": 805, "17": 95},
                           "segmentations": segmentations}]}
    ann = root / "annotations" / "train" / "train.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(data))
    return truth


def test_burst_track_rles_and_the_split_dataset_sequence_tree(tmp_path: Path) -> None:
    root = tmp_path / "BURST"
    truth = write_burst(root)
    ann = root / "annotations" / "train" / "train.json"
    sequence = json.loads(ann.read_text())["sequences"][0]
    for path, tracks in zip(sequence["annotated_image_paths"], sequence["segmentations"]):  # burstapi's decoding
        painted = np.zeros((H, W), np.int64)
        for track_id, entry in tracks.items():
            painted[official_decode({"counts": entry["rle"]}, H, W)] = int(track_id)
        np.testing.assert_array_equal(painted, truth[("YFCC100M_v_25685519b728afd746dfd1b2fe77c", Path(path).stem)])
    convert("burst", root / "frames", tmp_path / "annotated", ann=ann)
    for key, mask in back_to_source_ids(tmp_path / "annotated").items():
        np.testing.assert_array_equal(mask, truth[key])
    convert("burst", root / "frames" / "train", tmp_path / "every", ann=ann, frames="all")  # <split>/ as --src
    rows = labelled_frames(tmp_path / "every")
    assert [r[1] for r in rows] == [f"frame{t:04d}" for t in range(1, 8)]
    assert [r[1] for r in rows if r[2] == "True"] == ["frame0001", "frame0004", "frame0007"]
    objects = pd.read_csv(tmp_path / "every" / "manifest_objects.csv")
    assert dict(zip(objects["source_object_id"], objects["category"])) == {4: "person", 17: "bicycle"}
