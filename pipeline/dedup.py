"""Eval-set dedup: the variant hashes stored per eval image, and the index that searches them.

A training image is a near-copy of an eval image when ``min(hamming(phash(train), v)) <=
radius`` over the eval image's variants. All robustness lives on the eval side: the training
side hashes each image once (the hash the shard stores), and the eval side stores, per image:

* the 8 flips / rotations by 90 degrees, derived from one 8x8 DCT block by sign flips and a
  transpose (exact in the DCT domain; see tests for the measured agreement with hashing the
  actually transformed image);
* centre crops keeping 95/90/85/80% of each side and the four 90% corner crops, because pHash
  loses crops of 10% and more;
* the image with a black and with a white border of 5% and 10% (of the mean side) added, because
  a border shrinks the content and pHash loses it; the train side is not trimmed, so train
  images cost one hash whatever they look like;
* the image with a detected uniform border trimmed off, when it has one (an eval image that
  already carries a frame then matches the frameless training copy).

Variants multiply the false-positive rate roughly by their number; `DEFAULT_RADIUS` was chosen
with that included (benchmarks/dedup_quality.py, BENCHMARKS.md).
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .eval_sources import iter_eval_source
from .eval_variants import (
    DIHEDRAL,
    VARIANT_CODE,
    VARIANTS,
    dihedral_blocks,
    eval_variant_hashes,
    eval_variants,
    find_uniform_border,
)
from .hamming_search import MultiIndex, choose_chunks, flat_range_search
from .phash import DEFAULT_MAX_PIXELS, HASH_VERSION, ImageDecodeError

DEFAULT_RADIUS = 10
INDEX_FORMAT = "weakly-eval-index"
INDEX_FORMAT_VERSION = 1


@dataclass(frozen=True)
class EvalFailure:
    eval_set: str
    item: str
    reason: str


@dataclass
class Matches:
    """Near-copy pairs, one row per (query, eval image), with the best variant's distance."""

    query_rows: np.ndarray  # int64, index into the queries given
    set_index: np.ndarray  # int32, into `set_names`
    image_index: np.ndarray  # int64, into `image_ids`
    distances: np.ndarray  # uint8
    variants: np.ndarray  # uint8, into `VARIANTS`
    set_names: list[str]
    image_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.query_rows)

    def rows(self) -> list[tuple[int, str, str, int]]:
        """``(query row, eval set, eval id, distance)`` tuples, sorted by query row."""
        return [
            (int(q), self.set_names[int(s)], str(self.image_ids[int(i)]), int(d))
            for q, s, i, d in zip(
                self.query_rows, self.set_index, self.image_index, self.distances, strict=True
            )
        ]


@dataclass
class _Entries:
    """Growing columns while building: one row per (eval image, distinct variant hash)."""

    hashes: list[np.ndarray] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    variants: list[np.ndarray] = field(default_factory=list)


