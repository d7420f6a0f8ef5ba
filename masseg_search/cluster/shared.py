"""Paths every node must see: on a Ray cluster of several nodes (or through Ray Client) the inputs a worker reads
and the folders it writes must be on storage every node mounts at the same path (NFS, a cluster file system).

:func:`require_shared_paths` checks it for real: it writes a marker file into each output folder from the driver
and runs one tiny task on every alive node that looks for the markers and the inputs. A path that some node does
not see is refused with a clear error before any work is scheduled. On one node (a local Ray) nothing is checked.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Mapping

from masseg_search.cluster.session import alive_nodes
from masseg_search.errors import MassegError

MARKER_PREFIX = ".masseg-node-check-"
CHECK_TIMEOUT_S = 300.0  # a node busy starting workers may take a while to run the check task
SHARED_FIX = ("put it on storage every Ray node mounts at the same path (NFS, a cluster file system) and pass that "
              "path, or run without a Ray cluster")


def absolute(path: str | Path | None) -> str | None:
    """The path made absolute on the driver (Ray workers do not run in the driver's working directory)."""
    return None if path is None else str(Path(path).expanduser().resolve())


def needs_shared_storage() -> bool:
    """True when Ray's workers may run where this process's files are not: several nodes, or Ray Client."""
    from ray.util.client import ray as client_ray

    return client_ray.is_connected() or len(alive_nodes()) > 1


def _write_marker(folder: Path) -> Path:
    """A fresh marker file in ``folder`` (created if missing): its name is unique to this check."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{MARKER_PREFIX}{uuid.uuid4().hex}"
    marker.write_text(marker.name)
    return marker


def _missing_on_this_node(paths: list[str]) -> tuple[str, list[str]]:
    """(this node's address, the paths it does not see): runs as a Ray task pinned to one node."""
    import ray

    node = ray.util.get_node_ip_address()
    return node, [path for path in paths if not os.path.exists(path)]


def require_shared_paths(inputs: Mapping[str, str | Path | None] | None = None,
                         outputs: Mapping[str, str | Path | None] | None = None) -> None:
    """Refuse paths that some Ray node does not see, when the work may run on other machines
    (:func:`needs_shared_storage`). ``inputs`` (label -> file or folder) must exist on every node; ``outputs``
    (label -> folder, created here) must be the same folder everywhere: a marker written here must show up there.
    Call it connected to Ray, with absolute paths."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not needs_shared_storage():
        return
    labels: dict[str, str] = {}
    for label, path in (inputs or {}).items():
        if path is not None:
            labels[str(Path(path))] = label
    markers: list[Path] = []
    try:
        for label, folder in (outputs or {}).items():
            if folder is not None:
                marker = _write_marker(Path(folder))
                markers.append(marker)
                labels[str(marker)] = label
        check = ray.remote(num_cpus=0, max_retries=0)(_missing_on_this_node)
        refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                .remote(list(labels)) for node in alive_nodes()]
        ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=CHECK_TIMEOUT_S)
        for ref in waiting:
            ray.cancel(ref, force=True)
        problems = []
        for node, missing in ray.get(ready):
            for path in missing:
                shown = str(Path(path).parent) if Path(path).name.startswith(MARKER_PREFIX) else path
                problems.append((labels[path], shown, node))
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)
    if problems:
        label, path, node = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MassegError(f"the {label} is not visible on Ray node {node}{more}: every node must see the same files",
                          path, SHARED_FIX)
    if waiting:
        raise MassegError(f"{len(waiting)} Ray node(s) did not run the shared-storage check within "
                          f"{CHECK_TIMEOUT_S:g} s", fix="check the cluster (`ray status`) and rerun")

