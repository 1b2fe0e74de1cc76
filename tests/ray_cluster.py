"""A real two-node Ray cluster on this machine, for tests: a head and a worker, each its own
`ray start --block` process in its own session, with private ports, temp dir and auth token.

Why `--block` in a new session: other engineers run Ray on the same machine, so a global
`ray stop` is out. A blocking `ray start` owns every process it launched and shuts them all
down on SIGTERM; its session id lets us SIGKILL exactly those processes if it does not.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from ports import free_ports

RAY = str(Path(sys.executable).with_name("ray"))


class LocalCluster:
    """Head + one worker node, one CPU each; `env` is what clients of this cluster need."""

    def __init__(self, root: Path, pythonpath: str, cpus_per_node: int = 1):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # Ray's unix sockets live under --temp-dir and AF_UNIX paths stop at 107 bytes, so the
        # nodes' temp dirs are short ones of our own rather than pytest's long tmp_path.
        self.temp = Path(tempfile.mkdtemp(prefix="wkr-", dir="/tmp"))
        self.cpus = cpus_per_node
        self.procs: list[subprocess.Popen] = []
        (
            self.gcs_port,
            self.dashboard_port,
            self.client_port,
            *self._node_ports,
        ) = free_ports(3 + 2 * 3)
        self.env = {
            **os.environ,
            "PYTHONPATH": pythonpath,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),  # private: never ~/.ray/auth_token
            "RAY_USAGE_STATS_ENABLED": "0",
            "OMP_NUM_THREADS": "1",
        }
        self.env.pop("RAY_ADDRESS", None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_args(self, i: int) -> list[str]:
        agent, metrics, runtime_env = self._node_ports[3 * i : 3 * i + 3]
        temp = self.temp / f"n{i}"
        temp.mkdir()
        return [
            "--block", "--num-cpus", str(self.cpus), "--temp-dir", str(temp),
            "--object-store-memory", str(100 * 1024 * 1024),
            "--dashboard-agent-listen-port", str(agent), "--metrics-export-port", str(metrics),
            "--runtime-env-agent-port", str(runtime_env), "--disable-usage-stats",
        ]  # fmt: skip

    def _start(self, args: list[str], name: str) -> None:
        log = open(self.root / f"{name}.log", "wb")
        cwd = self.root / "ray-cwd"  # not the test's cwd: relative paths must not work by luck
        cwd.mkdir(exist_ok=True)
        self.procs.append(
            subprocess.Popen(
                [RAY, "start", *args],
                env=self.env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        )
        log.close()

    def start(self, timeout: float = 120) -> None:
        self._start(
            [
                "--head", "--port", str(self.gcs_port), "--node-ip-address", "127.0.0.1",
                "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(self.dashboard_port),
                "--ray-client-server-port", str(self.client_port), *self._node_args(0),
            ],
            "head",
        )  # fmt: skip
        # The worker only needs the GCS, not the dashboard: start it as soon as the GCS listens.
        deadline = time.monotonic() + timeout
        while not _listening(self.gcs_port):
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"the head's GCS never listened:\n{self.logs()}")
            time.sleep(0.2)
        self._start(["--address", self.address, *self._node_args(1)], "worker")
        self._wait_started("head", timeout)
        self._wait_started("worker", timeout)

    def _wait_started(self, name: str, timeout: float) -> None:
        """A blocking `ray start` logs this line once its node has joined the cluster."""
        deadline = time.monotonic() + timeout
        log = self.root / f"{name}.log"
        while time.monotonic() < deadline:
            if "Ray runtime started" in log.read_text(errors="replace"):
                return
            if self.procs[["head", "worker"].index(name)].poll() is not None:
                raise RuntimeError(f"ray start ({name}) exited early:\n{self.logs()}")
            time.sleep(0.5)
        raise RuntimeError(f"ray start ({name}) not up in {timeout}s:\n{self.logs()}")

    def alive_nodes(self) -> int:
        """Alive nodes as the GCS reports them, asked from a fresh client process."""
        code = (
            f"import ray; ray.init(address={self.address!r}, log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True,
            timeout=120, cwd=self.root,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"cannot reach the cluster: {proc.stderr[-2000:]}")
        return int(proc.stdout.strip().splitlines()[-1])

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    def stop(self) -> None:
        """SIGTERM each `ray start --block` (it drains and stops its own processes), worker
        first; whatever of their sessions is left after a grace period is SIGKILLed."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 45
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            for pid in session_members(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if proc.poll() is None:
                proc.wait(timeout=10)
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _listening(port: int) -> bool:
    with closing(socket.socket()) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is `sid` (only sessions this module created)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid:
                found.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return found
