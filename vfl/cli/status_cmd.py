"""``vfl status``: the coordinator's view of the job, asked over a party's mutual TLS."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vfl.errors import ConfigError


def status(
    config: Path = typer.Option(..., "--config", help="A party config with a [network] section."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds to wait for C."),
) -> None:
    """Job, phase, epoch, parties connected and last heartbeats, from the coordinator."""
    from vfl.config.party import load_party_config, read_network_pems
    from vfl.transport.grpc_status import fetch_status

    net = load_party_config(config).network
    if net is None:
        raise ConfigError(
            str(config), "network", "missing", "pass a party config with a [network] section"
        )
    ca, cert, key = read_network_pems(net)
    job = fetch_status(net.coordinator, ca_pem=ca, cert_pem=cert, key_pem=key, timeout_s=timeout)
    connected = set(job.connected(net.lost_after_s))
    if as_json:
        parties = {
            name: {
                "connected": name in connected,
                "phase": s.phase,
                "state": s.state.value,
                "last_heartbeat_s": None if s.age_s is None else round(s.age_s, 1),
                "progress": s.progress,
            }
            for name, s in job.parties.items()
        }
        typer.echo(json.dumps({"coordinator": job.target, "job": job.job, "parties": parties}))
        return
    typer.echo(f"job {job.job} at {job.target}: {len(connected)}/{len(job.parties)} connected")
    for name, s in job.parties.items():
        if s.age_s is None:
            typer.echo(f"  {name:<12} not joined yet")
            continue
        link = "connected" if name in connected else "silent"
        extra = " ".join(f"{k}={v}" for k, v in sorted(s.progress.items()))
        typer.echo(
            f"  {name:<12} {link:<9} phase {s.phase or '-'} ({s.state.value}), last heartbeat "
            f"{s.age_s:.1f} s ago" + (f", {extra}" if extra else "")
        )
