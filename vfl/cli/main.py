"""The ``vfl`` command line. Sub-commands live in sibling modules; this file only wires them."""

from __future__ import annotations

import sys

import typer

from vfl.cli.compare_cmd import compare
from vfl.cli.data_cmd import data_app
from vfl.cli.infer_cmd import infer, serve
from vfl.cli.infra_cmd import certs, coordinator
from vfl.cli.jsonlog import LogFormat, use_json_lines
from vfl.cli.keys_cmd import ca_app, keys, peer_app
from vfl.cli.party_cmd import party
from vfl.cli.pilot_cmd import pilot
from vfl.cli.status_cmd import status
from vfl.errors import VflError

app = typer.Typer(
    help="Vertical federated split learning for a two-organisation recommender.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    log_format: LogFormat = typer.Option(
        LogFormat.TEXT,
        "--log-format",
        envvar="VFL_LOG_FORMAT",
        help="text, or json: one JSON event per output line (for log collectors).",
    ),
) -> None:
    """Vertical federated split learning for a two-organisation recommender."""
    if log_format is LogFormat.JSON:
        use_json_lines(ctx.invoked_subcommand or "vfl")


app.add_typer(data_app, name="data")
app.command("compare")(compare)
app.command("keys")(keys)
app.add_typer(ca_app, name="ca")
app.add_typer(peer_app, name="peer")
app.command("certs")(certs)
app.command("certs-dev", hidden=True)(certs)  # the earlier name
app.command("coordinator")(coordinator)
app.command("status")(status)
app.command("party")(party)
app.command("pilot")(pilot)
app.command("infer")(infer)
app.command("serve")(serve)


def run() -> None:
    """Entry point: user mistakes (VflError) become one clear line on stderr and exit code 2."""
    try:
        app()
    except VflError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
