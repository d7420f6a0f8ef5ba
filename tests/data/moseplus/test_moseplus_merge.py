"""build-moseplus end to end: converts, selects, merges with MOSE train; idempotent, resumable, checked."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from masseg_search.cli import main
from masseg_search.config import config_from_dict
from masseg_search.data.check import ERROR, check_dataset
from masseg_search.data.layout import read_split_list, write_split_list
from masseg_search.data.moseplus import fake_sources as fake
from masseg_search.data.moseplus import merge, writer
from masseg_search.data.moseplus.merge import build_moseplus


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sources")
    made = {
        "davis": fake.write_fake_davis(root / "davis", videos=2),
        "ytvos": fake.write_fake_ytvos(root / "ytvos", videos=2, frames=21,
                                       all_frames=root / "ytvos_all_frames" / "JPEGImages"),
        "vis": fake.write_fake_vis(root / "vis", videos=2, layout="2019"),
        "ovis": fake.write_fake_ovis(root / "ovis", videos=2),
        "burst": fake.write_fake_burst(root / "burst", videos=2, frames=11),
    }
    mose = fake.write_fake_mose(root / "mose", videos=3)
    write_split_list(root / "mose_holdout.txt", ["mose002"])
    return {"made": made, "mose": mose, "holdout": root / "mose_holdout.txt",
            "ytvos_all_frames": root / "ytvos_all_frames" / "JPEGImages"}


def config_values(sources: dict, out: Path, **overrides) -> dict:
    made = sources["made"]
    entries = [{"name": name, "format": name, "src": str(s.src), **({"ann": str(s.ann)} if s.format in ("vis", "ovis", "burst") else {})}
               for name, s in made.items()]
    entries[1]["frames"] = "all"  # YouTube-VOS with unlabelled frames in between (train_all_frames)
    entries[1]["images"] = str(sources["ytvos_all_frames"])
    entries[3]["quota"] = 1
    values = {"moseplus": {
        "out": str(out), "shorter_side": 32, "mose_root": str(sources["mose"]), "mose_list": "train",
        "mose_holdout_list": str(sources["holdout"]), "sources": entries,
        "selection": {"min_criteria": 0, "required": {"num_frames": {"min": 3}}},
    }}
    values["moseplus"].update(overrides)
    return values


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_end_to_end(sources: dict, tmp_path: Path) -> None:
    out = tmp_path / "moseplus"
    result = build_moseplus(config_from_dict(config_values(sources, out)), progress=False)
    train = read_split_list(result.train_list)
    assert train[:2] == ["mose_mose000", "mose_mose001"]
    assert read_split_list(result.val_list) == ["mose_mose002"]
    selected = result.selection[result.selection["selected"]]
    assert train[2:] == [f"{row.source}_{row.video}" for row in selected.itertuples()]
    assert (selected["source"] == "ovis").sum() == 1  # its quota
    assert {"davis", "ytvos", "vis", "burst"} <= set(selected["source"])
    for list_file in (result.train_list, result.val_list):
        assert [p for p in check_dataset(result.root, list_file, allow_late_objects=True) if p.severity == ERROR] == []
    videos = pd.read_csv(result.root / "manifest_videos.csv")
    assert set(videos["video"]) == set(train) | {"mose_mose002"}
    objects = pd.read_csv(result.root / "manifest_objects.csv")
    assert set(objects["merged_video"]) == set(train[2:])
    # merged files are hard links to the converted ones (no second copy on disk)
    converted = out / "converted" / "davis" / "JPEGImages" / "davis-clip000" / "00000.jpg"
    assert (result.root / "JPEGImages" / "davis_davis-clip000" / "00000.jpg").stat().st_ino == converted.stat().st_ino
    report = pd.read_csv(out / "report" / "distributions.csv")
    assert set(report["group"]) == {"MOSE train (before)", "candidates", "selected", "MOSE+ (after)"}
    assert (out / "report" / "distributions.png").stat().st_size > 1000
    assert (out / "selection.csv").is_file()

    before = snapshot(result.root)
    # what a SIGKILL inside atomic_write_bytes or a video's linking leaves behind is removed by the rerun
    planted = [result.root / ".done" / ".mose_mose000.done.k1ll3d.tmp", result.root / ".manifest_frames.csv.x.tmp",
               out / "converted" / "davis" / ".done" / ".davis-clip000.json.x.tmp", out / ".selection.csv.x.tmp"]
    for path in planted:
        path.write_bytes(b"")
    (result.root / "JPEGImages" / ".tmp-vis_gone").mkdir()
    again = build_moseplus(config_from_dict(config_values(sources, out)), progress=False)
    assert snapshot(again.root) == before  # idempotent
    assert not any(path.exists() for path in planted) and not (result.root / "JPEGImages" / ".tmp-vis_gone").exists()


def test_resumes_after_a_kill_in_conversion_and_in_merge(sources: dict, tmp_path: Path, monkeypatch) -> None:
    clean = build_moseplus(config_from_dict(config_values(sources, tmp_path / "clean")), progress=False)
    killed_out = tmp_path / "killed"
    for module, name, after in ((writer, "_write_frame", 17), (merge, "_link_file", 40)):
        original, calls = getattr(module, name), {"n": 0}

        def dying(*args, _original=original, _calls=calls, _after=after):
            _calls["n"] += 1
            if _calls["n"] > _after:
                raise KeyboardInterrupt
            return _original(*args)

        monkeypatch.setattr(module, name, dying)
        with pytest.raises(KeyboardInterrupt):
            build_moseplus(config_from_dict(config_values(sources, killed_out)), progress=False)
        monkeypatch.setattr(module, name, original)
    leftovers = [p for p in killed_out.rglob(".tmp-*")]
    assert leftovers  # the kill left half-written folders behind
    resumed = build_moseplus(config_from_dict(config_values(sources, killed_out)), progress=False)
    assert not list(killed_out.rglob(".tmp-*"))
    assert snapshot(resumed.root) == snapshot(clean.root)


def test_selection_change_removes_dropped_videos(sources: dict, tmp_path: Path) -> None:
    out = tmp_path / "moseplus"
    first = build_moseplus(config_from_dict(config_values(sources, out)), progress=False)
    assert (first.root / "JPEGImages" / "davis_davis-clip001").is_dir()
    values = config_values(sources, out)
    values["moseplus"]["sources"][0]["quota"] = 0
    second = build_moseplus(config_from_dict(values), progress=False)
    assert not any(name.startswith("davis_") for name in read_split_list(second.train_list))
    assert not (second.root / "JPEGImages" / "davis_davis-clip001").exists()
    assert not (second.root / "Annotations" / "davis_davis-clip001").exists()


def test_cli_build_moseplus(sources: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config_path = tmp_path / "moseplus.yaml"
    config_path.write_text(yaml.safe_dump(config_values(sources, tmp_path / "out", link="copy")))
    assert main(["data", "build-moseplus", "--config", str(config_path)]) == 0
    assert "training videos" in capsys.readouterr().out
    assert (tmp_path / "out" / "merged" / "train.txt").is_file()


def test_shipped_moseplus_config_validates() -> None:
    from masseg_search.config import load_config

    config = load_config("moseplus")
    assert {s.format for s in config.moseplus.sources} == {"davis", "ytvos", "vis", "ovis", "burst"}
    assert config.data.root == "results/moseplus/merged"


def test_training_reads_the_merged_root(sources: dict, tmp_path: Path) -> None:
    """train / train-sweep point data.root at merged/: sam2's clip loader yields clips from it."""
    from masseg_search.finetune.augment import build_train_transforms
    from masseg_search.finetune.clips import build_clip_dataset, check_clip_split, clip_loader

    values = config_values(sources, tmp_path / "moseplus")
    result = build_moseplus(config_from_dict(values), progress=False)
    data = {"root": str(result.root), "train_split": "train", "val_split": "val"}
    config = config_from_dict({**values, "data": data})
    split = check_clip_split(config.data.root, config.data.train_split, 3)
    train = read_split_list(result.train_list)
    # YouTube-VOS was converted with frames: all, so its clips have unlabelled frames; sam2's loader needs a PNG per
    # frame and skips them (named); every other MOSE+ clip is usable
    assert sorted(split.skipped) == sorted(name for name in train if name.startswith("ytvos_"))
    assert set(split.skipped.values()) == {"not every frame has an annotation PNG"}
    assert split.usable == [name for name in train if not name.startswith("ytvos_")]
    dataset = build_clip_dataset(split, 3, 3, build_train_transforms(config.train.augment, 64))
    batch = next(iter(clip_loader(dataset, 1, 2, seed=0)))
    assert tuple(batch.img_batch.shape[:2]) == (3, 2) and batch.masks.shape[0] == 3 and batch.masks.any()


