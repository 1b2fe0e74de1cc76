"""Where a dataset lives: a local folder or any fsspec URL (s3://, gs://, az://, ...).

Every file the ingest job writes goes through `Store.put`, which makes one object whole or not
at all: on a local disk by writing `name.tmp`, fsyncing and renaming; on an object store by one
PUT (or one multipart upload, which is invisible until completed). That is the whole commit
protocol the job needs, so it holds on both kinds of storage: a reader never sees a half-written
object, and a resumed job trusts only objects that exist.

A `Store` is a URL plus storage options, so it pickles small and each Ray task reopens the
filesystem on its own node.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from functools import cached_property

import fsspec


class StorageError(RuntimeError):
    """A read or write against the dataset's storage failed; the message is one line naming the
    object and the cause, and says that rerunning resumes."""


def is_url(path: str) -> bool:
    return "://" in str(path)


def normalise_url(path: str | os.PathLike) -> str:
    """A URL as given (without a trailing slash), or a local path made absolute: Ray workers on
    other nodes do not share the driver's working directory."""
    text = os.fspath(path)
    if is_url(text):
        if text.startswith("file://"):
            return os.path.abspath(text[len("file://") :])
        return text.rstrip("/")
    return os.path.abspath(text)


def _reason(exc: BaseException) -> str:
    """The cause of a storage failure in words a user can act on."""
    name = type(exc).__name__
    text = str(exc) or name
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return (
            "no credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, "
            "or pass them in --storage-options)"
        )
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"):
        return f"storage endpoint unreachable ({text})"
    if isinstance(exc, PermissionError):
        return f"permission denied ({text})"
    if isinstance(exc, FileNotFoundError):
        return f"not found: bucket or folder does not exist ({text})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{name}: {text}"


@dataclass(frozen=True)
class Store:
    """A dataset root: `url` is a local absolute path or an fsspec URL."""

    url: str
    storage_options: dict = field(default_factory=dict)

    @classmethod
    def at(cls, path: str | os.PathLike, storage_options: dict | None = None) -> Store:
        return cls(normalise_url(path), dict(storage_options or {}))

    @property
    def is_local(self) -> bool:
        return not is_url(self.url)

    @cached_property
    def _fs_root(self) -> tuple:
        fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs, root.rstrip("/")

    @property
    def fs(self):
        return self._fs_root[0]

    def full(self, rel: str) -> str:
        """The filesystem path of `rel` under the root (what `fs` methods take)."""
        root = self._fs_root[1]
        return f"{root}/{rel}" if rel else root

    def url_of(self, rel: str) -> str:
        """`rel` as a user would name it: the dataset URL joined with it."""
        return f"{self.url}/{rel}" if rel else self.url

    def child(self, rel: str) -> Store:
        return Store(self.url_of(rel), self.storage_options)

    def __getstate__(self) -> dict:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "url", state["url"])
        object.__setattr__(self, "storage_options", state["storage_options"])

    # -- writing -------------------------------------------------------------------------------

    def put(self, rel: str, data: bytes) -> None:
        """Write `data` as the whole object `rel`: complete or absent, never partial."""
        try:
            if self.is_local:
                _put_local(self.full(rel), data)
            else:
                self.fs.pipe_file(self.full(rel), data)
        except Exception as exc:  # noqa: BLE001 - every backend raises its own types
            raise self.error("write", rel, exc) from None

    def remove(self, rel: str) -> None:
        """Delete one object if it exists."""
        try:
            if self.fs.exists(self.full(rel)):
                self.fs.rm_file(self.full(rel))
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self.error("delete", rel, exc) from None

    def remove_tree(self, rel: str = "") -> None:
        """Delete everything under `rel` (the whole dataset when empty)."""
        try:
            if self.fs.exists(self.full(rel)):
                self.fs.rm(self.full(rel), recursive=True)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self.error("delete", rel, exc) from None
        self.refresh()

    # -- reading -------------------------------------------------------------------------------

    def get(self, rel: str) -> bytes:
        try:
            return self.fs.cat_file(self.full(rel))
        except Exception as exc:  # noqa: BLE001
            raise self.error("read", rel, exc) from None

    def open(self, rel: str):
        """A binary file object for reading `rel`."""
        return self.fs.open(self.full(rel), "rb")

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.full(rel)))

    def size(self, rel: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""
        try:
            return int(self.fs.size(self.full(rel)))
        except (FileNotFoundError, OSError):
            return None

    def list(self, rel: str = "") -> list[str]:
        """Names of the objects directly under folder `rel`, sorted; [] if there is none.

        Object stores have no folders; a prefix with objects under it is one."""
        try:
            entries = self.fs.ls(self.full(rel), detail=True, refresh=True)
        except FileNotFoundError:
            return []
        except TypeError:  # filesystems without a `refresh` argument
            try:
                entries = self.fs.ls(self.full(rel), detail=True)
            except FileNotFoundError:
                return []
        names = [
            posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file"
        ]
        return sorted(n for n in names if not n.endswith(".tmp"))

    def refresh(self) -> None:
        """Forget cached listings, so the next `list`/`exists` sees what another process wrote."""
        self.fs.invalidate_cache()

    # -- errors --------------------------------------------------------------------------------

    def error(self, action: str, rel: str, exc: BaseException) -> StorageError:
        return StorageError(
            f"could not {action} {self.url_of(rel)}: {_reason(exc)}; nothing partial was "
            "committed, fix the cause and rerun the same command to resume"
        )

    def check_writable(self) -> None:
        """Write and delete a probe object, so a missing bucket, missing credentials or a
        read-only target fail in one line before any work starts."""
        probe = "_weakly_write_probe"
        self.put(probe, b"")
        self.remove(probe)


def _put_local(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
