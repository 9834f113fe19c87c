"""One party process end to end: join C, handshake with the peer, PSI, training, evaluation.

1. Dial the coordinator (mutual TLS, outbound only) and **join**: C checks this party's
   certificate against the job and hands out the job plan (saved as ``job_plan.json``).
2. Start the **heartbeat** thread; from now on a silent peer is reported by name.
3. Seal the channel to the peer with the pinned keys and run the **handshake**
   (:mod:`vfl.party.handshake`): a mismatch stops the job, naming each field.
4. **PSI** and alignment, then **training** and evaluation (E drives, P serves).
5. Report ``done`` or ``failed`` (the error's class name only: messages may quote ids) to
   the coordinator, then close. What the heartbeats carry is what the party's ``[party]
   publish`` allows (:mod:`vfl.party.publishing`; default: phase and E's epoch number).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfl.checkpoint import CheckpointStore
from vfl.config.party import NetworkSection, PartyConfig, Role, read_network_pems
from vfl.config.plan import JobPlan, load_plan_file
from vfl.errors import (
    ChannelTimeout,
    ConfigError,
    ParameterMismatch,
    PeerLost,
    ProtocolError,
    field_differences,
)
from vfl.party.accounting import CountingChannel, PhaseMeter
from vfl.party.active import run_active, write_metrics
from vfl.party.exporting import (
    confirm_from_manifest,
    is_exported,
    restore_shard,
    shard_exporter,
    shard_files,
    shard_identity,
)
from vfl.party.handshake import handshake
from vfl.party.passive import finished_summary, run_passive
from vfl.party.publishing import Publisher
from vfl.party.resume import Position, agree_position, latest_position, party_store, show
from vfl.phases import Phase
from vfl.storage import atomic_write_text, ensure_dir
from vfl.training.loop import EpochRecord, ProgressFn
from vfl.transport.board import PartyState
from vfl.transport.grpc_channel import GrpcChannel
from vfl.transport.sealing import SealedChannel, read_key
from vfl.transport.session import open_session

_EXPORTING = (Phase.EXPORT, 0)  # trained, shard bytes saved, export not yet confirmed


@dataclass(frozen=True)
class PartyRun:
    """How to run this party: its config (and file), work directory and optional overrides."""

    cfg: PartyConfig
    config_file: Path
    out: Path
    job_file: Path | None = None  # a local plan to check against C's
    epochs: int | None = None
    local_seed: int | None = None


def run_party(
    run: PartyRun, *, emit: Callable[[str], None], progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; returns E's metrics or P's summary.

    Raises:
        ConfigError: the ``[network]`` section is incomplete, or no plan is available.
        ParameterMismatch: the plans or agreed parameters differ (fields named).
        TransportError, ChannelTimeout, PeerLost, ProtocolError: from the channel.
    """
    net = _network(run)
    grpc_channel = _dial(run.cfg, net, emit)
    emit(
        f"{run.cfg.party.name}: dialling the coordinator at {net.coordinator} "
        f"(network.connect_timeout_s = {net.connect_timeout_s:g} s)"
    )
    publish = Publisher(grpc_channel, run.cfg)
    try:
        reply = grpc_channel.join()
        plan = _plan(run, reply.plan)
        ensure_dir(run.out, private=True)  # the party's work directory holds its secrets
        atomic_write_text(run.out / "job_plan.json", plan.to_json(), private=True)
        grpc_channel.start_heartbeat(interval_s=net.heartbeat_s, lost_after_s=net.lost_after_s)
        emit(
            f"{run.cfg.party.name} ({run.cfg.role.value}) joined job {reply.job} at "
            f"{net.coordinator}, plan {plan.fingerprint()[:16]}, peer {net.peer}"
        )
        result = _run_sealed(run, net, publish, plan, emit, progress)
    except BaseException as exc:
        publish.failed(exc)
        grpc_channel.close()
        if isinstance(exc, ChannelTimeout | ProtocolError) and not isinstance(
            exc, ParameterMismatch
        ):
            emit(
                f"{run.cfg.party.name}: stopped ({type(exc).__name__}); the checkpoints in "
                f"{run.out / 'checkpoints'} are kept: re-run the same command to resume"
            )
        raise
    publish.done(result)
    grpc_channel.close()
    return result