def test_resumes_after_a_real_sigkill(sources: dict, tmp_path: Path) -> None:
    """SIGKILL the CLI mid-conversion, then mid-merge (or later); a rerun ends with the same root as a clean build."""
    import signal
    import subprocess
    import sys
    import time

    clean = build_moseplus(config_from_dict(config_values(sources, tmp_path / "clean")), progress=False)
    killed_out = tmp_path / "killed"
    config_path = tmp_path / "moseplus.yaml"
    config_path.write_text(yaml.safe_dump(config_values(sources, killed_out)))
    command = [sys.executable, "-m", "masseg_search", "data", "build-moseplus", "--config", str(config_path)]
    codes = []
    for stage in ("converted/ytvos/.done/*.json", "merged/.done/*.done"):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and not list(killed_out.glob(stage)) and time.monotonic() < deadline:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        codes.append(process.wait())
    # both kills land mid-build: after the first, vis/ovis/burst are still to convert; after the second, the plot and
    # `data check` (about a second) are still to come
    assert codes == [-signal.SIGKILL, -signal.SIGKILL]
    assert main(["data", "build-moseplus", "--config", str(config_path)]) == 0
    assert not list(killed_out.rglob(".tmp-*"))
    assert snapshot(killed_out / "merged") == snapshot(clean.root)


def test_first_appearance_masks_are_refused_for_training(tmp_path: Path) -> None:
    """A YouTube-VOS valid-style source (PNGs only where objects start) is prompts, not MOSE+ training labels."""
    from masseg_search.errors import MassegError

    source = fake.write_fake_ytvos(tmp_path / "valid", videos=1, frames=11)
    (source.src / "Annotations" / "ytclip000" / "00010.png").unlink()  # left: 00000 (object 1), 00005 (object 3)
    values = {"moseplus": {"out": str(tmp_path / "moseplus"), "shorter_side": None, "mose_root": None,
                           "sources": [{"name": "ytvos", "format": "ytvos", "src": str(source.src)}]}}
    with pytest.raises(MassegError, match="masks only where objects first appear") as error:
        build_moseplus(config_from_dict(values), progress=False)
    assert error.value.path == source.src
