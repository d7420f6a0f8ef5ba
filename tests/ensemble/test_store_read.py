"""predictions.read_npz (the fast reader ensemble loads logits with) gives what np.load gives, for both formats."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from masseg_search.predictions import read_npz


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("writer", [np.savez, np.savez_compressed])
def test_read_npz_matches_np_load(writer, mmap: bool, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 10, (5, 16, 16)).astype(np.float16)
    scores = rng.normal(0, 1, 5).astype(np.float32)
    writer(tmp_path / "object_1.npz", logits=logits, object_score=scores)
    arrays = read_npz(tmp_path / "object_1.npz", mmap=mmap)
    assert isinstance(arrays["logits"], np.memmap) == (mmap and writer is np.savez)
    assert set(arrays) == {"logits", "object_score"}
    assert arrays["logits"].dtype == np.float16 and np.array_equal(arrays["logits"], logits)
    assert np.array_equal(arrays["object_score"], scores)


def test_read_npz_refuses_a_truncated_file(tmp_path: Path) -> None:
    import zipfile

    np.savez(tmp_path / "object_1.npz", logits=np.zeros((2, 4, 4), np.float16), object_score=np.zeros(2, np.float32))
    data = (tmp_path / "object_1.npz").read_bytes()
    (tmp_path / "object_1.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises((ValueError, OSError, zipfile.BadZipFile)):
        read_npz(tmp_path / "object_1.npz")


def test_read_npz_maps_fortran_order_arrays(tmp_path: Path) -> None:
    values = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(4, 6))
    np.savez(tmp_path / "f.npz", values=values)
    mapped = read_npz(tmp_path / "f.npz", mmap=True)["values"]
    assert np.array_equal(mapped, values)
