"""Where a dataset lives: a local folder or any fsspec URL (s3://, gs://, az://, ...).

Every file the ingest job writes goes through `Store.put`, which makes one object whole or not
at all: on a local disk by writing `name.tmp`, fsyncing and renaming; on an object store by one
PUT (or one multipart upload, which is invisible until completed). That is the whole commit
protocol the job needs, so it holds on both kinds of storage: a reader never sees a half-written
object, and a resumed job trusts only objects that exist.

A `Store` is a URL plus storage options, so it pickles small and each Ray task reopens the
filesystem on its own node.

On s3:// the endpoint, credentials and region come from the usual places (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws; botocore reads them itself) or from
storage options (`endpoint_url`, `key`, `secret`, `client_kwargs`).

Failing fast matters more than waiting out an outage, because a failed job resumes where it
stopped. Unless the user says otherwise, a store opens s3 with a 5 s connect timeout
(`S3_CONFIG_DEFAULTS`; botocore's is 60 s) and botocore's "standard" retries, 3 attempts
(`S3_RETRY_DEFAULTS`; botocore's "legacy" mode makes 5). s3fs retries connection errors 5 times
on top (`S3FileSystem.retries`, not a storage option). Measured with s3fs 2026.9: a refused
connection fails in 1-5 s (the backoff is jittered; 6 s with botocore's defaults), an endpoint
that never answers the connect in about 25 s (not measured with the defaults: minutes, at 60 s
a connect attempt). Change them with storage options, merged key by key over the defaults:
`{"config_kwargs": {"connect_timeout": 30, "retries": {"max_attempts": 10, "mode": "adaptive"}}}`;
retries set through AWS_MAX_ATTEMPTS, AWS_RETRY_MODE or the AWS config file are left alone.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from functools import cached_property

import fsspec

# Unless the user configured them (storage options, AWS_* variables, the AWS config file): see
# the module docstring for why and for the failure times they give.
S3_CONFIG_DEFAULTS = {"connect_timeout": 5}
S3_RETRY_DEFAULTS = {"mode": "standard", "max_attempts": 3}


class StorageError(RuntimeError):
    """A read or write against the dataset's storage failed; the message is one line naming the
    object and the cause, and says that rerunning resumes."""


class StorageNotFound(StorageError, FileNotFoundError):
    """The object (or its bucket) does not exist. Also a FileNotFoundError, so code that opens
    an object and handles "not there" the ordinary way keeps working."""


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
        if "bucket" in text.lower():
            return f"the bucket does not exist ({text})"
        return f"not found ({text})"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{name}: {text}"


def _one_line(text: str) -> str:
    """Backends put newlines in their messages (XML bodies, tracebacks); a StorageError is read
    in a job's one-line failure summary."""
    return " ".join(text.split())


def _s3_defaults(options: dict) -> dict:
    """`options` with `S3_CONFIG_DEFAULTS` and `S3_RETRY_DEFAULTS` filled in where the user set
    nothing. The user's `config_kwargs` win key by key; botocore ranks a Config above the
    environment and the config file, so retries are only filled in when neither names them."""
    config = dict(S3_CONFIG_DEFAULTS)
    if not _retries_configured():
        config["retries"] = dict(S3_RETRY_DEFAULTS)
    config.update(options.get("config_kwargs") or {})
    return {**options, "config_kwargs": config}


