"""Canonicalisation speed against the floor of a bare dict lookup, plus lexicon load cost.

Stream: N tags, 70% drawn Zipf(s=1.1) over WordNet surface forms with the decorations seen in
real hashtags (`#`, CamelCase, upper case, hyphens, plurals), 30% junk drawn Zipf over a pool
of junk tags (#instagood-style words, digits, emoji, random strings). Both parts repeat, as real
tag streams do. Floor: `dict.get` over the already-normalised strings, i.e. the lookup alone.

    python benchmarks/lexicon.py [--tags 1000000]
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import time

import numpy as np

from wordnet_tools import load_lexicon, normalise_tag
from wordnet_tools.lexicon import Lexicon


def decorate(lemma: str, rng: random.Random) -> str:
    words = lemma.split("_")
    style = rng.random()
    if style < 0.3:
        text = "".join(w.capitalize() for w in words)
    elif style < 0.5:
        text = "-".join(words)
    elif style < 0.6:
        text = lemma.upper()
    else:
        text = "".join(words)
    if rng.random() < 0.2:
        text += "s"
    return ("#" if rng.random() < 0.8 else "") + text


def junk_pool(rng: random.Random, size: int) -> list[str]:
    emoji = ["🔥", "💯", "😍", "🐻", "✨", "❤️"]
    pool = []
    for i in range(size):
        kind = i % 4
        if kind == 0:
            pool.append(
                "#"
                + "".join(
                    rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(5, 14))
                )
            )
        elif kind == 1:
            pool.append(f"#{rng.randint(0, 99999)}")
        elif kind == 2:
            pool.append("#" + "".join(rng.choice(emoji) for _ in range(rng.randint(1, 3))))
        else:
            pool.append(f"#insta{rng.choice(['good', 'daily', 'mood', 'like'])}{i}")
    return pool


def zipf_indices(rng: np.random.Generator, n: int, size: int, s: float = 1.1) -> np.ndarray:
    p = 1.0 / np.arange(1, size + 1) ** s
    return rng.choice(size, n, p=p / p.sum())


def make_stream(lex: Lexicon, n: int, seed: int = 0) -> list[str]:
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    lemmas = sorted(set(lex._forms.column("lemma").to_pylist()))
    rng.shuffle(lemmas)
    words = [decorate(lemma, rng) for lemma in lemmas[:200_000]]
    junk = junk_pool(rng, 50_000)
    n_junk = int(n * 0.3)
    stream = [words[i] for i in zipf_indices(nrng, n - n_junk, len(words))]
    stream += [junk[i] for i in zipf_indices(nrng, n_junk, len(junk))]
    rng.shuffle(stream)
    return stream


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_load(vocab: str) -> str:
    """In a fresh process: import time, then load time, then peak RSS of the whole process."""
    code = "\n".join(
        [
            "import resource, time",
            "t0 = time.perf_counter()",
            "from wordnet_tools import load_lexicon",
            "t1 = time.perf_counter()",
            f"lex = load_lexicon({vocab!r})",
            "t2 = time.perf_counter()",
            "print(t1 - t0, t2 - t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imports, load, rss = map(float, out.stdout.split())
    return (
        f"load_lexicon({vocab!r}): {load:.3f} s (+ {imports:.3f} s imports), peak RSS {rss:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=1_000_000)
    args = parser.parse_args()

    lex = load_lexicon("nouns")
    stream = make_stream(lex, args.tags)
    normalised = [normalise_tag(t) for t in stream]
    table = lex._form_to_wnid
    floor = best_of(lambda: [table.get(f) for f in normalised])

    def fresh_many():  # a new memo each time: the first sight of every distinct tag is paid
        lex._memo.clear()
        return lex.canonical_many(stream)

    ours = best_of(fresh_many)
    cold = best_of(lambda: [table.get(f) if (f := normalise_tag(t)) else None for t in stream], 1)
    hits = sum(r is not None for r in lex.canonical_many(stream)) / len(stream)
    distinct = len(set(stream))

    rate = len(stream) / ours
    print(f"stream: {len(stream):,} tags, {distinct:,} distinct, {hits:.1%} resolved (nouns)")
    print(f"floor dict.get on normalised strings: {len(stream) / floor / 1e6:.2f} M tags/s")
    print(f"canonical_many (memo reset per run):  {rate / 1e6:.2f} M tags/s")
    print(f"normalise + lookup every tag (no memo): {len(stream) / cold / 1e6:.2f} M tags/s")
    print(f"ratio canonical_many / floor: {floor / ours:.2f}  (goal >= 0.5; and >= 1M tags/s/core)")
    for vocab in ("nouns", "in1k", "in21k"):
        print(measure_load(vocab))
    print(
        f"this process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
