"""Reading a shard visit in a background thread, for object stores.

On s3:// a read waits a round trip; a loader stream keeps several shard visits open at once
(train/sampler.py) and knows which open next, so each visit is read ahead by its own thread into
a small queue: requests to different shards overlap, and the next visits are in flight before
they are needed. What is read, and in what order it is handed out, is unchanged: the thread
only runs the same generator earlier.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

_END = object()


class Prefetched:
    """Iterate `make()` in a daemon thread, at most `depth` items ahead. Exceptions raised by
    the generator are re-raised in the consumer, in order; `close()` stops the thread."""

    def __init__(self, make: Callable[[], Iterator[object]], depth: int = 8) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(make,), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make: Callable[[], Iterator[object]]) -> None:
        it = None
        try:
            it = make()
            for item in it:
                if not self._put((item, None)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer as is
            self._put((_END, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Prefetched:
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        item, exc = self._queue.get()
        if item is _END:
            self._done = True
            self._stop.set()
            if exc is not None:
                raise exc
            raise StopIteration
        return item

    def close(self) -> None:
        self._done = True
        self._stop.set()
