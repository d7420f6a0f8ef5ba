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
from masseg_search.moseplus import fake_sources as fake
from masseg_search.moseplus import merge, writer
from masseg_search.moseplus.merge import build_moseplus


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sources")
    made = {
        "davis": fake.write_fake_davis(root / "davis", videos=2),
        "ytvos": fake.write_fake_ytvos(root / "ytvos", videos=2, frames=21),
        "vis": fake.write_fake_vis(root / "vis", videos=2, layout="2019"),
        "ovis": fake.write_fake_ovis(root / "ovis", videos=2),
        "burst": fake.write_fake_burst(root / "burst", videos=2, frames=11),
    }
    mose = fake.write_fake_mose(root / "mose", videos=3)
    write_split_list(root / "mose_holdout.txt", ["mose002"])
    return {"made": made, "mose": mose, "holdout": root / "mose_holdout.txt"}


def config_values(sources: dict, out: Path, **overrides) -> dict:
    made = sources["made"]
    entries = [{"name": name, "format": name, "src": str(s.src), **({"ann": str(s.ann)} if s.format in ("vis", "ovis", "burst") else {})}
               for name, s in made.items()]
    entries[1]["frames"] = "all"  # YouTube-VOS with unlabelled frames in between
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
    again = build_moseplus(config_from_dict(config_values(sources, out)), progress=False)
    assert snapshot(again.root) == before  # idempotent


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
