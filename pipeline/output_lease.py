"""The writer lock of an output on an object store: a lease object, renewed while the job runs.

An object store has no flock, and a process that dies cannot release anything, so the lock is
an object that says who holds it and is only good while its holder keeps rewriting it:

- taken with a conditional create (S3 `If-None-Match: *`: of two runs starting at once
  exactly one PUT succeeds; AWS, MinIO and moto honour it);
- renewed every `ttl / 3` s by a background thread with `If-Match` on the ETag it last wrote,
  so a holder whose lease was taken over finds out at its next renewal instead of overwriting
  the new holder's;
- stale when its process is known dead (same machine, pid gone: taken over at once) or when it
  has not been rewritten for `ttl` s by the store's own clock (`Last-Modified` against the
  response's `Date`; the machines' clocks do not matter); a stale lease is replaced with
  `If-Match` on the ETag that was judged stale, so of two runs taking over one wins;
- deleted (`If-Match` again) when the job ends, fails or is interrupted.

Stores other than S3 (gs://, az://, memory://) get the same protocol without the conditions
(fsspec offers none): it still refuses a second run that starts while the first is running,
but two runs starting within the same few milliseconds could both win, and expiry uses the
holder's clock.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from weakly_base.storage import StorageError, Store

from .lock_holder import Holder, OutputLocked, OutputLockLost, parse, refusal, takeover

# Long enough that a run's renewals (every third of it) survive a store's slow minute; short
# enough that a run killed on another machine blocks the next one for a minute at most.
DEFAULT_LEASE_SECONDS = 60.0


class LeaseExists(Exception):
    """The conditional create found an object there."""


class LeaseChanged(Exception):
    """The object is no longer the one we last saw (replaced or deleted)."""


@dataclass(frozen=True)
class Seen:
    """A lease object as read: its bytes, its version tag, and seconds since it was written."""

    data: bytes
    tag: str
    age: float


def _precondition_failed(exc: BaseException) -> bool:
    """s3fs turns a 412 into a bare OSError (FileExistsError for If-None-Match); the botocore
    error it came from is its cause."""
    for error in (exc, exc.__cause__):
        response = getattr(error, "response", None) or {}
        if response.get("Error", {}).get("Code") == "PreconditionFailed":
            return True
        if response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
            return True
    return False


class S3Backend:
    """Conditional writes through s3fs's own client (the store's endpoint and credentials)."""

    def __init__(self, store: Store, rel: str) -> None:
        self.fs = store.fs
        self.bucket, self.key, _ = self.fs.split_path(store.full(rel))

    def create(self, data: bytes) -> str:
        try:
            reply = self.fs.call_s3(
                "put_object", Bucket=self.bucket, Key=self.key, Body=data, IfNoneMatch="*"
            )
        except FileExistsError:
            raise LeaseExists() from None
        return reply["ETag"]

    def read(self) -> Seen | None:
        from fsspec.asyn import sync

        async def get():
            reply = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            return reply, await reply["Body"].read()

        try:
            reply, data = sync(self.fs.loop, get)
        except FileNotFoundError:
            return None
        now = reply["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        server_now = email.utils.parsedate_to_datetime(now).timestamp() if now else time.time()
        return Seen(data, reply["ETag"], server_now - reply["LastModified"].timestamp())

    def replace(self, data: bytes, tag: str) -> str:
        try:
            reply = self.fs.call_s3(
                "put_object", Bucket=self.bucket, Key=self.key, Body=data, IfMatch=tag
            )
        except FileNotFoundError:
            raise LeaseChanged() from None
        except OSError as exc:
            if _precondition_failed(exc):
                raise LeaseChanged() from None
            raise
        return reply["ETag"]

    def delete(self, tag: str) -> None:
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=tag)
        except FileNotFoundError:
            return
        except OSError as exc:
            if _precondition_failed(exc):
                raise LeaseChanged() from None
            seen = self.read()  # a store without conditional deletes: check, then delete
            if seen is not None and seen.tag == tag:
                self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key)


class PlainBackend:
    """Any fsspec store: the same steps, unconditional (see the module docstring)."""

    def __init__(self, store: Store, rel: str) -> None:
        self.store, self.rel = store, rel

    @staticmethod
    def _tag(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def create(self, data: bytes) -> str:
        if self.store.exists(self.rel):
            raise LeaseExists()
        self.store.put(self.rel, data)
        return self._tag(data)

    def read(self) -> Seen | None:
        if not self.store.exists(self.rel):
            return None
        data = self.store.get(self.rel)
        renewed = parse(data).get("renewed")
        age = time.time() - renewed if isinstance(renewed, (int, float)) else float("inf")
        return Seen(data, self._tag(data), age)

    def replace(self, data: bytes, tag: str) -> str:
        seen = self.read()
        if seen is None or seen.tag != tag:
            raise LeaseChanged()
        self.store.put(self.rel, data)
        return self._tag(data)

    def delete(self, tag: str) -> None:
        seen = self.read()
        if seen is not None and seen.tag == tag:
            self.store.remove(self.rel)


def _holder_in(seen: Seen | None) -> Holder | None:
    return Holder.from_dict(parse(seen.data).get("holder")) if seen is not None else None


def backend_for(store: Store, rel: str):
    if store.protocol in ("s3", "s3a") and hasattr(store.fs, "call_s3"):
        return S3Backend(store, rel)
    return PlainBackend(store, rel)


class ObjectLease:
    """The writer lease on `store` at `rel`; `acquire()`, then `release()` at the end.

    `on_lost(message)` is called once, from the renewal thread, when the lease was taken over
    or could not be renewed for `ttl` s; `check()` raises the same message afterwards."""

    def __init__(
        self,
        store: Store,
        rel: str,
        ttl: float,
        say: Callable[[str], None],
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"--lease-seconds {ttl:g}: use a number > 0")
        self.store, self.rel, self.ttl = store, rel, float(ttl)
        self.say, self.on_lost = say, on_lost
        self.holder = Holder.me()
        self.lost: str | None = None
        self._backend = backend_for(store, rel)
        self._tag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        lease = {"holder": self.holder.to_dict(), "ttl": self.ttl, "renewed": time.time()}
        return json.dumps(lease, sort_keys=True).encode()

    def acquire(self) -> None:
        try:
            self._tag = self._take()
        except (StorageError, OutputLocked):
            raise
        except Exception as exc:  # noqa: BLE001 - every backend raises its own types
            raise self.store.error("write", self.rel, exc) from None
        self._thread = threading.Thread(target=self._renew, name="output-lease", daemon=True)
        self._thread.start()

    def _take(self) -> str:
        for _ in range(10):  # each turn means another run changed the lease in between
            try:
                return self._backend.create(self._body())
            except LeaseExists:
                pass
            seen = self._backend.read()
            if seen is None:
                continue  # released just now
            lease = parse(seen.data)
            holder = Holder.from_dict(lease.get("holder"))
            ttl = lease.get("ttl")
            ttl = float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else self.ttl
            gone = holder.gone() if holder else None
            if gone is False:
                raise OutputLocked(refusal(self.store.url, holder, ", running on this machine"))
            if gone is None and seen.age <= ttl:
                left = max(0.0, ttl - seen.age)
                detail = (
                    f", lease renewed {seen.age:.0f} s ago, expires in {left:.0f} s unless renewed"
                )
                raise OutputLocked(refusal(self.store.url, holder, detail))
            why = (
                "its process has exited"
                if gone
                else f"its lease was last renewed {seen.age:.0f} s ago (it expires after {ttl:g} s)"
            )
            try:
                tag = self._backend.replace(self._body(), seen.tag)
            except LeaseChanged:
                continue
            self.say(takeover(self.store.url, holder, why))
            return tag
        raise OutputLocked(f"{self.store.url}: the writer lease keeps changing hands; retry")

    def _renew(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl / 3):
            try:
                self._tag = self._backend.replace(self._body(), self._tag)
                last_ok = time.monotonic()
                continue
            except LeaseChanged:
                seen = self._read_quietly()
                holder = _holder_in(seen)
                if seen is not None and self._mine(holder):
                    # our own renewal whose reply was lost (a timeout after the write landed)
                    self._tag, last_ok = seen.tag, time.monotonic()
                    continue
                by = f" by another run ({holder.describe()})" if holder else ""
                why = f"the writer lease on {self.store.url} was taken over{by}"
            except Exception as exc:  # noqa: BLE001 - a blip: try again until the lease runs out
                if time.monotonic() - last_ok <= self.ttl:
                    continue
                why = (
                    f"the writer lease on {self.store.url} could not be renewed "
                    f"({type(exc).__name__}: {exc})"
                )
            self._lose(
                f"{why}; this run stops so that two runs do not write one output (it was not "
                f"renewed for {time.monotonic() - last_ok:.0f} s: was the run paused?)"
            )
            return

    def _mine(self, holder: Holder | None) -> bool:
        return holder is not None and holder.token == self.holder.token

    def _read_quietly(self) -> Seen | None:
        try:
            return self._backend.read()
        except Exception:  # noqa: BLE001 - only for the message
            return None

    def _lose(self, message: str) -> None:
        self.lost = " ".join(message.split())
        if self.on_lost is not None and not self._stop.is_set():
            self.on_lost(self.lost)

    def check(self) -> None:
        if self.lost:
            raise OutputLockLost(self.lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost or self._tag is None:
            return
        try:
            try:
                self._backend.delete(self._tag)
            except LeaseChanged:
                seen = self._backend.read()  # a renewal whose reply was lost, or a new holder
                if seen is not None and self._mine(_holder_in(seen)):
                    self._backend.delete(seen.tag)
        except LeaseChanged:
            pass  # not ours any more: leave the new holder's lease alone
        except Exception as exc:  # noqa: BLE001
            raise self.store.error("delete", self.rel, exc) from None
        self._tag = None
