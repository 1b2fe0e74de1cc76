"""Sample keys: safe as tar member stems and stable across runs.

WebDataset groups members by the text before the first dot, so keys must not contain dots;
keys also become names inside tars, so no slashes or control characters. A key that needs
changing keeps a readable prefix plus a digest of the original, so two different bad keys never
collide; the mapping is recorded in the sample json (`orig_key`).
"""

from __future__ import annotations

import hashlib
import json
import re

_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,90}$")  # USTAR names: 100 bytes with ".json"
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def sanitise_key(key: str) -> str:
    if _SAFE.match(key):
        return key
    readable = _UNSAFE_CHARS.sub("_", key)[:80].strip("_") or "k"
    return f"{readable}-{hashlib.sha1(key.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def row_key(url: str | None, path: str | None, image: bytes | None, tags: list[str] | None) -> str:
    """A stable key for a row without one: a digest of its image reference and tags."""
    digest = hashlib.sha1()
    if image is not None:
        digest.update(hashlib.sha1(image).digest())
    digest.update(json.dumps([url, path, tags], ensure_ascii=False).encode())
    return digest.hexdigest()[:20]
