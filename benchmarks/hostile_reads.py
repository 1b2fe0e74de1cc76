"""Hostile tars, shards, datasets and checkpoints through the read side: time to fail, peak RSS.

Every input is crafted here (tests/hostile_tars.py, weakly/fixtures.py) and read by a child
process running the code of `--repo` (default: this checkout), so the same inputs can be timed
against an older checkout, e.g. `git worktree add /tmp/old <commit>`:

    python benchmarks/hostile_reads.py [--repo /tmp/old] [--timeout 120] [--only pax]

Each row: the case, what the child did (`ok ...`, `exit 2: <the one line>`, an exception type,
or `killed after T s`), its wall time and its peak RSS (ru_maxrss). Tar cases import only the
reader; trainer cases run `python -m train` (CPU, tiny model, 4 steps, one loader worker), so
their RSS includes torch (~400 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "tests"))

import hostile_tars as H  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from weakly.fixtures import build_fixture, write_index_table  # noqa: E402
from weakly_base import index_tables as tables  # noqa: E402
from weakly_base import shard_format as fmt  # noqa: E402

JPG = b"\xff\xd8 not decoded \xff\xd9"
GOOD = H.sample("good", JPG, {"labels": [1], "weight": 0.5})

# The child imports first (`# -- timed --` splits a body), so a row times the read, not the
# imports; it reports its peak RSS and, separately, the RSS its imports had reached.
CHILD = """
import json, resource, sys, time
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
{setup}
base, t = rss(), time.perf_counter()
try:
{body}
except BaseException as exc:
    out = f"{{type(exc).__name__}}: {{str(exc).splitlines()[0][:100] if str(exc) else ''}}"
print(json.dumps({{"out": out, "s": time.perf_counter() - t, "rss": rss(), "base": base}}))
"""

SHARD_READ = """
from weakly_base.shard_format import iter_tar_records
# -- timed --
n = sum(1 for _ in iter_tar_records(open(sys.argv[1], "rb")))
out = f"ok, {n} samples"
"""
EVAL_READ = """
from pipeline.eval_sources import iter_eval_source
# -- timed --
items = list(iter_eval_source(sys.argv[1]))
out = f"ok, {sum(d is not None for _, d, _ in items)} read, {sum(d is None for _, d, _ in items)} failed"
"""
TRAIN = """
import contextlib, io
from pathlib import Path
from train.cli import main
# -- timed --
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = main(sys.argv[1:])
lines = [x for x in err.getvalue().splitlines() if "warning" not in x]
out = f"exit {rc}" + (f": {lines[-1][:140]}" if lines else "")
keys = Path(sys.argv[sys.argv.index("--out") + 1]) / "keys-rank0.jsonl"
if rc == 0 and keys.is_file():
    drawn = [k for line in keys.read_text().splitlines() for k in json.loads(line)["keys"]]
    top = max(drawn.count(k) for k in set(drawn))
    out += f" (most drawn sample: {top} of {len(drawn)})"
