"""Shared fixtures: every test's data comes from the project's own synthetic module and tiny SAM2 checkpoints."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores shared by several test processes: keep each one's math libraries to one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MOSE-layout synthetic dataset (64 px, a few videos per split), made once per session."""
    from masseg_search.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    generate_dataset(root, videos=8, seed=0, height=64, width=64, frames=8)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny SAM2 (configs/models/tiny64.yaml) saved as a real official-format checkpoint."""
    from masseg_search.model.build import init_checkpoint

    path = tmp_path_factory.mktemp("checkpoints") / "tiny64.pt"
    init_checkpoint("tiny64", path, seed=0)
    return path