class EvalIndex:
    """Variant hashes of named eval sets, searchable by Hamming radius (inclusive).

    Holds only flat numpy arrays (memory O(eval hashes)); identical hashes are stored once with
    a posting list back to every (eval set, eval image, variant) that produced them. Search
    structures are built lazily, under a lock, and are not pickled: sending an index to Ray
    workers ships the arrays only, and concurrent searches on one instance are safe.
    """

    def __init__(
        self,
        *,
        hashes: np.ndarray,
        images: np.ndarray,
        variants: np.ndarray,
        image_set: np.ndarray,
        image_ids: np.ndarray,
        set_names: list[str],
        failures: list[EvalFailure] | None = None,
        radius: int = DEFAULT_RADIUS,
        hash_version: str = HASH_VERSION,
    ) -> None:
        hashes = np.asarray(hashes, dtype=np.uint64)
        order = np.lexsort((np.asarray(images), hashes))
        self.unique_hashes, starts = np.unique(hashes[order], return_index=True)
        self.offsets = np.append(starts, len(hashes)).astype(np.int64)
        self.post_image = np.asarray(images, dtype=np.int64)[order]
        self.post_variant = np.asarray(variants, dtype=np.uint8)[order]
        self.image_set = np.asarray(image_set, dtype=np.int32)
        self.image_ids = np.asarray(image_ids, dtype=str)
        self.set_names = list(set_names)
        self.failures = list(failures or [])
        self.radius = int(radius)
        self.hash_version = hash_version
        self._lock = threading.Lock()
        self._mih: dict[int, MultiIndex] = {}

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        sources: Mapping[str, str | os.PathLike] | Iterable[tuple[str, str | os.PathLike]],
        *,
        radius: int = DEFAULT_RADIUS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        progress: Callable[[str, int], None] | None = None,
    ) -> EvalIndex:
        """Hash every image of every named eval source (folder, tar or parquet).

        Items that cannot be read or hashed are recorded in ``failures`` and skipped.
        """
        pairs = list(sources.items()) if isinstance(sources, Mapping) else list(sources)
        names = [n for n, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"eval set names must be unique, got {names}")
        entries, image_set, image_ids, failures = _Entries(), [], [], []
        for set_idx, (name, path) in enumerate(pairs):
            for n, (item_id, data, error) in enumerate(iter_eval_source(path)):
                if progress is not None:
                    progress(name, n)
                if error is None:
                    try:
                        hashes, codes = eval_variants(data, max_pixels=max_pixels)
                    except ImageDecodeError as exc:
                        error = str(exc)
                    except Exception as exc:  # never let one eval image stop the build
                        error = f"unexpected failure: {type(exc).__name__}: {exc}"
                if error is not None:
                    failures.append(EvalFailure(name, item_id, error))
                    continue
                entries.hashes.append(hashes)
                entries.variants.append(codes)
                entries.images.append(np.full(len(hashes), len(image_ids), dtype=np.int64))
                image_set.append(set_idx)
                image_ids.append(item_id)
        cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
        return cls(
            hashes=cat(entries.hashes, np.uint64),
            images=cat(entries.images, np.int64),
            variants=cat(entries.variants, np.uint8),
            image_set=np.array(image_set, dtype=np.int32),
            image_ids=np.array(image_ids, dtype=str),
            set_names=names,
            failures=failures,
            radius=radius,
        )

    # -- searching --------------------------------------------------------------------------

    def _multi_index(self, m: int) -> MultiIndex:
        with self._lock:
            if m not in self._mih:
                self._mih[m] = MultiIndex(self.unique_hashes, m)
            return self._mih[m]

    def search_unique(
        self, queries: np.ndarray, radius: int | None = None, *, method: str = "auto"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs (query row, unique-hash row, distance) within ``radius``; ``method`` is
        ``auto`` (cost model), ``flat`` or ``mih`` / ``mih:M`` (multi-index with M chunks)."""
        r = self.radius if radius is None else int(radius)
        if not 0 <= r <= 64:
            raise ValueError(f"radius must be in 0..64, got {r}")
        queries = np.asarray(queries, dtype=np.uint64).ravel()
        if method == "auto":
            m = choose_chunks(len(self.unique_hashes), r)
        elif method == "flat":
            m = 0
        elif method.startswith("mih"):
            m = int(method.split(":")[1]) if ":" in method else 4
        else:
            raise ValueError(f"unknown search method {method!r}: use auto, flat, mih or mih:M")
        if m == 0 or len(self.unique_hashes) == 0:
            return flat_range_search(queries, self.unique_hashes, r)
        return self._multi_index(m).range_search(queries, r)

    def search(
        self, queries: np.ndarray, radius: int | None = None, *, method: str = "auto"
    ) -> Matches:
        """Every (query, eval image) within ``radius`` (inclusive), with its best distance."""
        qi, ui, dist = self.search_unique(queries, radius, method=method)
        counts = self.offsets[ui + 1] - self.offsets[ui]
        total = int(counts.sum())
        ends = np.cumsum(counts)
        pos = np.arange(total) + np.repeat(self.offsets[ui] - (ends - counts), counts)
        q = np.repeat(qi, counts)
        d = np.repeat(dist, counts)
        img = self.post_image[pos]
        var = self.post_variant[pos]
        order = np.lexsort((var, d, img, q))  # per (query, image): smallest distance first
        q, img, d, var = q[order], img[order], d[order], var[order]
        first = np.ones(len(q), dtype=bool)
        first[1:] = (q[1:] != q[:-1]) | (img[1:] != img[:-1])
        q, img, d, var = q[first], img[first], d[first], var[first]
        return Matches(
            query_rows=q,
            set_index=self.image_set[img] if len(img) else np.zeros(0, np.int32),
            image_index=img,
            distances=d.astype(np.uint8),
            variants=var,
            set_names=self.set_names,
            image_ids=self.image_ids,
        )

    def near_copy_mask(self, queries: np.ndarray, radius: int | None = None) -> np.ndarray:
        """True for each query hash within ``radius`` of any eval variant."""
        queries = np.asarray(queries, dtype=np.uint64).ravel()
        mask = np.zeros(len(queries), dtype=bool)
        mask[self.search_unique(queries, radius)[0]] = True
        return mask

    # -- persistence ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.post_image)

    def stats(self) -> dict:
        per_set = np.bincount(self.image_set, minlength=len(self.set_names))
        fails = {n: sum(f.eval_set == n for f in self.failures) for n in self.set_names}
        return {
            "hash_version": self.hash_version,
            "radius": self.radius,
            "eval_sets": {
                n: {"images": int(per_set[i]), "failures": fails[n]}
                for i, n in enumerate(self.set_names)
            },
            "images": int(len(self.image_ids)),
            "variant_hashes": int(len(self.post_image)),
            "unique_hashes": int(len(self.unique_hashes)),
            "failures": len(self.failures),
            "bytes": int(
                sum(
                    a.nbytes
                    for a in (
                        self.unique_hashes,
                        self.offsets,
                        self.post_image,
                        self.post_variant,
                        self.image_set,
                        self.image_ids,
                    )
                )
            ),
        }

    def _postings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = np.diff(self.offsets)
        return np.repeat(self.unique_hashes, counts), self.post_image, self.post_variant

    def save(self, path: str | os.PathLike) -> None:
        """One ``.npz`` file (any name), written to a temp file and renamed into place."""
        path = Path(path)
        meta = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "hash_version": self.hash_version,
            "radius": self.radius,
            "set_names": self.set_names,
            "variants": list(VARIANTS),
        }
        hashes, images, variants = self._postings()
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                meta=np.array(json.dumps(meta)),
                hashes=hashes,
                images=images,
                variants=variants,
                image_set=self.image_set,
                image_ids=self.image_ids,
                fail_set=np.array([x.eval_set for x in self.failures], dtype=str),
                fail_item=np.array([x.item for x in self.failures], dtype=str),
                fail_reason=np.array([x.reason for x in self.failures], dtype=str),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        check_version: bool = True,
        storage_options: dict | None = None,
    ) -> EvalIndex:
        """Read an index from a file or any fsspec URL (one object, read whole)."""
        try:
            if "://" in str(path):
                import fsspec

                with fsspec.open(str(path), "rb", **(storage_options or {})) as handle:
                    z = np.load(io.BytesIO(handle.read()), allow_pickle=False)
            else:
                z = np.load(path, allow_pickle=False)
            meta = json.loads(str(z["meta"]))
        except FileNotFoundError:
            raise FileNotFoundError(f"eval index not found: {path}") from None
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a weakly eval index ({exc})") from None
        if meta.get("format") != INDEX_FORMAT or meta.get("format_version") != 1:
            raise ValueError(f"{path}: unsupported eval index format {meta.get('format')!r}")
        if check_version and meta["hash_version"] != HASH_VERSION:
            raise ValueError(
                f"{path}: built with hash {meta['hash_version']!r}, this code computes "
                f"{HASH_VERSION!r}; rebuild the index"
            )
        names = meta["variants"]
        remap = np.array([VARIANT_CODE.get(n, 255) for n in names], dtype=np.uint8)
        failures = [
            EvalFailure(str(s), str(i), str(r))
            for s, i, r in zip(z["fail_set"], z["fail_item"], z["fail_reason"], strict=True)
        ]
        return cls(
            hashes=z["hashes"],
            images=z["images"],
            variants=remap[z["variants"]] if len(z["variants"]) else z["variants"],
            image_set=z["image_set"],
            image_ids=z["image_ids"],
            set_names=meta["set_names"],
            failures=failures,
            radius=meta["radius"],
            hash_version=meta["hash_version"],
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"], state["_mih"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._mih = {}


__all__ = [
    "DEFAULT_RADIUS",
    "DIHEDRAL",
    "VARIANTS",
    "EvalFailure",
    "EvalIndex",
    "Matches",
    "dihedral_blocks",
    "eval_variant_hashes",
    "eval_variants",
    "find_uniform_border",
]