"""


def run_child(repo: Path, body: str, args: list[str], timeout: float) -> dict:
    setup, _, work = textwrap.dedent(body).strip().partition("# -- timed --")
    code = CHILD.format(setup=setup, body=textwrap.indent(work.strip(), "    "))
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=repo,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"out": f"killed after {timeout:.0f} s (no result)", "s": None, "rss": None}
    lines = done.stdout.strip().splitlines()
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1][:120]
        return {"out": f"died (rc {done.returncode}): {tail}", "s": None, "rss": None}
    return json.loads(lines[-1])


# -- tar cases ---------------------------------------------------------------------------------


def tar_cases(tmp: Path) -> list[tuple[str, str, Path]]:
    """(name, reader body, file) for each hostile archive."""
    out = []
    for size in (20_000, 40_000, 80_000, 1 << 20):
        path = tmp / f"pax{size}.tar"
        path.write_bytes(H.pax_digits(size, H.sample("bomb", JPG, {})) + GOOD + H.END)
        out.append((f"pax header of {size // 1000} kB of digits, shard reader", SHARD_READ, path))
    path = tmp / "pax-eval.tar"
    path.write_bytes(H.pax_digits(80_000, H.member("bomb.jpg", JPG)) + H.member("ok.jpg", JPG)
                     + H.END)  # fmt: skip
    out.append(("pax header of 80 kB of digits, eval reader", EVAL_READ, path))
    path = tmp / "longname.tar"
    with path.open("wb") as f:  # 300 MB of name, written in pieces
        f.write(H.header("././@LongLink", 300 << 20, b"L"))
        for _ in range(300):
            f.write(b"a" * (1 << 20))
        f.write(H.sample("long", JPG, {}) + GOOD + H.END)
    out.append(("GNU longname of 300 MB, shard reader", SHARD_READ, path))
    path = tmp / "sparse.tar"
    path.write_bytes(H.gnu_sparse("s.jpg", JPG, 1 << 30) + H.member("ok.jpg", JPG) + H.END)
    out.append(("sparse member claiming 1 GiB, eval reader", EVAL_READ, path))
    path = tmp / "claim.tar"
    path.write_bytes(GOOD + H.header("huge.jpg", 10 << 30, base256=True) + b"x" * 5000)
    out.append(("member claiming 10 GB, shard reader", SHARD_READ, path))
    path = tmp / "claim-eval.tar"
    path.write_bytes(H.member("ok.jpg", JPG) + H.header("huge.jpg", 10 << 30, base256=True)
                     + b"x" * 5000)  # fmt: skip
    out.append(("member claiming 10 GB, eval reader", EVAL_READ, path))
    return out


# -- trainer cases -----------------------------------------------------------------------------


def _rewrite(root: Path, file: str, edit) -> None:
    samples = list(fmt.iter_tar_records((root / file).open("rb")))
    parts = [H.sample(k, jpg, edit(i, m)) for i, (k, jpg, m) in enumerate(samples)]
    (root / file).write_bytes(b"".join(parts) + H.END)


def _files(root: Path) -> list[str]:
    return sorted(r["file"] for r in tables.read_index(root, tables.SHARDS).to_pylist())


def _raw(meta: dict, field: str, text: str) -> bytes:
    base = json.dumps({k: v for k, v in meta.items() if k != field})
    return (base[:-1] + f', "{field}": {text}}}').encode()


def _index(root: Path, name: str, edit) -> None:
    table = tables.read_index(root, name)
    rows = [edit(dict(r)) for r in table.to_pylist()]
    write_index_table(root, name, pa.Table.from_pylist(rows, schema=table.schema))


def dataset_cases(base: Path, tmp: Path) -> list[tuple[str, object]]:
    """(name, function editing a copy of the dataset in place)."""

    def first_sample(edit):
        return lambda root: _rewrite(root, _files(root)[0], lambda i, m: edit(m) if i == 0 else m)

    def every_sample(edit):
        return lambda root: [_rewrite(root, f, lambda i, m: edit(m)) for f in _files(root)]

    def json_meta(edit):
        def apply(root: Path) -> None:
            meta = json.loads((root / fmt.DATASET_JSON).read_text())
            (root / fmt.DATASET_JSON).write_bytes(edit(meta))

        return apply

    def truncate(root: Path) -> None:
        path = root / _files(root)[0]
        path.write_bytes(path.read_bytes()[:3000])

    def not_a_tar(root: Path) -> None:
        (root / _files(root)[0]).write_bytes(np.random.default_rng(0).bytes(5000))

    def mean(value):
        return json_meta(lambda m: json.dumps(m).replace(
            f'"mean_shard_size": {json.dumps(m["splits"]["train"]["mean_shard_size"])}',
            f'"mean_shard_size": {value}').encode())  # fmt: skip

    def outside(root: Path) -> None:
        first = _files(root)[0]
        _index(
            root,
            tables.SHARDS,
            lambda r: {**r, "file": "../secret.tar"} if r["file"] == first else r,
        )

    return [
        ("sample json nested 200k deep", first_sample(lambda m: b"[" * 200_000 + b"]" * 200_000)),
        ("label 1e400", first_sample(lambda m: _raw(m, "labels", "[1e400]"))),
        ("label 5000 of 1000 classes", first_sample(lambda m: {**m, "labels": [5000]})),
        ("weight NaN", first_sample(lambda m: _raw(m, "weight", "NaN"))),
        ("weight 1e12 (json)", first_sample(lambda m: {**m, "weight": 1e12})),
        ('labels "12" everywhere', every_sample(lambda m: {**m, "labels": "12"})),
        ("shard cut short", truncate),
        ("shard that is not a tar", not_a_tar),
        ("every JPEG corrupt", None),
        ("no labels anywhere", every_sample(lambda m: {**m, "labels": []})),
        (
            "every index weight 0",
            lambda root: _index(root, tables.SAMPLES, lambda r: {**r, "weight": 0.0}),
        ),  # fmt: skip
        ("mean_shard_size 0", mean(0)),
        ("mean_shard_size NaN", mean("NaN")),
        ("dataset.json a list", json_meta(lambda m: json.dumps([m]).encode())),
        (
            "dataset.json without vocabulary",
            json_meta(
                lambda m: json.dumps({k: v for k, v in m.items() if k != "vocabulary"}).encode()
            ),
        ),
        (
            "dataset.json nested 100k deep",
            json_meta(lambda m: b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ),
        ("shard path ../secret.tar (a valid shard there)", outside),
    ]


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--model", "tiny", "--out", str(out), "--batch-size", "6",
            "--image-size", "24", "--device", "cpu", "--steps", "4", "--workers", "1",
            "--no-eval", "--log-every", "1", "--record-keys", *extra]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=HERE, help="checkout whose reader is measured")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    args = ap.parse_args()
    repo = args.repo.resolve()
    print(f"reader: {repo}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, body, path in tar_cases(tmp):
            if args.only in name:
                row = run_child(repo, body, [str(path)], args.timeout)
                _print(name, row)
            path.unlink()
        base = build_fixture(tmp / "base", samples=60, classes=1000, max_shard=12, seed=7)
        corrupt = build_fixture(tmp / "corrupt", samples=60, classes=1000, max_shard=12, seed=7,
                                corrupt=60)  # fmt: skip
        for name, edit in dataset_cases(base, tmp):
            if args.only not in name:
                continue
            root = tmp / "case"
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(corrupt if edit is None else base, root)
            if edit is not None:
                edit(root)
            (tmp / "secret.tar").write_bytes((base / _files(base)[0]).read_bytes())
            out = tmp / "run"
            shutil.rmtree(out, ignore_errors=True)
            _print(name, run_child(repo, TRAIN, train_args(root, out), args.timeout))
    return 0


def _print(name: str, row: dict) -> None:
    s = f"{row['s']:.2f} s" if row["s"] is not None else "-"
    rss = "-"
    if row["rss"] is not None:
        rss = f"{row['rss']:.0f} MiB (imports {row['base']:.0f})"
    print(f"| {name} | {row['out']} | {s} | {rss} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
