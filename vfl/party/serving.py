"""Inference sessions between the party processes, through the coordinator as in training.

1. Join the coordinator (mutual TLS), start heartbeats, open a fresh sealed session with the
   peer (:mod:`vfl.transport.session`: ephemeral keys, so an envelope of an earlier inference
   session is dropped, never applied) and run the plan handshake -- exactly as
   :mod:`vfl.party.runner` does for training. E with ``[[network.partners]]`` first checks
   that every partner is present, then does this with one partner after the other, each over
   its own link (:func:`run_sessions`); a passive party only ever has E.
2. Phase ``inference``: the steps of :mod:`vfl.party.inference` (shard check, setup with fresh
   keys, encrypted forwards of every aligned user: a refresh, :mod:`vfl.party.refresh`).
3. Report ``done`` (nothing else: C never sees a score) or ``failed`` (the error's class name),
   through the party's :class:`~vfl.party.publishing.Publisher`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from vfl.config.plan import JobPlan
from vfl.data.loading import load_party_data
from vfl.data.tables import PassiveData
from vfl.errors import ShardError
from vfl.kinds import BottomInputs, load_kind
from vfl.party.accounting import CountingChannel
from vfl.party.common import SteppedEndpoint
from vfl.party.export import Shard
from vfl.party.handshake import handshake
from vfl.party.inference import check_plan, exchange_summaries
from vfl.party.publishing import Publisher
from vfl.party.runner import PartyRun, _dial, _network, _plan, _session
from vfl.phases import Phase
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.messages import Message, SecureForwardIns
from vfl.protocol.options import SecurityFloor
from vfl.protocol.secure_layer import LayerSettings, PassiveShare, generate_keys
from vfl.protocol.secure_split import PassiveSecureServer
from vfl.training.inputs import TableTensors
from vfl.training.secure import layer_settings
from vfl.transport.grpc_channel import GrpcChannel

SessionBody = Callable[[ByteChannel, JobPlan], dict[str, Any]]
PeerWait = Callable[[GrpcChannel], None]


def run_session(
    run: PartyRun,
    body: SessionBody,
    *,
    emit: Callable[[str], None],
    wait_for_peer: PeerWait | None = None,
    session_timeout: float | None = None,
) -> dict[str, Any]:
    """Steps 1-3 of the module docstring around ``body(channel, plan)``, with the one peer.

    ``wait_for_peer``: called once joined (heartbeats running), before the sealed session is
    opened; P's long-running ``vfl serve`` waits there until E starts a refresh.
    ``session_timeout``: how long opening the sealed session may wait for the peer (default
    three message timeouts, long enough for a restarted peer).

    Raises:
        ConfigError, ParameterMismatch, ShardError, TransportError, ChannelTimeout, PeerLost.
    """
    results = run_sessions(
        run, [body], emit=emit, wait_for_peer=wait_for_peer, session_timeout=session_timeout
    )
    return results[0]


def run_sessions(
    run: PartyRun,
    bodies: Sequence[SessionBody],
    *,
    emit: Callable[[str], None],
    wait_for_peer: PeerWait | None = None,
    session_timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Steps 1-3 around ``bodies[k]``, one per peer of ``[network]`` in its order (E with
    ``[[network.partners]]``: one per partner, each over its own link of the one coordinator
    connection, as in training).

    ``wait_for_peer`` runs for every peer's link before any session is opened, so a partner
    that is absent is named before anything is asked of the others; then, partner after
    partner: a fresh sealed session, the plan handshake and its body.

    Raises:
        ConfigError, ParameterMismatch, ShardError, TransportError, ChannelTimeout, PeerLost
        (each naming the peer it concerns).
    """
    net = _network(run)
    peers = net.peers()
    if len(bodies) != len(peers):
        raise ValueError(f"{len(bodies)} session bodies for {len(peers)} peers")
    grpc_channel = _dial(run.cfg, net)
    publish = Publisher(grpc_channel, run.cfg)
    try:
        reply = grpc_channel.join()
        plan = _plan(run, reply.plan)
        grpc_channel.start_heartbeat(interval_s=net.heartbeat_s, lost_after_s=net.lost_after_s)
        names = ", ".join(p.name for p in peers)
        emit(
            f"{run.cfg.party.name} joined job {reply.job} for inference, "
            + ("partners " if net.several else "peer ")
            + names
        )
        links = [grpc_channel.link(p.name) if net.several else grpc_channel for p in peers]
        if wait_for_peer is not None:
            for link in links:
                wait_for_peer(link)
        results = []
        for spec, link, body in zip(peers, links, bodies, strict=True):
            channel = _session(run, net, CountingChannel(link), spec, timeout=session_timeout)
            channel.phase = Phase.HANDSHAKE
            publish.phase(Phase.HANDSHAKE)
            schema = spec.schema_sha256
            handshake(channel, run.cfg, plan, timeout=net.timeout_s, peer_schema=schema)
            channel.phase = Phase.INFERENCE
            publish.phase(Phase.INFERENCE)
            results.append(body(channel, plan))
    except BaseException as exc:
        publish.failed(exc)
        grpc_channel.close()
        raise
    publish.done()
    grpc_channel.close()
    return results