def _run_sealed(
    run: PartyRun,
    net: NetworkSection,
    publish: Publisher,
    plan: JobPlan,
    emit: Callable[[str], None],
    progress: ProgressFn | None,
) -> dict[str, Any]:
    """Steps 3-4: session, handshake, resume position, PSI, training over the sealed channel."""
    cfg, name = run.cfg, run.cfg.party.name
    store = party_store(cfg, plan, run.out)
    mine = latest_position(store)
    finished = is_exported(store)
    if finished and cfg.role is Role.PASSIVE:
        emit(f"{name}: the job already finished here (checkpoint {store.directory})")
        return _finished(run, plan, store, emit)
    grpc_channel = publish.channel
    counter = CountingChannel(grpc_channel)  # bytes on the wire, per phase (E's metrics)
    meter = PhaseMeter(counter)
    try:
        meter.enter(Phase.HANDSHAKE)
        channel = _session(run, net, counter)
        channel.phase = Phase.HANDSHAKE
        publish.phase(Phase.HANDSHAKE)
        handshake(channel, cfg, plan, timeout=net.timeout_s, peer_schema=net.peer_schema_sha256)
        agreed = agree_position(channel, mine, me=name, timeout=net.timeout_s)
    except (PeerLost, ChannelTimeout):
        if finished:  # E restarted after the end and P is gone: P had its confirmation
            return _finished(run, plan, store, emit)
        if cfg.role is Role.PASSIVE and _peer_finished(grpc_channel) and mine == _EXPORTING:
            emit(f"{name}: {net.peer} finished the job; finishing the export on the manifest")
            confirm_from_manifest(store, run.out / "model", shard_identity(cfg, plan))
            return _finished(run, plan, store, emit)
        raise
    emit(
        f"{name}: handshake with {net.peer} agreed on plan and parameters; "
        + (f"resuming from {show(agreed)}" if agreed or mine else "starting")
    )
    store.discard_after(agreed)
    if agreed is not None and agreed[0] is Phase.EXPORT:  # both trained: export again
        return _export_again(run, net, publish, plan, channel, store, emit)
    return _run_phases(run, net, publish, plan, channel, store, agreed, emit, progress, meter)


def _finished(
    run: PartyRun, plan: JobPlan, store: CheckpointStore, emit: Callable[[str], None]
) -> dict[str, Any]:
    """A party whose export is confirmed: its shard (re-written if it went missing or
    changed), E's metrics rewritten; returns E's metrics or P's summary."""
    out = run.out / "model"
    if restore_shard(store, out, shard_identity(run.cfg, plan)):
        emit(f"{run.cfg.party.name}: re-wrote its shard in {out} from the export checkpoints")
    if run.cfg.role is Role.PASSIVE:
        return dict(finished_summary(store))
    metrics: dict[str, Any] = store.load(Phase.EVAL, 0).meta["metrics"]
    write_metrics(run.out, metrics)
    return metrics


def _export_again(
    run: PartyRun,
    net: NetworkSection,
    publish: Publisher,
    plan: JobPlan,
    channel: SealedChannel,
    store: CheckpointStore,
    emit: Callable[[str], None],
) -> dict[str, Any]:
    """Both parties hold their ``export`` 0 checkpoint: redo the export from its bytes."""
    exporter = shard_exporter(
        channel, run.out / "model", run.cfg, plan, timeout=net.timeout_s, store=store
    )
    channel.phase = Phase.EXPORT
    publish.phase(Phase.EXPORT)
    emit(f"{run.cfg.party.name}: phase export")
    exporter.exchange(shard_files(store.load(Phase.EXPORT, 0)))
    return _finished(run, plan, store, emit)


def _peer_finished(grpc_channel: GrpcChannel) -> bool:
    """Whether the coordinator last saw the peer report that it finished the job."""
    status = grpc_channel.peer_status()
    return status is not None and status.state is PartyState.DONE


def _run_phases(
    run: PartyRun,
    net: NetworkSection,
    publish: Publisher,
    plan: JobPlan,
    channel: SealedChannel,
    store: CheckpointStore,
    agreed: Position | None,
    emit: Callable[[str], None],
    progress: ProgressFn | None,
    meter: PhaseMeter,
) -> dict[str, Any]:
    """Step 4 from the agreed position: PSI unless aligned, then training (E) or serving (P)."""
    cfg = run.cfg
    export_to = shard_exporter(
        channel, run.out / "model", cfg, plan, timeout=net.timeout_s, store=store
    )

    def phase(name: Phase) -> None:
        channel.phase = name
        publish.phase(name)
        emit(f"{cfg.party.name}: phase {name}")

    if cfg.role is Role.PASSIVE:
        return dict(
            run_passive(
                cfg,
                plan,
                channel,
                run.out,
                timeout=net.timeout_s,
                phase=phase,
                local_seed=run.local_seed,
                export=export_to,
                store=store,
                resume_at=agreed,
            )
        )
    return run_active(
        cfg,
        plan,
        channel,
        run.out,
        epochs=run.epochs,
        timeout=net.timeout_s,
        progress=_publishing(publish, progress),
        phase=phase,
        local_seed=run.local_seed,
        meter=meter,
        export=export_to,
        store=store,
        resume_at=agreed,
    )


