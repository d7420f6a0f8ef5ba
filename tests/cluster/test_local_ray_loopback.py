"""A Ray the project starts itself listens on 127.0.0.1 only (no dashboard)."""
from __future__ import annotations

import os

from ray_processes import descendants, is_loopback, listening, process_name

from masseg_search.cluster import ray_connection


def test_a_ray_the_project_starts_listens_on_127_0_0_1_only() -> None:
    import ray

    assert not ray.is_initialized(), "another test left its Ray connected"
    with ray_connection(None, num_cpus=1) as connection:  # what train-sweep, infer and tune-mss do without an address
        assert connection.started_here and not connection.remote
        assert ray.get(ray.remote(lambda: os.getpid()).options(num_cpus=1).remote()) != os.getpid()  # a worker too
        sockets = listening(descendants(os.getpid()))
        names = {name for name, _, _ in sockets}
        assert {"gcs_server", "raylet"} <= names, sockets
        assert [(name, address, port) for name, address, port in sockets if not is_loopback(address)] == []
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert not ray.is_initialized()
    assert "gcs_server" not in {process_name(pid) for pid in descendants(os.getpid())}  # stopped with the session
