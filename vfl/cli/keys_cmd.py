"""``vfl keys``, ``vfl ca init|sign`` and ``vfl peer add``: key custody across organisations.

Each organisation makes its own private keys on its own host (``vfl keys``) and sends on only
its certificate request and its public sealing key; a CA role signs requests (``vfl ca``) and
never sees a private key; each party pins its partner's public sealing key after comparing the
fingerprint read out over a second channel (``vfl peer add``). ``docs/deploy.md`` walks through
it on three hosts. ``vfl certs`` remains the one-machine shortcut.
"""

from __future__ import annotations

import stat
from pathlib import Path

import typer

from vfl.errors import ConfigError

ca_app = typer.Typer(help="The CA role: create the job's CA once, then sign requests.")
peer_app = typer.Typer(help="Pin a partner organisation's public sealing key.")


def _show(path: Path, note: str) -> None:
    """One line per written file: mode, path and what to do with it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    typer.echo(f"  {mode:04o}  {path}  ({note})")


def keys(
    party: str = typer.Option(
        ...,
        "--party",
        help="Your name: the certificate CN, or 'coordinator' for the coordinator's server key.",
    ),
    out: Path = typer.Option(..., "--out", help="Your key directory (created; keep it private)."),
    host: list[str] = typer.Option(
        [], "--host", help="coordinator only: a host name or IP the parties dial (repeatable)."
    ),
) -> None:
    """Make your TLS private key, a certificate request and (parties) a sealing key pair."""
    from vfl.transport.box_keys import readable, write_box_key_pair
    from vfl.transport.pki import COORDINATOR, create_request

    if host and party != COORDINATOR:
        raise ConfigError(
            "command line",
            "--host",
            "only the coordinator's key has hosts",
            "drop --host, or use --party coordinator",
        )
    request = create_request(out, party, hosts=host)
    typer.echo(f"keys for {party} in {out}:")
    _show(request.key, "secret: never leaves this directory")
    _show(request.request, "send to the CA: 'vfl ca sign'")
    if party == COORDINATOR:
        return
    pair = write_box_key_pair(out, party)
    _show(pair.private, "secret: never leaves this directory")
    _show(pair.public, "send to the partner: 'vfl peer add'")
    typer.echo(
        f"sealing key fingerprint (read it out to the partner): {readable(pair.fingerprint)}"
    )


@ca_app.command("init")
def ca_init(
    out: Path = typer.Option(..., "--out", help="The CA's directory (created; ca.key stays here)."),
    name: str = typer.Option("vfl job CA", "--name", help="The CA certificate's common name."),
    days: int = typer.Option(730, "--days", min=1, help="Validity of the CA certificate."),
) -> None:
    """Create the job's CA: ca.pem (give to everyone) and ca.key (keep)."""
    from vfl.transport.pki import init_ca

    files = init_ca(out, common_name=name, days=days)
    typer.echo(f"CA '{name}' in {out}:")
    _show(files.key, "secret: the CA's own key, never leaves this directory")
    _show(files.cert, "give to every organisation: the 'ca' of their configs")


@ca_app.command("sign")
def ca_sign(
    request: Path = typer.Argument(..., help="The .csr an organisation sent."),
    party: str = typer.Option(
        ...,
        "--party",
        help="The name agreed with that organisation ('coordinator' for the server certificate).",
    ),
    ca: Path = typer.Option(Path("."), "--ca", help="The CA directory of 'vfl ca init'."),
    out: Path = typer.Option(
        None, "--out", help="Certificate file (default: <party>.pem next to the request)."
    ),
    days: int = typer.Option(365, "--days", min=1, help="Validity of the certificate."),
) -> None:
    """Sign one request whose common name is --party; write its certificate."""
    from vfl.transport.pki import sign_request

    cert = sign_request(ca, request, party=party, out=out, days=days)
    typer.echo(f"signed {request} for {party}:")
    _show(cert, f"send back to {party}, with ca.pem")


@peer_app.command("add")
def peer_add(
    name: str = typer.Option(..., "--name", help="The partner's party name."),
    box_public: Path = typer.Option(..., "--box-public", help="The partner's .box.pub file."),
    fingerprint: str = typer.Option(
        ..., "--fingerprint", help="The fingerprint the partner read out (spaces allowed)."
    ),
    keys_dir: Path = typer.Option(Path("."), "--keys", help="Your key directory."),
) -> None:
    """Check the partner's public sealing key against its fingerprint, then pin it."""
    from vfl.transport.box_keys import pin_peer_key
    from vfl.transport.pki import check_name

    pinned = pin_peer_key(
        box_public, name=check_name(name, what="--name"), expected=fingerprint, out_dir=keys_dir
    )
    typer.echo(f"pinned the sealing key of {name} (fingerprint matches):")
    _show(pinned, "public: the partner's key, checked")
    typer.echo(f'  in your party config: [network] peer = "{name}", peer_box_public = "{pinned}"')
