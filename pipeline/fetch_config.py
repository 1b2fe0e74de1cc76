"""What a fetch may cost and how it fails: the options of `weakly ingest`'s fetcher and the
row-level error every fetch failure becomes (its reason lands in the rejects table)."""

from __future__ import annotations

from dataclasses import dataclass

from .net_policy import NetworkPolicy, network_policy, parse_networks
from .rejects import RowReject

USER_AGENT = "weakly-ingest/0.1 (+dataset builder)"


class FetchError(RowReject):
    """A row rejected while fetching its bytes."""


@dataclass(frozen=True)
class FetchConfig:
    timeout: float = 10.0  # seconds per socket operation
    deadline: float = 30.0  # seconds for the whole row, retries included
    retries: int = 2
    backoff: float = 0.5  # first retry waits this long, then doubles
    max_bytes: int = 32 << 20
    threads: int = 16
    path_root: str | None = None  # when set, `path` rows must name files inside it
    per_host: int | None = None  # at most this many requests in flight per host (None: threads)
    # Networks the fetcher may / may not connect to, beyond the default-denied link-local and
    # metadata addresses (pipeline/net_policy.py). Normalised and sorted: equal policies give
    # equal config.json.
    allow_networks: tuple[str, ...] = ()
    deny_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("allow_networks", "deny_networks"):
            try:
                value = parse_networks(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"--{name.replace('_', '-')}: {exc}") from None
            object.__setattr__(self, name, value)

    @property
    def network_policy(self) -> NetworkPolicy:
        return network_policy(self.allow_networks, self.deny_networks)


DEFAULT_FETCH = FetchConfig()  # the defaults, as one shared value for argument defaults
