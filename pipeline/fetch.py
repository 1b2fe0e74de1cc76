"""Fetching image bytes: http(s) URLs, local or fsspec paths, inline bytes.

Failures raise `FetchError` with a short machine-readable reason (`http_404`, `timeout`,
`too_large`, `short_body`, `missing_file`, `not_a_file`, `bad_scheme`, `blocked_address`, ...)
that lands in the rejects table. Every address connected to is checked against the network
policy (pipeline/net_policy.py), hop by hop through redirects. Time and memory per row are bounded: a socket timeout per read, an overall
deadline enforced by a watchdog that shuts the sockets (so a server dripping bytes cannot hold a
row), a byte cap. An http(s) URL is fetched the same way whether the manifest gives it as `url`
or as `path` (fsspec's HTTP reader knows no deadline: a silent server held a row ten minutes),
so every http source has one deadline and one set of reasons. Local paths are read only when
they name a regular file (pipeline/regular_files.py): a FIFO would block the row forever.

The fetch threads of one task share a `Session`: HTTP/1.1 keep-alive connections pooled per
(scheme, host, port), reused only after a response was read to its end with no error and the
server did not ask to close; host names resolved once per process for `DNS_TTL` seconds; and
optionally at most `FetchConfig.per_host` requests in flight per host. A 429/503 with
`Retry-After` is retried after that wait when it fits in the row's deadline.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from urllib.parse import urlsplit

import fsspec

from .fetch_config import DEFAULT_FETCH, USER_AGENT, FetchConfig, FetchError
from .http_session import Session, check_target
from .regular_files import NotRegularFile, local_path, open_regular

__all__ = [
    "USER_AGENT",
    "FetchConfig",
    "FetchError",
    "Session",
    "fetch_completed",
    "fetch_iter",
    "fetch_one",
    "fetch_path",
    "fetch_url",
    "is_http",
    "resolve_path",
]


def resolve_path(path: str, root: str | None) -> str:
    """The file a manifest `path` names, confined to `root` when one is set.

    With a root, a manifest can only name files under it: absolute paths, other URLs, `..`
    escapes and (locally) symlinks pointing out are `path_outside_root`, so a hostile manifest
    cannot pull arbitrary files of the ingest machine into the shards.
    """
    if root is None:
        return path
    if "\x00" in path:
        raise FetchError("bad_path", "path contains a NUL byte")
    if "://" in path or path.startswith(("/", "\\")) or os.path.isabs(path):
        raise FetchError("path_outside_root", f"{path[:200]} is absolute; paths are under the root")
    if "://" in root:
        norm = posixpath.normpath(path)
        if norm == ".." or norm.startswith("../"):
            raise FetchError("path_outside_root", f"{path[:200]} leaves {root}")
        return f"{root.rstrip('/')}/{norm}"
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, path))
    if os.path.commonpath([base, full]) != base:
        raise FetchError("path_outside_root", f"{path[:200]} leaves {root}")
    return full


def fetch_url(
    url: str, config: FetchConfig = DEFAULT_FETCH, session: Session | None = None
) -> bytes:
    """The body of an http(s) URL. Threads that pass the same `session` share its connections
    and its per-host cap; without one, the call uses a session of its own."""
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise FetchError("bad_scheme", f"{scheme or 'no'} scheme; only http and https")
    if session is not None:
        return session.fetch(url, config)
    with Session(config) as own:
        return own.fetch(url, config)


def is_http(path: str | None) -> bool:
    """Whether a manifest value names an http(s) URL (fetched by the HTTP fetcher)."""
    return bool(path) and path[:8].lower().startswith(("http://", "https://"))


def _open_path(path: str):
    """A local path opened only if it is a regular file; any other URL through fsspec."""
    local = local_path(path)
    return open_regular(local) if local is not None else fsspec.open(path, "rb").open()


# fsspec protocols whose URLs name a network host the library connects to itself
HOST_PROTOCOLS = ("ftp", "sftp", "ssh", "smb", "webhdfs", "hdfs", "http", "https")


def _check_hosts(path: str, config: FetchConfig) -> None:
    """A `path` URL that fsspec would open by connecting to a host (ftp://, sftp://, a chained
    `simplecache::http://...`): the host's addresses are checked against the network policy
    first (`check_target`: fsspec resolves the host again when it connects)."""
    if "://" not in path:
        return
    for part in path.split("::"):
        parts = urlsplit(part)
        if parts.scheme not in HOST_PROTOCOLS or not parts.hostname:
            continue
        try:
            port = parts.port or 0
        except ValueError:
            raise FetchError("bad_url", f"bad port in {part[:100]}") from None
        check_target(parts.hostname, port, config.network_policy)


def fetch_path(path: str, config: FetchConfig = DEFAULT_FETCH) -> bytes:
    """The bytes of a local or fsspec (non-http) file, at most the byte cap."""
    _check_hosts(path, config)
    try:
        with _open_path(path) as handle:
            data = handle.read(config.max_bytes + 1)
    except FileNotFoundError:
        raise FetchError("missing_file", path[:200]) from None
    except NotRegularFile as exc:
        raise FetchError("not_a_file", str(exc)) from None
    except IsADirectoryError:
        raise FetchError("not_a_file", path[:200]) from None
    except Exception as exc:
        raise FetchError("read_error", f"{type(exc).__name__}: {exc}"[:200]) from None
    if len(data) > config.max_bytes:
        raise FetchError("too_large", f"file over {config.max_bytes} bytes")
    return data


def fetch_one(
    ref: tuple[str | None, str | None, bytes | None],
    config: FetchConfig,
    session: Session | None = None,
) -> bytes | FetchError:
    """Bytes for one (url, path, inline) reference, or the FetchError saying why not."""
    url, path, inline = ref
    try:
        if inline is not None:
            if len(inline) > config.max_bytes:
                raise FetchError("too_large", "inline image over the byte cap")
            return inline
        if url:
            return fetch_url(url, config, session)
        if path:
            target = resolve_path(path, config.path_root)
            if is_http(target):
                return fetch_url(target, config, session)
            return fetch_path(target, config)
        raise FetchError("no_image", "row has no url, path or image bytes")
    except FetchError as exc:
        return exc


def fetch_completed(
    refs: list[tuple[str | None, str | None, bytes | None]], config: FetchConfig
) -> Iterator[tuple[int, bytes | FetchError]]:
    """(index into refs, result) as each fetch completes, in completion order: the caller can
    decode every image that has arrived while slower ones are still on the network, and put the
    results back in row order itself. The fetch threads share one `Session`."""
    if not any(r[0] or is_http(r[1]) for r in refs) or config.threads <= 1:
        with Session(config) as session:
            for i, ref in enumerate(refs):
                yield i, fetch_one(ref, config, session)
        return
    with Session(config) as session:
        pool = ThreadPoolExecutor(max_workers=config.threads)
        try:
            futures = {
                pool.submit(fetch_one, ref, config, session): i for i, ref in enumerate(refs)
            }
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def fetch_iter(
    refs: list[tuple[str | None, str | None, bytes | None]], config: FetchConfig
) -> Iterator[bytes | FetchError]:
    """Results in input order, each yielded once it and all before it are ready."""
    ready: dict[int, bytes | FetchError] = {}
    following = 0
    for i, result in fetch_completed(refs, config):
        ready[i] = result
        while following in ready:
            yield ready.pop(following)
            following += 1
