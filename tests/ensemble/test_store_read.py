"""predictions.read_npz (the fast reader ensemble loads logits with) gives what np.load gives, for both formats."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from masseg_search.store.predictions import read_npz


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


def _npz_with_version(path: Path, arrays: dict[str, np.ndarray], version: tuple[int, int]) -> None:
    """An uncompressed .npz whose members use .npy format ``version`` (np.savez writes 1.0)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, values in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, values, version=version)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_read_npz_maps_every_npy_version_and_reuses_parsed_headers(version: tuple[int, int], tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for index in range(3):  # same shapes: the later files reuse the first one's parsed headers
        logits = rng.normal(0, 10, (4, 8, 8)).astype(np.float16)
        _npz_with_version(tmp_path / f"{index}.npz", {"logits": logits, "object_score": np.arange(4, dtype=np.float32)}, version)
        arrays = read_npz(tmp_path / f"{index}.npz", mmap=True)
        assert isinstance(arrays["logits"], np.memmap) == (version != (3, 0))  # 3.0 (utf-8 header) is read, not mapped
        assert np.array_equal(arrays["logits"], logits) and np.array_equal(arrays["object_score"], np.arange(4))


def test_read_npz_refuses_a_malformed_npy_header(tmp_path: Path) -> None:
    np.savez(tmp_path / "object_1.npz", logits=np.zeros((2, 4, 4), np.float16))
    data = bytearray((tmp_path / "object_1.npz").read_bytes())
    start = data.index(b"{'descr'")
    data[start:start + 8] = b"{'desxr'"  # same length: only the header's content is wrong
    (tmp_path / "object_1.npz").write_bytes(bytes(data))
    for mmap in (False, True):
        with pytest.raises(ValueError):
            read_npz(tmp_path / "object_1.npz", mmap=mmap)
