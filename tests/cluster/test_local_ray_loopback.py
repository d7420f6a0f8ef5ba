"""A Ray the project starts itself listens on 127.0.0.1 only (no dashboard); which Ray a command joins."""
from __future__ import annotations

import os

import pytest
from ray_processes import descendants, is_loopback, listening, process_name

from masseg_search.cluster import ray_connection, resolve_address
from masseg_search.config import config_from_dict
from masseg_search.errors import MassegError


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


def test_the_address_is_the_flag_then_RAY_ADDRESS_then_the_config(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None, None) is None  # no Ray: infer runs in this process
    assert resolve_address(None, "local") == "local"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address(None, "local") == "10.0.0.1:6379"
    assert resolve_address("auto", "local") == "auto"
    section = config_from_dict({"infer": {"ray_address": "local", "gpus_per_worker": 0.5}}).infer
    assert (section.ray_address, section.gpus_per_worker, section.workers) == ("local", 0.5, None)
    with pytest.raises(MassegError, match="infer.gpus_per_worker"):
        config_from_dict({"infer": {"gpus_per_worker": 2}})  # a worker runs one model on one GPU
