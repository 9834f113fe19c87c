"""``vfl party``: run one organisation's party process against the coordinator."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from vfl.config.job import load_job_config
from vfl.config.party import Role, load_party_config, read_network_pems
from vfl.errors import ConfigError
from vfl.training.loop import EpochRecord

console = Console(stderr=True, width=120)


def _progress(name: str, r: EpochRecord) -> None:
    console.print(
        f"[bold]{name}[/] epoch {r.epoch:>3}  loss {r.train_loss:.4f}  "
        f"valid NDCG@{r.valid.k} {r.valid.ndcg:.4f}  test AUC {r.test.auc:.4f} "
        f"HR@{r.test.k} {r.test.hr:.4f}  {r.seconds:.1f}s"
    )


def party(
    config: Path = typer.Option(..., help="This party's config (with a [network] section)."),
    job: Path = typer.Option(..., help="The job config both parties agreed on."),
    out: Path = typer.Option(Path("runs/party"), help="This party's work directory."),
    epochs: int = typer.Option(None, min=1, help="Override the job's train.epochs (E only)."),
) -> None:
    """Connect to the coordinator, align users by PSI, then train over the encrypted protocol."""
    from vfl.party.active import run_active
    from vfl.party.passive import run_passive
    from vfl.transport.grpc_channel import GrpcChannel
    from vfl.transport.sealing import SealedChannel, read_key

    cfg = load_party_config(config)
    job_cfg = load_job_config(job)
    net = cfg.network
    if net is None or net.peer is None:
        key = "network" if net is None else "network.peer"
        raise ConfigError(
            str(config),
            key,
            "missing: the party needs the coordinator address, "
            "its certificates and the other party's name",
            "add [network] with coordinator, ca, cert, key and peer",
        )
    if net.box_key is None or net.peer_box_public is None:
        raise ConfigError(
            str(config),
            "network.box_key" if net.box_key is None else "network.peer_box_public",
            "missing: E-P traffic is sealed end to end with pinned keys",
            "name this party's sealing key and the peer's public key "
            "(written by 'vfl certs-dev' as <party>.box and <party>.box.pub)",
        )
    ca, cert, key_pem = read_network_pems(net)
    grpc_channel = GrpcChannel(
        net.coordinator,
        me=cfg.party.name,
        peer=net.peer,
        ca_pem=ca,
        cert_pem=cert,
        key_pem=key_pem,
        job_id=job_cfg.job.name,
        timeout_s=net.timeout_s,
    )
    channel = SealedChannel(
        grpc_channel,
        private_key=read_key(net.box_key, "network.box_key"),
        peer_public_key=read_key(net.peer_box_public, "network.peer_box_public"),
    )
    console.print(
        f"{cfg.party.name} ({cfg.role.value}) -> coordinator {net.coordinator}, "
        f"peer {net.peer}, job {job_cfg.job.name}"
    )
    out.mkdir(parents=True, exist_ok=True)
    try:
        if cfg.role is Role.ACTIVE:
            metrics = run_active(
                cfg, job_cfg, channel, out, epochs=epochs, timeout=net.timeout_s, progress=_progress
            )
            row = metrics["split_encrypted"]
            console.print(
                f"done: test AUC {row['auc']:.4f}, HR@10 {row['hr@10']:.4f}; "
                f"wrote {out / 'metrics.json'}"
            )
        else:
            summary = run_passive(cfg, job_cfg, channel, out, timeout=net.timeout_s)
            console.print(
                f"done: {summary['aligned_users']} aligned users, "
                f"{summary['steps']} training steps served"
            )
    finally:
        channel.close()
