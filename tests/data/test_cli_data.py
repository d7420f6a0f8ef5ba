"""`masseg-search data synth|check|scene-types` end to end through the CLI entry point."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from masseg_search.cli import main
from masseg_search.data.layout import read_mask, write_mask
from masseg_search.data.scene_types import load_scene_types


def test_synth_check_scene_types(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "synthetic"
    assert main(["data", "synth", "--out", str(root), "--videos", "6", "--seed", "2", "--height", "48", "--width", "64", "--frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "wrote 6 videos of 4 frames at 48x64" in out and "train 3" in out
    assert (root / "val.txt").read_text().split()

    assert main(["data", "check", str(root), "--split", "val"]) == 0
    assert "0 errors, 0 warnings" in capsys.readouterr().out

    table_path = tmp_path / "types.csv"
    assert main(["data", "scene-types", str(root), "--split-list", str(root / "train.txt"), "--out", str(table_path)]) == 0
    out = capsys.readouterr().out
    table = load_scene_types(table_path)
    assert set(table["video"]) == set((root / "train.txt").read_text().split())
    assert f"wrote {len(table)} objects of 3 videos" in out and "objects per scene type: small" in out

    assert main(["data", "scene-types", str(root)]) == 0  # no --out: the CSV on stdout
    assert capsys.readouterr().out.startswith("video,object_id,scene_type,")

    first = root / "Annotations" / "video_0000" / "00000.png"
    write_mask(first, np.zeros_like(read_mask(first)))
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"ERROR   {first}: empty first-frame mask" in out and "fix: draw the objects" in out
    assert "empty-first-mask" in out and "1 errors, 0 warnings" in out


def test_bad_input_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "scene-types", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("masseg-search: error:") and "dataset root not found" in err and "Traceback" not in err
    assert main(["data", "check", str(tmp_path), "--split", "val"]) == 1
    assert "no list file for split 'val'" in capsys.readouterr().err


def test_data_commands_do_not_import_torch(tmp_path: Path) -> None:
    script = f"""
import sys
from masseg_search.cli import main
root = {str(tmp_path / "d")!r}
assert main(["data", "synth", "--out", root, "--videos", "2", "--height", "32", "--width", "32", "--frames", "3"]) == 0
assert main(["data", "check", root]) == 0
assert main(["data", "scene-types", root, "--out", root + "/types.csv"]) == 0
print(sorted(name for name in ("torch", "sam2", "ray") if name in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
