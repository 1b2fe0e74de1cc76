"""A short fuzz run over hostile manifests: real jsonl, csv, tsv and parquet manifests with random
byte flips, truncations and inserted quotes, brackets, NULs and invalid UTF-8, each read by pass
1 as a task reads it. Every one must end (no hang), with a table whose every row is usable or
carries a reject reason (no traceback), in a process whose peak RSS stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTATIONS_PER_FORMAT = 60
RSS_BOUND_MIB = 1500


def test_mutated_manifests_cost_rows_not_the_reader(tmp_path, lexicon_dir):
    script = textwrap.dedent(
        f"""
        import io, json, random, sys
        sys.path.insert(0, {str(ROOT)!r})
        import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
        from pipeline.manifest import Columns
        from pipeline.pass1 import pass1_file
        from wordnet_tools import load_lexicon

        lexicon = load_lexicon("in1k", lexicon_dir={str(lexicon_dir)!r})
        rows = [{{"key": f"k{{i}}", "url": f"http://x/{{i}}.jpg",
                  "tags": ["#tabby", "beagle", f"#w{{i}}"]}} for i in range(40)]
        seeds = {{
            "jsonl": "".join(json.dumps(r) + "\\n" for r in rows).encode(),
            "csv": ("key,url,tags\\n" + "".join(
                f'{{r["key"]}},{{r["url"]}},"{{" ".join(r["tags"])}}"\\n' for r in rows)).encode(),
            "tsv": ("key\\turl\\ttags\\n" + "".join(
                f'{{r["key"]}}\\t{{r["url"]}}\\t{{" ".join(r["tags"])}}\\n' for r in rows)).encode(),
        }}
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        seeds["parquet"] = sink.getvalue()
        junk = [b'"', b"[", b"{{", b"\\x00", b"\\xff\\xfe", b"\\n", b",", b"\\t", b"[" * 5000]
        rng = random.Random(7)
        folder = {str(tmp_path)!r}
        seen = {{"files": 0, "rows": 0, "rejected": 0, "bad_manifest": 0}}
        for fmt, seed in seeds.items():
            for m in range({MUTATIONS_PER_FORMAT}):
                data = bytearray(seed)
                for _ in range(rng.randint(1, 6)):
                    kind = rng.random()
                    at = rng.randrange(len(data))
                    if kind < 0.4:
                        data[at] = rng.randrange(256)
                    elif kind < 0.7:
                        data[at:at] = rng.choice(junk)
                    elif kind < 0.85:
                        del data[at:at + rng.randint(1, 50)]
                    else:
                        data = data[:at]
                        break
                path = f"{{folder}}/m{{m}}.{{fmt}}"
                open(path, "wb").write(bytes(data))
                table = pass1_file(path, Columns(), lexicon)
                assert table.num_rows >= 1, (fmt, m)
                rejected = pc.is_valid(table["reject"]).to_numpy(zero_copy_only=False)
                live = table.filter(pc.is_null(table["reject"]))
                assert all(live["key"].to_pylist()), "a usable row has a key"
                assert all(w for w in live["wnids"].to_pylist()), "a usable row has labels"
                seen["files"] += 1
                seen["rows"] += table.num_rows
                seen["rejected"] += int(rejected.sum())
                seen["bad_manifest"] += int((table["row"].to_numpy() == -1).sum())
        # VmHWM belongs to this process's own address space; ru_maxrss would carry over the
        # peak of the (large) test process this one was forked from
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
        seen["peak_mib"] = int(hwm.split()[1]) / 1024
        print(json.dumps(seen))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["files"] == 4 * MUTATIONS_PER_FORMAT
    assert seen["rejected"] > 0 and seen["rows"] > seen["rejected"], seen
    assert seen["peak_mib"] < RSS_BOUND_MIB, seen
