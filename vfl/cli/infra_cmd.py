"""``vfl certs`` and ``vfl coordinator``: the infrastructure a pilot needs besides parties."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from vfl.errors import ConfigError

if TYPE_CHECKING:
    from vfl.transport.certs import DevPki


def certs(
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    parties: str = typer.Option(
        "shop,payments",
        "--parties",
        help="Party names (certificate CNs), comma-separated: E first, then each passive party.",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Host name or IP the parties use to reach the coordinator."
    ),
    port: int = typer.Option(50051, "--port", min=1, max=65535, help="Coordinator port."),
    job: Path = typer.Option(None, "--job", help="Job file the coordinator hands out as plan."),
    party_config: list[Path] = typer.Option(
        [], "--party-config", help="A party config whose [network] section to (re)write."
    ),
) -> None:
    """One-machine development shortcut: all keys in one directory (see vfl keys for real)."""
    from vfl.cli.netconfig import NetworkLayout, write_network_configs
    from vfl.config.party import load_party_config
    from vfl.transport.certs import generate_dev_pki
    from vfl.transport.sealing import write_box_keys

    names = [p.strip() for p in parties.split(",") if p.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(
            "command line",
            "--parties",
            f"'{parties}' names {len(names)} distinct parties; a job has E and at least one "
            "passive party, each once",
            "give E's name first, then each passive party's, e.g. --parties shop,payments",
        )
    configs = {load_party_config(f).party.name: f for f in party_config}
    unknown = sorted(set(configs) - set(names))
    if unknown:
        raise ConfigError(
            str(configs[unknown[0]]),
            "party.name",
            f"'{unknown[0]}' is not one of --parties {parties}",
            "list that party in --parties, or pass the right config",
        )
    # each party also gets <name>-https.pem/.key for `vfl serve`'s API (only E serves one)
    pki = generate_dev_pki(out, parties=names, coordinator_host=host, services=names)
    sealing = {name: write_box_keys(out, name) for name in names}
    layout = NetworkLayout(out, tuple(names), host=host, port=port, job_file=job)
    written = write_network_configs(layout, configs)
    typer.echo(
        f"dev PKI for coordinator host {host}: the one-machine development shortcut. It writes "
        "every party's private keys into one directory; across organisations each one runs "
        "'vfl keys' on its own host instead (docs/deploy.md)."
    )
    _echo_files(pki, sealing, written)


def _echo_files(
    pki: DevPki, sealing: dict[str, tuple[Path, Path]], written: dict[str, Path]
) -> None:
    typer.echo(f"  {'ca':<13} {pki.ca}")
    for name, files in {"coordinator": pki.coordinator, **pki.parties}.items():
        typer.echo(f"  {name:<13} {files.cert}")
        typer.echo(f"  {'':<13} {files.key}")
    for name, (private, public) in sealing.items():
        typer.echo(f"  {name + ' seal':<13} {private} (public half {public.name}, pinned at peer)")
    for name, path in written.items():
        typer.echo(f"  {name + ' config':<13} {path}")


def coordinator(
    config: Path = typer.Option(..., "--config", help="Coordinator config TOML."),
) -> None:
    """Run the coordinator for one job until Ctrl-C or SIGTERM."""
    from vfl.config.coordinator import load_coordinator_config
    from vfl.coordinator.service import run_coordinator

    run_coordinator(load_coordinator_config(config), config_file=config)
