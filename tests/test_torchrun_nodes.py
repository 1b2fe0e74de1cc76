"""Two torchrun "nodes" on this machine (`--nnodes 2`, one CPU process each, c10d rendezvous on
127.0.0.1), as a multi-node job is launched: each agent is its own process with its own node
rank; after a few DDP steps both ranks hold identical parameters and saw different batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ports import free_ports

from train.checkpoint import load_checkpoint
from weakly.fixtures import build_fixture

ROOT = Path(__file__).resolve().parents[1]


def test_two_torchrun_nodes_end_with_identical_parameters(tmp_path):
    data = build_fixture(tmp_path / "ds", samples=60, seed=3)
    out = tmp_path / "run"  # one folder for both nodes, as on a shared filesystem
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    endpoint = f"127.0.0.1:{free_ports(1)[0]}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    nodes = []
    # Under c10d the agents' ranks come from the rendezvous (torchrun says --node_rank is only
    # used by the static backend); is_host says which agent serves the rendezvous store, as on
    # a real cluster where only the endpoint's machine would be able to bind it.
    for node_rank in (0, 1):
        cmd = [
            torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node_rank),
            "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "weakly-test",
            "--rdzv_conf", f"is_host={node_rank == 0}", "--max_restarts", "0",
            "-m", "train", "--data", str(data), "--model", "tiny", "--out", str(out),
            "--steps", "4", "--batch-size", "4", "--image-size", "24", "--device", "cpu",
            "--workers", "0", "--shuffle-buffer", "8", "--log-every", "2", "--record-keys",
        ]  # fmt: skip
        log = open(tmp_path / f"node{node_rank}.log", "w")
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    try:
        codes = [node.wait(timeout=300) for node in nodes]
    finally:
        for node in nodes:  # only the two agents this test started (and their children)
            if node.poll() is None:
                node.kill()
                node.wait()
    logs = "".join((tmp_path / f"node{r}.log").read_text()[-3000:] for r in (0, 1))
    assert codes == [0, 0], logs
    done = [json.loads((out / f"done-rank{r}.json").read_text()) for r in (0, 1)]
    assert [d["world_size"] for d in done] == [2, 2]
    assert done[0]["step"] == done[1]["step"] == 4
    assert done[0]["param_sha256"] == done[1]["param_sha256"]
    keys = [(out / f"keys-rank{r}.jsonl").read_text().splitlines() for r in (0, 1)]
    assert len(keys[0]) == len(keys[1]) == 4 and keys[0] != keys[1]
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4 and [s["rank"] for s in ckpt["loader"]] == [0, 1]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4]  # rank 0 alone writes the metrics
