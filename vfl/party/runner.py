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
from vfl.config.party import NetworkSection, PartnerSection, PartyConfig, Role, read_network_pems
from vfl.config.plan import JobPlan, load_plan_file
from vfl.errors import (
    ChannelTimeout,
    CheckpointError,
    ConfigError,
    ParameterMismatch,
    PeerLost,
    ProtocolError,
    field_differences,
)
from vfl.party.accounting import CountedTogether, CountingChannel, PhaseMeter
from vfl.party.active import run_active, write_metrics
from vfl.party.exporting import (
    ShardExporter,
    confirm_from_manifest,
    is_exported,
    restore_shard,
    shard_exporter,
    shard_files,
    shard_identity,
)
from vfl.party.handshake import PEER_SCHEMA_KEY, handshake
from vfl.party.partners import PartnerLink
from vfl.party.passive import finished_summary, run_passive
from vfl.party.publishing import Publisher
from vfl.party.resume import Position, agree_position, latest_position, party_store, show
from vfl.phases import Phase
from vfl.protocol.recorder import recorder_for
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
            f"{net.coordinator}, plan {plan.fingerprint()[:16]}, "
            + ("peer " if len(net.peers()) == 1 else "partners ")
            + ", ".join(p.name for p in net.peers())
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


@dataclass
class _Peer:
    """One peer of this party (P: E; E: each partner) and what this party keeps for it: the
    directory of their PSI store, alignment and shard (``model/``), and the store of their
    alignment checkpoint and export marks (E with ``[[network.partners]]``:
    ``<out>/partners/<name>/``; otherwise the party's own work directory and store).

    It is the process's mutable view of a peer while sessions open (no channel until the
    session, no position until the handshake); :meth:`link` hands training the frozen
    :class:`~vfl.party.partners.PartnerLink`, which in-process callers build without any
    network config. The two stay apart for that reason."""

    spec: PartnerSection
    work_dir: Path
    store: CheckpointStore
    counter: CountingChannel
    channel: SealedChannel | None = None
    agreed: Position | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def sealed(self) -> SealedChannel:
        """The sealed channel (open once the handshake began)."""
        if self.channel is None:
            raise RuntimeError(f"no session with '{self.name}' yet")
        return self.channel

    def exporter(self, cfg: PartyConfig, plan: JobPlan, timeout: float) -> ShardExporter:
        """This party's exporter of the shard shared with this peer."""
        return shard_exporter(
            self.sealed(), self.work_dir / "model", cfg, plan, timeout=timeout, store=self.store
        )

    def link(self, cfg: PartyConfig, plan: JobPlan, timeout: float) -> PartnerLink:
        """E's link to this partner for training: the sealed channel, the agreed position
        and the exporter of E's shard for it."""
        export = self.exporter(cfg, plan, timeout)
        return PartnerLink(self.sealed(), self.work_dir, self.store, self.agreed, export=export)


@dataclass
class _Session:
    """A party's run after joining: configuration, plan, the coordinator link and reports,
    its own checkpoint store, the phase meter, its peers and where lines go."""

    run: PartyRun
    net: NetworkSection
    publish: Publisher
    plan: JobPlan
    store: CheckpointStore
    meter: PhaseMeter
    peers: list[_Peer]
    emit: Callable[[str], None]
    progress: ProgressFn | None

    @property
    def name(self) -> str:
        return self.run.cfg.party.name

    def live(self) -> list[_Peer]:
        """The peers with a session (E skips a partner that finished and left)."""
        return [p for p in self.peers if p.channel is not None]

    def phase(self, name: Phase) -> None:
        """Enter phase ``name`` on every sealed link and tell the coordinator."""
        for p in self.live():
            p.sealed().phase = name
        self.publish.phase(name)
        self.emit(f"{self.name}: phase {name}")


def _peers(run: PartyRun, net: NetworkSection, store: CheckpointStore, plan: JobPlan,
           grpc_channel: GrpcChannel) -> list[_Peer]:  # fmt: skip
    """This party's peers, each over its own link of the one coordinator connection."""
    if not net.several:
        spec = net.peers()[0]
        return [_Peer(spec, run.out, store, CountingChannel(grpc_channel))]
    return [
        _Peer(
            spec,
            run.out / "partners" / spec.name,
            party_store(run.cfg, plan, run.out / "partners" / spec.name),
            CountingChannel(grpc_channel.link(spec.name)),
        )
        for spec in net.peers()
    ]


