"""Ray for the stages that scale out (`infer`, `ensemble`, `evaluate`, `train-sweep`, `tune-mss`): starting or
joining a cluster, the paths every node must see, and work over videos that survives a worker's death.

One box per file: ``session`` (a local Ray on 127.0.0.1 only, joining a user's cluster as configured, the address
from flag / ``RAY_ADDRESS`` / config, a loopback multi-node cluster for tests), ``shared`` (inputs and output
folders every node must see, checked with a marker file), ``pool`` (actors that keep a model loaded, one video at a
time each; plain tasks; retries), ``evaluate`` (evaluation's dataset scorer over Ray, outside the evaluation
package; imported from its module, so this package stays light). Ray itself is imported only when a function runs.
"""
from masseg_search.cluster.pool import actor_options, map_on_actors, map_tasks, unwrap_error
from masseg_search.cluster.session import (
    LOCAL,
    LOOPBACK,
    RayConnection,
    alive_nodes,
    check_fits_a_node,
    loopback_cluster,
    loopback_only,
    ray_connection,
    resolve_address,
    start_local_ray,
)
from masseg_search.cluster.shared import absolute, needs_shared_storage, require_shared_paths

__all__ = [
    "LOCAL", "LOOPBACK", "RayConnection", "absolute", "actor_options", "alive_nodes", "check_fits_a_node",
    "loopback_cluster", "loopback_only", "map_on_actors", "map_tasks", "needs_shared_storage", "ray_connection",
    "require_shared_paths", "resolve_address", "start_local_ray", "unwrap_error",
]
