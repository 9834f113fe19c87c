"""``vfl certs-dev`` and ``vfl coordinator``: the infrastructure a pilot needs besides parties."""

from __future__ import annotations

from pathlib import Path

import typer

from vfl.errors import ConfigError


def certs_dev(
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    parties: str = typer.Option(
        "shop,payments", "--parties", help="Comma-separated party names (certificate CNs)."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Host name or IP the parties use to reach the coordinator."
    ),
) -> None:
    """Write a development CA, a coordinator certificate and one certificate per party."""
    from vfl.transport.certs import generate_dev_pki
    from vfl.transport.sealing import write_box_keys

    names = [p.strip() for p in parties.split(",") if p.strip()]
    if len(names) < 2:
        raise ConfigError(
            "command line",
            "--parties",
            f"'{parties}' names fewer than two parties",
            "give both party names, e.g. --parties shop,payments",
        )
    pki = generate_dev_pki(out, parties=names, coordinator_host=host)
    sealing = {name: write_box_keys(out, name) for name in names}
    typer.echo(f"dev PKI for coordinator host {host} (not for production):")
    typer.echo(f"  {'ca':<13} {pki.ca}")
    for name, files in {"coordinator": pki.coordinator, **pki.parties}.items():
        typer.echo(f"  {name:<13} {files.cert}")
        typer.echo(f"  {'':<13} {files.key}")
    for name, (private, public) in sealing.items():
        typer.echo(f"  {name + ' seal':<13} {private} (pin {public.name} at the other party)")


def coordinator(
    config: Path = typer.Option(..., "--config", help="Coordinator config TOML."),
) -> None:
    """Run the coordinator's relay for one job until Ctrl-C or SIGTERM."""
    from vfl.config.coordinator import load_coordinator_config
    from vfl.coordinator.service import run_coordinator

    run_coordinator(load_coordinator_config(config))
