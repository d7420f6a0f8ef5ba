"""``<out>/pipeline.yaml``: what each stage of `run` read, wrote and chose, written atomically after every change.

Layout::

    pipeline: masseg-search run
    command: masseg-search run --config configs/mose.yaml --out results/mose   # what made this folder
    config_file: results/mose/config.yaml      # the resolved config every recorded command passes
    stages:
      tune-mss:
        status: done                   # running (started, not finished: a rerun continues it) | done
        fingerprint: 3f2a...           # sha256 of config + inputs + upstream: equal = nothing it reads changed
        config: {mss: {...}, ...}      # the resolved config keys the stage reads
        inputs: {checkpoint: {path: ..., sha256: ...}}
        upstream: 9bc1...              # sha256 of the earlier stages' choices
        outputs: [results/mose/mss/val/best_configs.yaml, ...]
        choices: {types: {small: [7.5, -4.0]}, ...}
        commands: [masseg-search tune-mss --config ... --study val --set model.checkpoint=...]
        started: 2025-06-01T10:00:00  finished: ...  seconds: 812.4
    digests: {<absolute path>: {size: ..., mtime_ns: ..., sha256: ...}}   # not rehashed while size and time hold

A stage is recorded ``running`` (with its fingerprint) before it starts and ``done`` only after its outputs are
complete, each time by an atomic rename: a kill at any moment leaves the previous whole file.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from masseg_search.data.layout import atomic_write_bytes
from masseg_search.errors import MassegError

RECORD_FILE = "pipeline.yaml"
RUNNING, DONE = "running", "done"


def fingerprint(value: Any) -> str:
    """sha256 of a JSON-able value (keys sorted): equal values, equal fingerprints."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def now() -> str:
    """The local time to the second, ISO format."""
    return datetime.now().isoformat(timespec="seconds")


@dataclass
class PipelineRecord:
    """The record file of one run folder, kept in memory and rewritten whole on every change."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> PipelineRecord:
        """Read ``path`` (an empty record when it does not exist yet)."""
        path = Path(path)
        if not path.is_file():
            return cls(path, {"pipeline": "masseg-search run", "stages": {}, "digests": {}})
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise MassegError(f"not valid YAML ({exc})", path, "delete it to run every stage again") from None
        if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
            raise MassegError("not a pipeline record (no stages mapping)", path, "delete it to run every stage again")
        data.setdefault("stages", {})
        data.setdefault("digests", {})
        return cls(path, data)

    def save(self) -> None:
        """Write the whole record atomically (the run's command and config first, the digests last)."""
        order = ["pipeline", "command", "config_file", "config_source", "stages", "digests"]
        data = {key: self.data[key] for key in order if key in self.data}
        data.update({key: value for key, value in self.data.items() if key not in data})
        atomic_write_bytes(self.path, yaml.safe_dump(data, sort_keys=False, width=120, default_flow_style=None).encode())

    def stage(self, name: str) -> dict[str, Any] | None:
        """The record of one stage, or None."""
        return self.data["stages"].get(name)

    def set_stage(self, name: str, entry: dict[str, Any]) -> None:
        """Replace one stage's record and save."""
        self.data["stages"][name] = entry
        self.save()

    def file_digest(self, path: str | Path | None) -> str | None:
        """sha256 of a file's bytes (None for None or a missing file), taken from the record while the file's size
        and modification time are the recorded ones (a multi-GB checkpoint is hashed once)."""
        if path is None:
            return None
        path = Path(path).resolve()
        if not path.is_file():
            return None
        stat = path.stat()
        cached = self.data["digests"].get(str(path))
        if cached and cached.get("size") == stat.st_size and cached.get("mtime_ns") == stat.st_mtime_ns:
            return cached["sha256"]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        self.data["digests"][str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
        return digest.hexdigest()

    def file_input(self, path: str | Path | None) -> dict[str, Any] | None:
        """``{path, sha256}`` of an input file (None for no file)."""
        return None if path is None else {"path": str(path), "sha256": self.file_digest(path)}
