"""Opening local files that untrusted input names (a manifest, a manifest's `path`): only
regular files, and never a call that blocks.

`open()` on a FIFO waits for a writer, forever; `/dev/zero` and `/dev/urandom` never end; a
directory or a socket is not an image or a manifest. So the name is checked with `stat` before
anything is opened (opening some devices has effects of its own), then opened with
`O_NONBLOCK` (a FIFO swapped in after the check opens at once instead of blocking) and checked
again with `fstat` on the descriptor that will be read, so what is read is the regular file
that was checked.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from fsspec.implementations.local import LocalFileSystem

_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISSOCK, "socket"),
)


class NotRegularFile(Exception):
    """The name exists but is not a regular file (a FIFO, a device, a directory, ...)."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(f"{path[:200]} is a {kind}, not a regular file")
        self.kind = kind


def file_kind(mode: int) -> str:
    """What a `st_mode` names, in words ("FIFO", "directory", ...)."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "regular file" if stat.S_ISREG(mode) else "special file"


def local_path(url: str) -> str | None:
    """The local file a manifest names (a plain path or a `file://` URL), else None."""
    if "://" not in url:
        return url
    if url.startswith(("file://", "local://")):
        return LocalFileSystem._strip_protocol(url)
    return None


def open_regular(path: str) -> BinaryIO:
    """`path` opened for reading if it is a regular file (symlinks followed).

    Raises FileNotFoundError / PermissionError / OSError as `open` would, and NotRegularFile
    for anything else that exists; never blocks on a FIFO."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, file_kind(mode))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # swapped after the check above
            raise NotRegularFile(path, file_kind(mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
