"""One writer per output: `hold_output(store)` holds the output's writer lock for a whole job.

Why: two runs on one `--out` (a paused run resumed after another started over with
`--overwrite` and other options) both exit 0 and leave shards and index that disagree. Every
ingest therefore takes the lock before it looks at the output (so `--overwrite` cannot delete
what a live run is writing), keeps it to the end, and releases it on success, error and Ctrl-C.
A second run is refused in one line naming the holder (host, pid, start time).

- A local folder (or one every node mounts): `fcntl.flock` on `_work/writer-lock.json`. The
  kernel drops the lock when the holding process dies, however it dies (SIGKILL included),
  so a lock is never stale; the file holds the holder's name for the refusal message and is
  deleted on release. On NFS, flock is an NFS lock (Linux >= 2.6.12); filesystems without
  locking make `flock` fail, and the job says so.
- An object store: a lease object at the same name (pipeline/output_lease.py).

The lock lives under `_work/`, the job's scratch (never part of what readers use), and is
removed at the end, so a finished output holds exactly the objects it held before the lock
existed.
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator

from weakly_base.storage import StorageError, Store

from .lock_holder import Holder, OutputLocked, OutputLockLost, parse, refusal, takeover
from .output_lease import DEFAULT_LEASE_SECONDS, ObjectLease
from .work_layout import WRITER_LOCK

__all__ = ["OutputLockLost", "OutputLocked", "hold_output"]


def _same_file(fd: int, path: str) -> bool:
    """Whether `path` still names the file open as `fd`: a holder deletes the lock file as it
    releases, and a run that opened the old file just before must not lock a deleted one."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class LocalLock:
    """flock on a file in the output folder; see the module docstring."""

    def __init__(self, store: Store, rel: str, say: Callable[[str], None]) -> None:
        self.store, self.rel, self.say = store, rel, say
        self.path = store.full(rel)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self._fd = self._take()
        except OutputLocked:
            raise
        except OSError as exc:
            raise self.store.error("lock", self.rel, exc) from None

    def _take(self) -> int:
        for _ in range(100):  # each turn means a holder deleted the file as we opened it
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                continue  # the folder was removed by a holder releasing
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder_of(fd, wait=1.0)
                os.close(fd)
                raise OutputLocked(refusal(self.store.url, holder)) from None
            except BaseException:
                os.close(fd)
                raise
            if not _same_file(fd, self.path):
                os.close(fd)
                continue
            previous = self._holder_of(fd, wait=0.0)
            data = _lock_body(Holder.me())
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            if previous is not None:  # a holder deletes the file as it releases: this one died
                self.say(takeover(self.store.url, previous, "its process has exited"))
            return fd
        raise OutputLocked(f"{self.store.url}: the writer lock keeps changing hands; retry")

    @staticmethod
    def _holder_of(fd: int, wait: float) -> Holder | None:
        """The holder the file names; a holder that has just locked it may not have written
        its name yet, so wait up to `wait` s for one."""
        deadline = time.monotonic() + wait
        while True:
            holder = Holder.from_dict(parse(os.pread(fd, 1 << 16, 0)).get("holder"))
            if holder is not None or time.monotonic() >= deadline:
                return holder
            time.sleep(0.05)

    def check(self) -> None:
        """A flock cannot be lost while its process lives."""

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: see `_same_file`
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):  # `_work/` made only for the lock (a refused run)
            os.rmdir(os.path.dirname(self.path))


def _lock_body(holder: Holder) -> bytes:
    return json.dumps({"holder": holder.to_dict()}, sort_keys=True).encode()


@contextlib.contextmanager
def hold_output(
    store: Store,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    say: Callable[[str], None] = print,
) -> Iterator[LocalLock | ObjectLease]:
    """The output's writer lock, held for the block and released however it ends.

    On an object store a lost lease (taken over while this run was paused longer than
    `lease_seconds`, or not renewable that long) interrupts the main thread, and the block
    ends in `OutputLockLost`, one line; `lock.check()` raises it too."""
    lock: LocalLock | ObjectLease
    if store.is_local:
        lock = LocalLock(store, WRITER_LOCK, say)
    else:
        main = threading.current_thread() is threading.main_thread()

        def lost(message: str) -> None:
            if main:  # stop the main thread, which waits on Ray, at once
                _thread.interrupt_main()

        lock = ObjectLease(store, WRITER_LOCK, lease_seconds, say, lost)
    lock.acquire()
    try:
        yield lock
    except KeyboardInterrupt:
        if getattr(lock, "lost", None):
            raise OutputLockLost(lock.lost) from None
        raise
    finally:
        try:
            lock.release()
        except StorageError as exc:
            say(f"could not release the writer lock: {exc}")
