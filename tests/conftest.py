"""Shared fixtures: every test's data comes from the project's own synthetic module and tiny SAM2 checkpoints; a
throw-away PostgreSQL server for the Optuna storage tests."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
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


def _postgres_binaries() -> Path | None:
    for candidate in [shutil.which("initdb"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)]:
        if candidate and Path(candidate).with_name("pg_ctl").exists():
            return Path(candidate).resolve().parent
    return None


@pytest.fixture()
def postgres_url():
    """A throw-away PostgreSQL server on 127.0.0.1 with a password user; yields (url without password, env)."""
    bin_dir = _postgres_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install -y postgresql")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
        run_as = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="mss-pg-", dir="/tmp"))
    (base / "pw").write_text("mss-secret\n")
    if owner is not None:
        os.chmod(base, 0o755)
        for path in (base, base / "pw"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = base / "data"
    subprocess.run(run_as + [str(bin_dir / "initdb"), "-D", str(data), "-U", "mss", f"--pwfile={base / 'pw'}",
                             "--auth=scram-sha-256"], check=True, capture_output=True)
    subprocess.run(run_as + [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
                             f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    env = {"PGPASSWORD": "mss-secret"}
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mss", "studies"],
                       check=True, capture_output=True, env=dict(os.environ, **env))
        yield f"postgresql://mss@127.0.0.1:{port}/studies", env
    finally:
        subprocess.run(run_as + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        os.environ.pop("PGPASSWORD", None)