def _retries_configured() -> bool:
    """Whether AWS_MAX_ATTEMPTS/AWS_RETRY_MODE or the active AWS config profile set retries."""
    if "AWS_MAX_ATTEMPTS" in os.environ or "AWS_RETRY_MODE" in os.environ:
        return True
    try:
        import botocore.session

        scoped = botocore.session.Session().get_scoped_config()
    except Exception:  # noqa: BLE001 - a broken profile is reported when the store is used
        return False
    return "max_attempts" in scoped or "retry_mode" in scoped


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

    @property
    def protocol(self) -> str:
        return "file" if self.is_local else self.url.split("://", 1)[0]

    @cached_property
    def _fs_root(self) -> tuple:
        """Opened in each process from the user's options (the defaults are applied here, not
        stored, so a pickled Store carries only what the user said)."""
        options = self.storage_options
        if self.protocol in ("s3", "s3a"):
            options = _s3_defaults(options)
        fs, root = fsspec.core.url_to_fs(self.url, **options)
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
        """Write `data` as the whole object `rel`: complete or absent, never partial.

        On s3 (s3fs 2026.9) an object of 100 MiB or more goes up as a multipart upload (parts of
        50 MiB); one cut off before it completes stays invisible, but its parts are billed until
        a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes them."""
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
            if self._exists(rel):
                self.fs.rm_file(self.full(rel))
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self.error("delete", rel, exc) from None

    def remove_tree(self, rel: str = "") -> None:
        """Delete everything under `rel` (the whole dataset when empty)."""
        try:
            if self._exists(rel):
                self.fs.rm(self.full(rel), recursive=True)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self.error("delete", rel, exc) from None
        self.refresh()

    # -- reading -------------------------------------------------------------------------------
    #
    # s3fs keeps a listing cache per filesystem instance (and fsspec shares instances between
    # stores with equal options): an object another process wrote, replaced or deleted after a
    # listing would stay invisible, or keep its old size. Every check below asks the server.

    def get(self, rel: str) -> bytes:
        try:
            return self.fs.cat_file(self.full(rel))
        except Exception as exc:  # noqa: BLE001
            raise self.error("read", rel, exc) from None

    def open(self, rel: str):
        """A binary file object for reading `rel`; a missing object raises StorageNotFound
        (a FileNotFoundError)."""
        try:
            self.fs.invalidate_cache(self.full(rel))
            return self.fs.open(self.full(rel), "rb")
        except Exception as exc:  # noqa: BLE001
            raise self.error("open", rel, exc) from None

    def exists(self, rel: str) -> bool:
        try:
            return self._exists(rel)
        except Exception as exc:  # noqa: BLE001
            raise self.error("check", rel, exc) from None

    def _exists(self, rel: str) -> bool:
        self.fs.invalidate_cache(self.full(rel))
        return bool(self.fs.exists(self.full(rel)))

    def size(self, rel: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""
        try:
            self.fs.invalidate_cache(self.full(rel))
            return int(self.fs.size(self.full(rel)))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self.error("check", rel, exc) from None

    def list(self, rel: str = "") -> list[str]:
        """Names of the objects directly under folder `rel`, sorted; [] if there is none.

        Object stores have no folders; a prefix with objects under it is one. A missing bucket
        is an error, not an empty folder: it is a typo or a wrong account, never a fresh run."""
        path = self.full(rel)
        try:
            self.fs.invalidate_cache(path)
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError as exc:
            self._check_bucket(rel, exc)
            return []
        except Exception as exc:  # noqa: BLE001
            raise self.error("list", rel, exc) from None
        names = [
            posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file"
        ]
        return sorted(n for n in names if not n.endswith(".tmp"))

    def _check_bucket(self, rel: str, exc: FileNotFoundError) -> None:
        """Raise for `exc` when the bucket (the first part of the root path) is missing."""
        if self.is_local:
            return
        bucket = self._fs_root[1].split("/", 1)[0]
        try:
            present = self.fs.exists(bucket)
        except Exception as probe:  # noqa: BLE001
            raise self.error("list", rel, probe) from None
        if not present:
            raise self.error("list", rel, FileNotFoundError(f"no bucket named {bucket}"))

    def refresh(self) -> None:
        """Forget cached listings, so the next `list`/`exists` sees what another process wrote."""
        self.fs.invalidate_cache()

    # -- errors --------------------------------------------------------------------------------

    def error(self, action: str, rel: str, exc: BaseException) -> StorageError:
        kind = StorageNotFound if isinstance(exc, FileNotFoundError) else StorageError
        return kind(
            _one_line(
                f"could not {action} {self.url_of(rel)}: {_reason(exc)}; nothing partial was "
                "committed, fix the cause and rerun the same command to resume"
            )
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
