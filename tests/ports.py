"""Ports for servers the tests start as separate processes (a torchrun rendezvous, Ray nodes).

Why not "bind port 0, read it, close": that port comes from the kernel's ephemeral range, the
same range every outbound connection takes its local port from. Between closing it and the
server binding it, another test running beside this one (pytest-xdist, a local Ray opening
connections) can take it as a local port, and the server dies with EADDRINUSE. Ports below the
ephemeral range (and above Ray's worker ports, 10002-19999) are never handed out that way, so
once seen free they stay free unless another server asks for exactly that number.
"""

from __future__ import annotations

import os
import random
import socket
from contextlib import ExitStack, closing
from pathlib import Path

RAY_WORKER_PORTS_END = 19999


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int) -> list[int]:
    """n distinct ports, free a moment ago, outside the ephemeral range (all held open together
    while choosing, then released). Random per process, so parallel workers rarely meet."""
    low, high = RAY_WORKER_PORTS_END + 1, _ephemeral_start() - 1
    rng = random.Random(os.getpid() * 1_000_003 + os.getppid())
    candidates = rng.sample(range(low, high + 1), high - low + 1)
    with ExitStack() as stack:
        ports: list[int] = []
        for port in candidates:
            s = stack.enter_context(closing(socket.socket()))
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"fewer than {n} free ports in {low}-{high}")