def _run_sealed(
    run: PartyRun,
    net: NetworkSection,
    publish: Publisher,
    plan: JobPlan,
    emit: Callable[[str], None],
    progress: ProgressFn | None,
) -> dict[str, Any]:
    """Steps 3-4: per peer, session, handshake and resume position; then PSI and training."""
    cfg, name = run.cfg, run.cfg.party.name
    store = party_store(cfg, plan, run.out)
    peers = _peers(run, net, store, plan, publish.channel)
    meter = PhaseMeter(CountedTogether(tuple(p.counter for p in peers)))
    s = _Session(run, net, publish, plan, store, meter, peers, emit, progress)
    finished = all(is_exported(p.store) for p in peers)
    if finished and cfg.role is Role.PASSIVE:
        emit(f"{name}: the job already finished here (checkpoint {store.directory})")
        return _finished(s)
    meter.enter(Phase.HANDSHAKE)
    publish.phase(Phase.HANDSHAKE)
    for peer in peers:
        mine = _position(store, peer.store)
        try:
            peer.channel = _session(run, net, peer.counter, peer.spec)
            peer.channel.on_receive = recorder_for(run.out, peer.name)  # VFL_RECORD_RECEIVED
            peer.channel.phase = Phase.HANDSHAKE
            pin = peer.spec.schema_sha256
            handshake(peer.channel, cfg, plan, timeout=net.timeout_s, peer_schema=pin,
                      pinned_as=_pin_key(net, peer.name))  # fmt: skip
            peer.agreed = agree_position(peer.channel, mine, me=name, timeout=net.timeout_s)
        except (PeerLost, ChannelTimeout):
            peer.channel = None
            if is_exported(peer.store):  # E restarted after the end: this peer had its confirmation
                continue
            if cfg.role is Role.PASSIVE and _peer_finished(publish.channel) and mine == _EXPORTING:
                emit(f"{name}: {peer.name} finished the job; finishing the export on the manifest")
                identity = shard_identity(cfg, plan)
                confirm_from_manifest(store, run.out / "model", identity)
                return _finished(s)
            raise
        emit(
            f"{name}: handshake with {peer.name} agreed on plan and parameters; "
            + (f"resuming from {show(peer.agreed)}" if peer.agreed or mine else "starting")
        )
        peer.store.discard_after(peer.agreed)
    if not s.live():
        return _finished(s)
    agreed = _joint_position(s)
    store.discard_after(agreed)
    if agreed is not None and agreed[0] is Phase.EXPORT:  # all trained: export again
        return _export_again(s)
    return _run_phases(s, agreed)


def _position(store: CheckpointStore, own: CheckpointStore) -> Position | None:
    """This party's newest position with one peer: in its own store or the peer's."""
    found = [latest_position(store)] + ([] if own is store else [latest_position(own)])
    return max((p for p in found if p is not None), key=_order, default=None)


def _order(position: Position) -> tuple[int, int]:
    return position[0].order, position[1]


def _joint_position(s: _Session) -> Position | None:
    """Where training resumes with every live peer: before training each peer keeps its own
    position (its alignment, or PSI again); from training on they must all agree.

    Raises:
        CheckpointError: some partners are past PSI and others at another step (names them).
    """
    agreed = {p.name: p.agreed for p in s.live()}
    # within the export each shard is redone from E's ``export`` 0, whatever its own mark
    at = {k: (v if v is None or v[0] is not Phase.EXPORT else (Phase.EXPORT, 0))
          for k, v in agreed.items()}  # fmt: skip
    trained = {k: v for k, v in at.items() if v is not None and v[0].order >= Phase.TRAIN.order}
    if trained and (len(trained) < len(at) or len(set(trained.values())) > 1):
        where = ", ".join(f"{k} at {show(v)}" for k, v in at.items())
        raise CheckpointError(
            f"{s.name}: cannot resume: the partners agreed on different positions ({where}). "
            "Fix: restore the missing checkpoints, or restart every party with fresh work "
            "directories"
        )
    if trained:
        return next(iter(trained.values()))
    return min(at.values(), key=lambda v: (-1, -1) if v is None else _order(v))


