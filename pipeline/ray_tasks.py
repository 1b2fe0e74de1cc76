"""Ray plumbing for the ingest driver: start (or join) Ray, and wait for a batch of tasks with a
progress bar, turning a remote `WriteFailed` into the same one-line error a local one gives."""

from __future__ import annotations

from .shards import WriteFailed


def init_ray(address: str | None, num_cpus: int | None):
    """The `ray` module, initialised: the cluster at `address`, else a local Ray."""
    import ray

    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": True}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    return ray


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", disable=not enabled, leave=False)


def wait_all(ray, refs: list, desc: str, enabled: bool) -> list:
    """Results in submission order, with a progress bar as tasks finish."""
    pending, bar = list(refs), _progress(len(refs), desc, enabled)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        bar.update(len(done))
    bar.close()
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, WriteFailed):  # one clear line, not a remote traceback
            raise WriteFailed(str(exc.cause)) from None
        raise