def _box_keys(run: PartyRun, net: NetworkSection) -> tuple[bytes, bytes]:
    """This party's sealing key and the peer's pinned public key, read from ``[network]``."""
    if net.box_key is None or net.peer_box_public is None:  # checked by _network
        raise ConfigError(str(run.config_file), "network.box_key", "missing", "see 'vfl certs'")
    return (
        read_key(net.box_key, "network.box_key"),
        read_key(net.peer_box_public, "network.peer_box_public"),
    )


def _session(
    run: PartyRun, net: NetworkSection, counter: CountingChannel, *, timeout: float | None = None
) -> SealedChannel:
    """A fresh session to the peer, sealed with this party's key and the peer's pinned key.

    The session window is ``timeout``, by default three message timeouts: long enough for a
    restarted peer.
    """
    private_key, peer_public_key = _box_keys(run, net)
    return open_session(
        counter,
        private_key=private_key,
        peer_public_key=peer_public_key,
        job_id=counter.inner.job_id,
        me=run.cfg.party.name,
        timeout=3 * net.timeout_s if timeout is None else timeout,
    )


def _publishing(publish: Publisher, progress: ProgressFn | None) -> ProgressFn:
    """E's epoch callback: publish what ``[party] publish`` allows to C, then ``progress``."""

    def on_epoch(name: str, record: EpochRecord) -> None:
        publish.epoch(record)
        if progress is not None:
            progress(name, record)

    return on_epoch


def _network(run: PartyRun) -> NetworkSection:
    """The ``[network]`` section, complete enough to join a job and seal to the peer."""
    net = run.cfg.network
    where = str(run.config_file)
    if net is None or net.peer is None:
        raise ConfigError(
            where,
            "network" if net is None else "network.peer",
            "missing: the party needs the coordinator address, "
            "its certificates and the other party's name",
            "add [network] with coordinator, ca, cert, key and peer (written by 'vfl certs')",
        )
    if net.box_key is None or net.peer_box_public is None:
        raise ConfigError(
            where,
            "network.box_key" if net.box_key is None else "network.peer_box_public",
            "missing: E-P traffic is sealed end to end with pinned keys",
            "name this party's sealing key and the peer's public key "
            "(written by 'vfl certs' as <party>.box and <party>.box.pub)",
        )
    return net


def _dial(
    cfg: PartyConfig, net: NetworkSection, emit: Callable[[str], None] | None = None
) -> GrpcChannel:
    ca, cert, key_pem = read_network_pems(net)
    return GrpcChannel(
        net.coordinator,
        me=cfg.party.name,
        peer=str(net.peer),
        ca_pem=ca,
        cert_pem=cert,
        key_pem=key_pem,
        timeout_s=net.timeout_s,
        connect_timeout_s=net.connect_timeout_s,
        heartbeat_s=net.heartbeat_s,
        lost_after_s=net.lost_after_s,
        on_wait=emit,
    )


def _plan(run: PartyRun, handed_out: str | None) -> JobPlan:
    """C's plan, checked against this party's own security floor before any key exists.

    A local ``--job`` file must agree with it field by field.

    Raises:
        ConfigError: no plan at all; SecurityFloorError: the plan is below this party's
        floor; ParameterMismatch: ``--job`` and C's plan differ.
    """
    plan = _received_plan(run, handed_out)
    check_floor(run.cfg, plan, config=str(run.config_file))
    return plan


def _received_plan(run: PartyRun, handed_out: str | None) -> JobPlan:
    """C's plan; a local ``--job`` file must agree with it field by field."""
    local = None if run.job_file is None else load_plan_file(run.job_file)
    if handed_out is None:
        if local is None:
            raise ConfigError(
                str(run.config_file),
                "network.coordinator",
                "the coordinator hands out no job plan and no --job file was given",
                'set plan = "job.toml" in the coordinator\'s config, or pass --job',
            )
        return local
    plan = JobPlan.from_json(handed_out, "job plan from the coordinator")
    if local is not None and local.fingerprint() != plan.fingerprint():
        diff = field_differences(local.fields(), plan.fields(), me="--job", peer="coordinator")
        raise ParameterMismatch(
            f"{run.cfg.party.name}: the job file {run.job_file} differs from the coordinator's "
            "plan: " + "; ".join(diff)
        )
    return plan


def check_floor(cfg: PartyConfig, plan: JobPlan, *, config: str) -> None:
    """Refuse ``plan`` if it is below this party's own security floor (before any key exists).

    Raises:
        SecurityFloorError: naming the party, the plan key, ``config`` and the fix.
    """
    cfg.party.floor(config).check(
        mode=plan.train.protocol,
        key_bits=plan.train.key_bits,
        randomness=plan.train.randomness,
        party=cfg.party.name,
    )
