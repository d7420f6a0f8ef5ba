"""Starting or joining Ray: a Ray this project starts listens on 127.0.0.1 only; a cluster the user runs is joined
as the user configured it.

Ray 2.60 resolves 127.0.0.1 to the machine's interface address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
(``ray._private.services.resolve_ip_for_localhost``), so a plain ``ray.init()`` has its GCS, raylets and workers
listen on every interface. :func:`start_local_ray` sets that switch while the node starts (the daemons it spawns
keep it) and turns the dashboard off; everything then binds 127.0.0.1. The address a command joins is
``--ray-address``, else ``RAY_ADDRESS``, else the config's (:func:`resolve_address`); ``local`` starts a Ray here.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

from masseg_search.errors import MassegError

LOOPBACK = "127.0.0.1"
LOCAL = "local"  # the address that starts a Ray on this machine (as Ray's own ray.init(address="local"))
CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def resolve_address(flag: str | None, configured: str | None = None) -> str | None:
    """The Ray address a command uses: the flag, else ``RAY_ADDRESS``, else the config's; None = no Ray."""
    for value in (flag, os.environ.get("RAY_ADDRESS"), configured):
        if value:
            return str(value)
    return None


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """While inside, a Ray node started here keeps 127.0.0.1 as its address and listens there only, and a driver
    joins 127.0.0.1 as given (the switch is read at Ray's import, so the module's copy is set too); the GCS,
    raylet and worker processes started meanwhile inherit the variable. Outside, Ray behaves as configured."""
    from ray._private import ray_constants

    previous_env = os.environ.get(CLUSTER_SWITCH)
    previous_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTER_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous_flag
        if previous_env is None:
            os.environ.pop(CLUSTER_SWITCH, None)
        else:
            os.environ[CLUSTER_SWITCH] = previous_env


def start_local_ray(num_cpus: int | None = None, num_gpus: int | None = None, log_to_driver: bool = False,
                    **init_options: Any) -> Any:
    """Start a new single-node Ray in this process, listening on 127.0.0.1 only, without dashboard; returns what
    ``ray.init`` returns. ``RAY_ADDRESS`` is ignored here (``address="local"``): joining is :func:`ray_connection`'s."""
    import ray

    with loopback_only():
        return ray.init(address=LOCAL, num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                        log_to_driver=log_to_driver, _node_ip_address=LOOPBACK, **init_options)


@contextlib.contextmanager
def loopback_cluster(nodes: list[dict[str, Any]]) -> Iterator[Any]:
    """A Ray cluster of several nodes on this machine, every one on 127.0.0.1 (Ray's own multi-node test helper,
    ``ray.cluster_utils.Cluster``); each dict is one node's ``num_cpus`` / ``num_gpus`` (logical GPUs are fine).
    Yields the cluster (``.address`` to join it); every node is stopped on the way out. For tests and benchmarks:
    ``ray start --address`` cannot add a second node on 127.0.0.1."""
    from ray.cluster_utils import Cluster

    with loopback_only():
        cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **nodes[0]})
        try:
            for node in nodes[1:]:
                cluster.add_node(**node)
            cluster.wait_for_nodes()
        except BaseException:
            cluster.shutdown()
            raise
    try:
        yield cluster
    finally:
        cluster.shutdown()


@dataclass(frozen=True)
class RayConnection:
    """What :func:`ray_connection` joined: ``started_here`` when it started a local Ray (stopped on exit)."""

    address: str | None
    started_here: bool

    @property
    def remote(self) -> bool:
        """True for a cluster the user runs (its nodes may be other machines)."""
        return not self.started_here and self.address not in (None, LOCAL)


@contextlib.contextmanager
def ray_connection(address: str | None, num_cpus: int | None = None, log_to_driver: bool = False) -> Iterator[RayConnection]:
    """Join the Ray at ``address`` (``auto``, ``host:port``, ``ray://...``) as the user configured it, or start a
    loopback-only one here for None / ``local`` (:func:`start_local_ray`; stopped on the way out). A Ray this
    process is already connected to is used and left running."""
    import ray

    address = address or None
    if ray.is_initialized():
        yield RayConnection(address, started_here=False)
        return
    if address in (None, LOCAL):
        start_local_ray(num_cpus=num_cpus, log_to_driver=log_to_driver)
    else:
        try:
            ray.init(address=address, log_to_driver=log_to_driver)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise MassegError(f"cannot join the Ray cluster at {address!r} ({exc})",
                              fix="start it with `ray start --head` (see README, On a cluster), check RAY_ADDRESS, "
                              "or pass --ray-address local to start one on this machine") from None
    try:
        yield RayConnection(address, started_here=address in (None, LOCAL))
    finally:
        ray.shutdown()  # disconnects from a remote cluster; stops the processes of a local one


def alive_nodes() -> list[dict[str, Any]]:
    """``ray.nodes()`` entries of the nodes that are alive."""
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def check_fits_a_node(cpus: float, gpus: float, what: str, fix: str) -> None:
    """Fail now, with the fix, when no node of the cluster has ``cpus`` CPUs and ``gpus`` GPUs (Ray would leave
    the task or actor PENDING forever)."""
    nodes = alive_nodes()
    for node in nodes:
        resources = node.get("Resources", {})
        if float(resources.get("CPU", 0)) >= cpus and float(resources.get("GPU", 0)) >= gpus:
            return
    have = ", ".join(f"{node.get('NodeManagerAddress')}: {node.get('Resources', {}).get('CPU', 0):g} CPU, "
                     f"{node.get('Resources', {}).get('GPU', 0):g} GPU" for node in nodes)
    raise MassegError(f"{what} asks for {cpus:g} CPU(s) and {gpus:g} GPU(s), and no Ray node has them ({have})",
                      fix=fix)