def serving_noise_seed(v: np.ndarray) -> int:
    """P's embedding-noise seed for inference sessions: a hash of its trained share ``V``.

    ``V`` is P's secret and fixed once the model is exported, so every refresh of the same
    model adds the same noise to a user's ``z_B``: E cannot average refreshes to remove it.
    """
    digest = hashlib.sha256(b"vfl embedding noise\0" + repr(v.tolist()).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _settings(shard: Shard, plan: JobPlan, w_bits: int) -> LayerSettings:
    """The layer settings of the plan; the shard's share must be at their scale.

    Raises:
        ShardError: the share was written at another fixed-point scale.
    """
    settings = layer_settings(plan.train, privacy=plan.privacy)
    if settings.scales.w_bits != w_bits:
        raise ShardError(
            f"{shard.path}: share at scale 2^{w_bits}, this version uses "
            f"2^{settings.scales.w_bits}. Fix: export again with this version"
        )
    return settings


def passive_session(run: PartyRun, shard: Shard, timeout: float) -> SessionBody:
    """P's body: check shards, then answer E's setup and forwards from the loaded shard."""

    def body(channel: ByteChannel, plan: JobPlan) -> dict[str, Any]:
        check_plan(shard, plan)
        exchange_summaries(channel, shard, active=False, peer=channel.peer, timeout=timeout)
        data = load_party_data(run.cfg)
        if not isinstance(data, PassiveData):
            raise TypeError("vfl serve needs P's (passive) party config")
        party = run.cfg.party
        server = passive_server(
            shard,
            data,
            plan,
            channel,
            timeout,
            allow_plaintext=party.allow_plaintext,
            party=party.name,
            floor=party.floor(str(run.config_file)),
        )
        try:
            server.serve()
        finally:
            server.share.close()
        asked = server.asked_positions()
        return {
            "served": True,
            "users": len(asked),
            "aligned": len(shard.alignment()),
            "positions": (int(asked[0]), int(asked[-1])) if len(asked) else None,
        }

    return body


class AnsweringServer(PassiveSecureServer):
    """P's server of an inference session; also keeps which of its aligned positions E asked
    about (P's own knowledge: every refresh asks about all of them, and about nothing else)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._asked: list[np.ndarray] = []

    def handle(self, msg: Message) -> Message:
        """:meth:`PassiveSecureServer.handle`, noting a forward's positions (one array each)."""
        if isinstance(msg, SecureForwardIns):
            self._asked.append(np.asarray(msg.users, dtype=np.int64))
        return super().handle(msg)

    def asked_positions(self) -> np.ndarray:
        """The distinct positions E asked about, sorted."""
        if not self._asked:
            return np.empty(0, np.int64)
        return np.unique(np.concatenate(self._asked))


def passive_server(
    shard: Shard,
    data: PassiveData,
    plan: JobPlan,
    channel: ByteChannel,
    timeout: float,
    *,
    allow_plaintext: bool = False,
    party: str = "P",
    floor: SecurityFloor = SecurityFloor(),
) -> AnsweringServer:
    """P's server over its loaded bottom model and share ``V`` (forwards only: nothing trains)."""
    local = shard.alignment()
    features = TableTensors.from_table(data.users, local.rows)
    m = plan.model
    bottom = load_kind(data.kind).bottom(BottomInputs(features), m)
    bottom.load_state_dict(shard.state_dict("bottom.pt"))
    v, w_bits = shard.share()
    settings = _settings(shard, plan, w_bits)
    share = PassiveShare(
        v=v,
        settings=settings,
        keys=generate_keys(settings),  # fresh for this session: no key is stored
        allow_plaintext=allow_plaintext,
        party=party,
        noise_seed=serving_noise_seed(v),
        floor=floor,
    )
    return AnsweringServer(
        endpoint=SteppedEndpoint(channel, job_id=plan.job.name, timeout=timeout),
        bottom=bottom,
        numeric=features.numeric,
        categorical=features.categorical,
        optimizer=torch.optim.SGD(bottom.parameters(), lr=0.0),  # never stepped: no backward
        share=share,
    )
