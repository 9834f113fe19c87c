"""Three Linux network namespaces standing in for three hosts: C, E and P on one private LAN.

Layout (created and removed by :class:`Hosts`; nothing outside the namespaces is touched)::

    [E] eth0 10.213.0.2/24 ──veth── ce ┐
                                       ├─ br0 10.213.0.1/24 [C]
    [P] eth0 10.213.0.3/24 ──veth── cp ┘

:meth:`Hosts.guard` loads an nftables ruleset into E or P that drops every inbound connection
(only loopback and replies to connections the namespace opened itself get in), so E and P can
only dial out, as an organisation behind its firewall does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.213.0"
ADDRESS = {"c": f"{SUBNET}.1", "e": f"{SUBNET}.2", "p": f"{SUBNET}.3"}
GUARD = """
table inet vfl_guard {
  chain input {
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    ct state established,related accept
  }
}
"""


def why_unavailable() -> str | None:
    """Why namespaces with nftables cannot be used here, or None if they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CI runs as root)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (apt-get install iproute2 nftables)"
    probe = f"vfl-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    try:
        rules = subprocess.run(
            ["ip", "netns", "exec", probe, "nft", "-f", "-"],
            input=GUARD,
            capture_output=True,
            text=True,
        )
        if rules.returncode != 0:
            return f"nftables unusable in a namespace: {rules.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Hosts:
    """Namespaces ``<prefix>-c``, ``-e`` and ``-p``, joined as in the module docstring."""

    prefix: str = field(default_factory=lambda: f"vfl{os.getpid()}")
    created: list[str] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def create(self) -> None:
        """Make the three namespaces, the bridge in C and a veth link from it to E and to P."""
        for host in ("c", "e", "p"):
            _ip("netns", "add", self.ns(host))
            self.created.append(self.ns(host))
            _ip("-n", self.ns(host), "link", "set", "lo", "up")
        c = self.ns("c")
        _ip("-n", c, "link", "add", "br0", "type", "bridge")
        _ip("-n", c, "addr", "add", f"{ADDRESS['c']}/24", "dev", "br0")
        _ip("-n", c, "link", "set", "br0", "up")
        for host in ("e", "p"):
            port = f"c{host}"
            _ip("-n", c, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", self.ns(host))  # fmt: skip
            _ip("-n", c, "link", "set", port, "master", "br0")
            _ip("-n", c, "link", "set", port, "up")
            _ip("-n", self.ns(host), "addr", "add", f"{ADDRESS[host]}/24", "dev", "eth0")
            _ip("-n", self.ns(host), "link", "set", "eth0", "up")

    def guard(self, host: str) -> None:
        """Drop every inbound connection to ``host`` (nftables, inside its namespace only)."""
        subprocess.run(
            ["ip", "netns", "exec", self.ns(host), "nft", "-f", "-"],
            input=GUARD,
            check=True,
            capture_output=True,
            text=True,
        )

    def argv(self, host: str, *command: str) -> list[str]:
        """``command`` run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *command]

    def remove(self) -> None:
        """Delete the namespaces (their links, bridge and rules go with them)."""
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.created.clear()


def child_env(root: Path) -> dict[str, str]:
    """The environment of a ``python -m vfl`` child: this checkout, no proxies."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return {**env, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