def _finished(s: _Session) -> dict[str, Any]:
    """A party whose exports are confirmed: its shards (re-written if they went missing or
    changed), E's metrics rewritten; returns E's metrics or P's summary."""
    cfg = s.run.cfg
    for peer in s.peers:
        out = peer.work_dir / "model"
        identity = shard_identity(cfg, s.plan, peer.name)
        if restore_shard(s.store, out, identity, marks=peer.store):
            s.emit(f"{s.name}: re-wrote its shard in {out} from the export checkpoints")
    if cfg.role is Role.PASSIVE:
        return dict(finished_summary(s.store))
    metrics: dict[str, Any] = s.store.load(Phase.EVAL, 0).meta["metrics"]
    write_metrics(s.run.out, metrics)
    return metrics


def _export_again(s: _Session) -> dict[str, Any]:
    """Every live peer and this party hold their ``export`` 0 checkpoint: redo each export
    from its bytes."""
    s.phase(Phase.EXPORT)
    saved = s.store.load(Phase.EXPORT, 0)
    for peer in s.live():
        exporter = peer.exporter(s.run.cfg, s.plan, s.net.timeout_s)
        exporter.exchange(shard_files(saved, peer.name))
    return _finished(s)


def _peer_finished(grpc_channel: GrpcChannel) -> bool:
    """Whether the coordinator last saw the peer report that it finished the job."""
    status = grpc_channel.peer_status()
    return status is not None and status.state is PartyState.DONE


def _run_phases(s: _Session, agreed: Position | None) -> dict[str, Any]:
    """Step 4 from the agreed position: PSI unless aligned, then training (E) or serving (P)."""
    run, cfg, timeout = s.run, s.run.cfg, s.net.timeout_s
    if cfg.role is Role.PASSIVE:
        peer = s.peers[0]
        return dict(
            run_passive(
                cfg,
                s.plan,
                peer.sealed(),
                run.out,
                timeout=timeout,
                phase=s.phase,
                local_seed=run.local_seed,
                export=peer.exporter(cfg, s.plan, timeout),
                store=s.store,
                resume_at=agreed,
            )
        )
    return run_active(
        cfg,
        s.plan,
        [p.link(cfg, s.plan, timeout) for p in s.peers],
        run.out,
        epochs=run.epochs,
        timeout=timeout,
        progress=_publishing(s.publish, s.progress),
        phase=s.phase,
        local_seed=run.local_seed,
        meter=s.meter,
        store=s.store,
        resume_at=agreed,
    )


def _pin_key(net: NetworkSection, peer: str) -> str:
    """The config key that pins ``peer``'s schema digest (named when it differs)."""
    return PEER_SCHEMA_KEY if not net.several else f"schema_sha256 of [[network.partners]] '{peer}'"


def _session(
    run: PartyRun,
    net: NetworkSection,
    counter: CountingChannel,
    peer: PartnerSection,
    *,
    timeout: float | None = None,
) -> SealedChannel:
    """A fresh session to ``peer`` over ``counter`` (its link), sealed with this party's key
    and the peer's pinned key.

    The session window is ``timeout``, by default three message timeouts: long enough for a
    restarted peer.
    """
    if net.box_key is None:  # checked by _network
        raise ConfigError(str(run.config_file), "network.box_key", "missing", "see 'vfl certs'")
    where = "network.peer_box_public" if not net.several else f"network.partners '{peer.name}'"
    return open_session(
        counter,
        private_key=read_key(net.box_key, "network.box_key"),
        peer_public_key=read_key(peer.box_public, where),
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
    if net is None or (net.peer is None and not net.partners):
        raise ConfigError(
            where,
            "network" if net is None else "network.peer",
            "missing: the party needs the coordinator address, "
            "its certificates and the other party's name",
            "add [network] with coordinator, ca, cert, key and peer, or E's "
            "[[network.partners]] (written by 'vfl certs')",
        )
    if net.box_key is None or not net.peers():
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
        peer=net.peers()[0].name,
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
