"""The project's one exception type: its message names the file and the fix, and the CLI prints it bare."""
from __future__ import annotations

from pathlib import Path


class MassegError(Exception):
    """A user-facing error: what went wrong, where (a path), and how to fix it."""

    def __init__(self, message: str, path: str | Path | None = None, fix: str | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.fix = fix
        parts = [f"{path}: {message}" if path is not None else message]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))
