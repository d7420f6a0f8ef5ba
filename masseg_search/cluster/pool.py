"""Work over videos on Ray: one item at a time per actor (a worker that keeps a model loaded), or plain tasks.

Both yield ``(item, result)`` as items finish. A worker process that dies loses only the item it was running: Ray
restarts the actor and retries that call (``max_restarts`` / ``max_task_retries``, tasks: ``max_retries``); an
actor gone for good hands its item to the others. An error the item itself raised (a :class:`MassegError`: a bad
video, a mismatched output folder) ends the run with that error, as it would locally.
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Any, Callable, Iterable, Iterator

from masseg_search.errors import MassegError

ACTOR_RESTARTS = 4  # a worker process may die this many times (killed, out of memory, node lost) and come back
CALL_RETRIES = 2  # a call whose worker died is run again this many times by Ray itself
ITEM_ATTEMPTS = 3  # an item whose actor is gone for good goes to another actor this many times


def actor_options(num_cpus: float, num_gpus: float) -> dict[str, Any]:
    """``.options()`` of a worker actor: its resources and Ray's restart-and-retry settings."""
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_restarts": ACTOR_RESTARTS,
            "max_task_retries": CALL_RETRIES}


def unwrap_error(error: BaseException) -> BaseException:
    """The project's own error inside a Ray task error (printed bare by the CLI); anything else as it is."""
    from ray.exceptions import RayTaskError

    cause = getattr(error, "cause", None) if isinstance(error, RayTaskError) else None
    return cause if isinstance(cause, MassegError) else error


def map_on_actors(actors: list[Any], submit: Callable[[Any, Any], Any], items: Iterable[Any],
                  ready: Callable[[Any], Any]) -> Iterator[tuple[Any, Any]]:
    """Run ``submit(actor, item)`` (an ObjectRef) for every item, one at a time per actor, on actors as they come
    alive (``ready(actor)``: a ref that resolves once it runs); yield ``(item, result)`` as items finish. An actor
    whose resources never come free just never takes an item."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    queue = deque(items)
    attempts: Counter = Counter()
    starting = {ready(actor): actor for actor in actors}
    idle: list[Any] = []
    running: dict[Any, tuple[Any, Any]] = {}
    while queue or running:
        while idle and queue:
            actor, item = idle.pop(), queue.popleft()
            running[submit(actor, item)] = (actor, item)
        if not running and not starting:
            raise MassegError(f"every Ray worker is gone with {len(queue)} item(s) left",
                              fix="check the cluster (`ray status`) and rerun: finished work is kept")
        done, _ = ray.wait([*running, *starting], num_returns=1)
        ref = done[0]
        if ref in starting:
            actor = starting.pop(ref)
            try:
                ray.get(ref)
                idle.append(actor)
            except RayActorError:
                pass  # this worker could not start or restart: the others carry on
            except RayTaskError as exc:
                raise unwrap_error(exc) from None
            continue
        actor, item = running.pop(ref)
        try:
            result = ray.get(ref)
        except RayActorError as exc:  # Ray's own retries are spent or the actor is gone: another one takes it
            attempts[item] += 1
            if attempts[item] >= ITEM_ATTEMPTS:
                raise MassegError(f"{item!r}: its Ray worker died {attempts[item]} times ({exc})",
                                  fix="look at the worker's log (out of memory?), then rerun: finished work is kept") from None
            queue.appendleft(item)
            starting[ready(actor)] = actor  # back in use if Ray restarted it, dropped if it is dead
            continue
        except RayTaskError as exc:
            raise unwrap_error(exc) from None
        idle.append(actor)
        yield item, result


def map_tasks(function: Callable[..., Any], jobs: Iterable[Any], num_cpus: float = 1,
              key: Callable[[Any], Any] = lambda job: job) -> Iterator[tuple[Any, Any]]:
    """Run ``function(job)`` as one Ray task per job (a task whose worker dies is run again, up to Ray's
    ``max_retries``); yield ``(key(job), result)`` as jobs finish."""
    import ray
    from ray.exceptions import RayTaskError

    task = ray.remote(function).options(num_cpus=num_cpus, max_retries=CALL_RETRIES + 1)
    running = {task.remote(job): key(job) for job in jobs}
    try:
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            item = running.pop(done[0])
            try:
                result = ray.get(done[0])
            except RayTaskError as exc:
                raise unwrap_error(exc) from None
            yield item, result
    finally:
        for ref in running:  # an error or an interrupted caller: the rest is not needed
            ray.cancel(ref)
