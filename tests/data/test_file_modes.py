"""Files written through a temporary sibling get the mode a plain open() gives, not mkstemp's owner-only 0600."""
from __future__ import annotations

import os
import stat

import numpy as np

from masseg_search.data.layout import atomic_write_bytes, write_mask
from masseg_search.ensemble.submission import write_submission_zip


def expected_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def test_atomic_writes_and_submission_zips_are_readable_by_the_team(tmp_path):
    report = tmp_path / "report" / "report.html"
    atomic_write_bytes(report, b"<html></html>")
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")
    assert stat.S_IMODE(report.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == expected_mode()
    write_mask(tmp_path / "masks" / "video" / "00000.png", np.ones((4, 4), np.uint8))
    archive = write_submission_zip(tmp_path / "masks", tmp_path / "out" / "submission.zip")
    assert stat.S_IMODE(archive.stat().st_mode) == expected_mode()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
