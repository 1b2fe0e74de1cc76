"""Ray plumbing for the ingest driver: start (or join) Ray, run rounds of tasks with a progress
bar while folding each result as it comes (so the driver keeps aggregates, not every result),
and turn a remote storage failure into the same one-line error a local one gives."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterable, Iterator

from weakly_base.storage import StorageError


def init_ray(address: str | None, num_cpus: int | None):
    """The `ray` module, initialised: the cluster at `address`, else a local Ray. Storage
    options reach the tasks inside each `Store`, not through the workers' environment."""
    import ray

    global _STARTED_HERE
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": True}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
        _STARTED_HERE = True
        atexit.register(shutdown_ray)  # runs before Ray's own hook (atexit is last in, first out)
    return ray


_STARTED_HERE = False


def shutdown_ray() -> None:
    """Disconnect from (and stop a local) Ray that `init_ray` started, at interpreter exit
    before Ray's own exit hook, which first sleeps 0.5 s for worker log lines still in flight:
    every task's result is in by then, and what matters from a task is in its result (a line
    a worker printed just before returning may be cut). A Ray the caller started is left
    alone."""
    global _STARTED_HERE
    if _STARTED_HERE:
        import ray

        ray.shutdown()
        _STARTED_HERE = False


class Shared:
    """A large read-only object handed to many tasks by reference and materialised once per
    worker process: Ray would otherwise unpickle it for every task (the compiled lexicon is
    ~54 MiB pickled, ~0.5 s per task, more than a 10k-row manifest file costs to process)."""

    _cache: dict = {}

    def __init__(self, ray, value) -> None:
        self.refs = [ray.put(value)]  # inside a list, so Ray does not resolve it per task

    def get(self):
        import ray

        key = self.refs[0].hex()
        if key not in Shared._cache:
            Shared._cache.clear()  # one job's object at a time per worker
            Shared._cache[key] = ray.get(self.refs[0])
        return Shared._cache[key]


def resolve(value):
    """`value`, or what a `Shared` stands for."""
    return value.get() if isinstance(value, Shared) else value


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", disable=not enabled, leave=False)


def _get(ray, ref):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, StorageError):  # one clear line, not a remote traceback
            raise type(exc.cause)(str(exc.cause)) from None
        raise


def fold_results(ray, refs: list, desc: str, enabled: bool, consume: Callable) -> None:
    """`consume(i, result)` for every task, in submission order (so float sums come out the
    same on every run), each result dropped once consumed."""
    bar = _progress(len(refs), desc, enabled)
    for i, ref in enumerate(refs):
        consume(i, _get(ray, ref))
        refs[i] = None
        bar.update(1)
    bar.close()


def run_windowed(
    ray, calls: Iterable[tuple], window: int, desc: str, enabled: bool, consume: Callable
) -> None:
    """Submit `(remote_fn, args, tag)` calls keeping at most `window` in flight and
    `consume(tag, result)` as each finishes: billions of rows are millions of chunks, which
    the driver must never hold as one list of task references."""
    bar = _progress(None, desc, enabled)
    in_flight: dict = {}
    calls_iter: Iterator = iter(calls)
    exhausted = False
    while in_flight or not exhausted:
        while not exhausted and len(in_flight) < window:
            try:
                fn, args, tag = next(calls_iter)
            except StopIteration:
                exhausted = True
                break
            in_flight[fn.remote(*args)] = tag
        if not in_flight:
            break
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            consume(in_flight.pop(ref), _get(ray, ref))
            bar.update(1)
    bar.close()
