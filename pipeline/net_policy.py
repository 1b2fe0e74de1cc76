"""Which addresses the fetcher may connect to (`--allow-networks`, `--deny-networks`).

Why: manifest URLs come from the web. Without a policy a row naming
`http://169.254.169.254/latest/meta-data/iam/...` (or a redirect to it, or a host name whose
DNS answer is that address) has the ingest machine fetch its cloud credentials and write them
into a shard as a rejected-or-not row. So every address is checked where the socket is
connected: the fetcher resolves a host once, checks each address, and connects to the address
it checked (pipeline/http_connect.py), on every redirect hop. A host whose DNS answer changes
between a check and the connect (DNS rebinding) gains nothing, since no second lookup is made.

The rule, in one line: an address in an `--allow-networks` network is fetched; otherwise one
in a denied network (`DEFAULT_DENY` plus `--deny-networks`) is rejected `blocked_address`;
every other address is fetched. By default only link-local addresses and the cloud metadata
endpoints are denied: loopback and private networks stay reachable (local test servers,
an image cache on the LAN); deny them with `--deny-networks 127.0.0.0/8,::1/128,10.0.0.0/8,
172.16.0.0/12,192.168.0.0/16,fc00::/7`. `--allow-networks 0.0.0.0/0,::/0` turns the policy
off; `--deny-networks 0.0.0.0/0,::/0 --allow-networks NET` fetches from NET only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Link-local (IPv4 and IPv6; AWS, GCP, Azure, Oracle, DigitalOcean and OpenStack metadata at
# 169.254.169.254, ECS task credentials at 169.254.170.2) and the AWS IPv6 metadata address.
DEFAULT_DENY = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")


def parse_networks(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """CIDR networks from "a,b c" or a list, normalised (`10.1.2.3/8` -> `10.0.0.0/8`, a bare
    address -> /32 or /128), sorted and deduplicated, so that equal policies are equal configs.
    A bad entry raises ValueError naming it."""
    if value is None:
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    found = set()
    for item in items:
        try:
            found.add(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (use CIDR, e.g. 10.0.0.0/8)") from None
    ordered = sorted(found, key=lambda n: (n.version, n.network_address, n.prefixlen))
    return tuple(str(n) for n in ordered)


@dataclass(frozen=True)
class NetworkPolicy:
    allow: tuple[Network, ...]
    deny: tuple[tuple[Network, str], ...]  # (network, where it comes from)

    def blocked(self, address: str) -> str | None:
        """Why `address` may not be connected to, or None when it may."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address[:60]} is not an IP address"
        candidates = [ip]
        if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:169.254.169.254
            candidates.append(ip.ipv4_mapped)
        for candidate in candidates:
            if any(candidate in net for net in self.allow if net.version == candidate.version):
                return None
        for candidate in candidates:
            for net, origin in self.deny:
                if net.version == candidate.version and candidate in net:
                    return f"{ip} is in {net} ({origin})"
        return None


@lru_cache(maxsize=64)
def network_policy(allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()) -> NetworkPolicy:
    """The policy for a config's `allow_networks` and `deny_networks` (both as parsed)."""
    defaults = [(ipaddress.ip_network(n), "denied by default") for n in DEFAULT_DENY]
    given = [(ipaddress.ip_network(n), "--deny-networks") for n in deny]
    return NetworkPolicy(tuple(ipaddress.ip_network(n) for n in allow), tuple(given + defaults))
