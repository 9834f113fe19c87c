"""Ready-to-run network configs for a dev PKI: the coordinator's file and each party's [network].

Used by ``vfl certs`` and ``vfl pilot``. Everything is written next to the certificates:

* ``coordinator.toml``: bind address, job name, admitted parties (certificate common names),
  its TLS files and, given a job file, ``plan`` (what it hands out at join);
* ``<party>.network.toml``: a ``[network]`` section for that party -- coordinator address, CA,
  its certificate and key, its sealing key, and the **pinned** sealing public key of its peer;
  when both party configs are known, the peer's schema fingerprint is pinned too. With more
  than one passive party, E's section lists them as ``[[network.partners]]`` (each with its
  pinned key and schema) and each passive party's names E alone: no partner's file mentions
  another partner.

Given the party config files themselves, their ``[network]`` section is replaced in place.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfl.config.party import load_party_config
from vfl.config.plan import load_plan_file
from vfl.data.formats import dumps_toml
from vfl.party.handshake import schema_fingerprint


@dataclass(frozen=True)
class NetworkLayout:
    """Where the coordinator listens and which parties take part: E first, then its passive
    parties (one for the two-party layout)."""

    certs: Path
    parties: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 50051
    job_file: Path | None = None
    timeout_s: float = 600.0


def write_network_configs(
    layout: NetworkLayout, party_configs: dict[str, Path] | None = None
) -> dict[str, Path]:
    """Write ``coordinator.toml`` and one ``[network]`` per party; returns the files by name.

    ``party_configs`` maps party names to their config files, whose ``[network]`` is then
    rewritten (paths relative to each file) and whose schemas are pinned at the peer.

    Raises:
        ConfigError: a party config or the job file is invalid.
    """
    certs = layout.certs.resolve()
    configs = {k: v.resolve() for k, v in (party_configs or {}).items()}
    schemas = {name: schema_fingerprint(load_party_config(f)) for name, f in configs.items()}
    written = {"coordinator": _write_coordinator(layout, certs)}
    active, *partners = layout.parties
    if not partners:
        raise ValueError("a network layout needs E and at least one passive party")
    peers = {active: partners, **{k: [active] for k in partners}}
    for me, mine in peers.items():
        target = configs.get(me)
        base = target.parent if target is not None else certs
        section = _network_section(layout, certs, base, me, mine, schemas)
        snippet = certs / f"{me}.network.toml"
        snippet.write_text(dumps_toml({"network": _absolute(section, base)}))
        written[me] = snippet
        if target is not None:
            table = tomllib.loads(target.read_text())
            table["network"] = section
            target.write_text(dumps_toml(table))
            written[me] = target
    return written


def _write_coordinator(layout: NetworkLayout, certs: Path) -> Path:
    section: dict[str, Any] = {
        "bind": f"{layout.host}:{layout.port}",
        "job": "vfl-job",
        "parties": list(layout.parties),
        **({"active": layout.parties[0]} if len(layout.parties) > 2 else {}),
        "ca": "ca.pem",
        "cert": "coordinator.pem",
        "key": "coordinator.key",
    }
    if layout.job_file is not None:
        section["job"] = load_plan_file(layout.job_file).job.name
        section["plan"] = os.path.relpath(layout.job_file.resolve(), certs)
    path = certs / "coordinator.toml"
    path.write_text(dumps_toml({"coordinator": section}))
    return path


def _network_section(
    layout: NetworkLayout,
    certs: Path,
    base: Path,
    me: str,
    peers: list[str],
    schemas: dict[str, str],
) -> dict[str, Any]:
    """``me``'s ``[network]``: ``peer`` for one peer, ``[[network.partners]]`` for several."""

    def rel(name: str) -> str:
        return os.path.relpath(certs / name, base)

    section: dict[str, Any] = {
        "coordinator": f"{layout.host}:{layout.port}",
        "ca": rel("ca.pem"),
        "cert": rel(f"{me}.pem"),
        "key": rel(f"{me}.key"),
        "timeout_s": layout.timeout_s,
        "box_key": rel(f"{me}.box"),
    }
    if len(peers) == 1:
        section |= {"peer": peers[0], "peer_box_public": rel(f"{peers[0]}.box.pub")}
        if peers[0] in schemas:
            section["peer_schema_sha256"] = schemas[peers[0]]
        return section
    section["partners"] = [
        {"name": k, "box_public": rel(f"{k}.box.pub")}
        | ({"schema_sha256": schemas[k]} if k in schemas else {})
        for k in peers
    ]
    return section


def _absolute(section: dict[str, Any], base: Path) -> dict[str, Any]:
    """The snippet copy uses absolute paths, so it works pasted into any config."""
    keys = ("ca", "cert", "key", "box_key", "peer_box_public", "box_public")

    def fix(table: dict[str, Any]) -> dict[str, Any]:
        return {k: str((base / v).resolve()) if k in keys else v for k, v in table.items()}

    out = fix(section)
    if "partners" in out:
        out["partners"] = [fix(p) for p in out["partners"]]
    return out
