"""Sample keys: safe as tar member stems and stable across runs.

WebDataset groups members by the text before the first dot, so keys must not contain dots;
keys also become names inside tars, so no slashes or control characters. A key that needs
changing keeps a readable prefix plus a digest of the original, so two different bad keys never
collide; the mapping is recorded in the sample json (`orig_key`).
"""

from __future__ import annotations

import hashlib
import re

import pyarrow as pa
import pyarrow.compute as pc

from weakly_base.shard_format import KEY_CHARS, KEY_MAX_LEN, KEY_RE

from .arrow_lists import lists_from_parents

_UNSAFE_CHARS = re.compile(f"[^{KEY_CHARS}]+")
_DIGEST_CHARS = 12
# The readable prefix leaves room for "-" and the digest within the key rule's length.
_READABLE_CHARS = KEY_MAX_LEN - 1 - _DIGEST_CHARS


def sanitise_key(key: str) -> str:
    """`key` itself if it matches the format's key rule (`KEY_RE`), else a safe key that keeps
    a readable prefix and a digest of the original."""
    if KEY_RE.fullmatch(key):
        return key
    readable = _UNSAFE_CHARS.sub("_", key)[:_READABLE_CHARS].strip("_") or "k"
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    return f"{readable}-{digest}"


# Derived keys hash an unambiguous text of the row: each field escaped so that NUL (the field
# and tag separator) and \x01 (the null marker) never occur inside it.
_NULL = "\x01"


def _escape_column(column: pa.Array) -> pa.Array:
    for old, new in (("\\", "\\\\"), ("\x00", "\\0"), ("\x01", "\\1")):
        column = pc.replace_substring(column, old, new)
    return column


def row_keys(url: pa.Array, path: pa.Array, image: pa.Array, tags: pa.Array) -> list[str]:
    """A stable key for each row without one: the first 20 hex digits of the sha1 of its
    fields (url, path, sha1 of the inline image, tag count and tags), each escaped, joined by
    NUL, a null field as \\x01. The text is built by Arrow kernels (one sha1 call per row is all
    the Python left), because keyless manifests make this the hot loop of pass 1;
    tests/one_row_reference.py spells the same rule one row at a time."""
    n = len(url)
    images = image.to_pylist() if image.null_count < n else None
    digests = pa.array(
        [None if b is None else hashlib.sha1(b).hexdigest() for b in images]
        if images is not None
        else pa.nulls(n, pa.string()),
        pa.string(),
    )
    flat = _escape_column(pc.list_flatten(tags))
    parents = pc.list_parent_indices(tags).to_numpy(zero_copy_only=False)
    rebuilt = lists_from_parents(parents, flat, n)
    # The tag count comes first, so [] and [""] (both joining to "") stay apart.
    lengths = pc.fill_null(pc.list_value_length(tags), 0)
    counted = pc.binary_join_element_wise(
        pc.cast(lengths, pa.string()), pc.binary_join(rebuilt, "\x00"), ":"
    )
    joined = pc.if_else(pc.is_null(tags), pa.nulls(n, pa.string()), counted)
    parts = [
        pc.fill_null(_escape_column(url), _NULL),
        pc.fill_null(_escape_column(path), _NULL),
        pc.fill_null(digests, _NULL),
        pc.fill_null(joined, _NULL),
    ]
    text = pc.binary_join_element_wise(*parts, "\x00").cast(pa.binary())
    sha1 = hashlib.sha1
    return [sha1(b).hexdigest()[:20] for b in text.to_pylist()]
