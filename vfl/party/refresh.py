"""A refresh: E obtains ``z_B = b·W_B`` of **every** user P knows, through the encrypted protocol.

Why a refresh and not a session per request: ``z_B`` depends only on P's features, so E can
ask for all of P's aligned users at once and answer requests from its cache. What P sees is
that a refresh happened, when, and its size: always the same label-independent set (every
aligned position, in fixed chunks, in order), never which users E serves or when.

Steps of one refresh session (inside :func:`vfl.party.serving.run_session`: join, heartbeats,
a fresh sealed session, plan handshake):

1. Shard check both ways (:func:`vfl.party.inference.exchange_summaries`).
2. Setup with fresh key pairs of the plan's cipher suite on both sides (none is stored); E
   sends ``[[U]]_E``.
3. For chunk ``s`` of the aligned positions ``0..n-1`` (``chunk`` users each), a forward at
   step ``s`` (``train = False``): P answers ``[[b·U + b·V]]_E``, E decrypts ``z_B``.
4. Shutdown at step ``n_chunks``. E writes the cache (:mod:`vfl.party.zb_cache`).

P's long-running side (:func:`serve_refreshes`) loops: join, wait until E runs a session,
serve it, report ``done``, join again; each refresh is a fresh sealed session.

With several partners (:func:`refresh_partners`) E runs these steps with each partner in
turn, over that partner's own link, each asked only about the positions of its own alignment
with E; the refresh is all or nothing (E keeps its old caches unless every partner answered).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vfl.config.plan import JobPlan
from vfl.errors import (
    ChannelTimeout,
    ParameterMismatch,
    PeerLost,
    ProtocolError,
    ShardError,
    TransportError,
)
from vfl.party.common import SteppedEndpoint
from vfl.party.export import Shard
from vfl.party.inference import check_plan, exchange_summaries
from vfl.party.runner import PartyRun
from vfl.party.serving import (
    SessionBody,
    _settings,
    passive_session,
    run_session,
    run_sessions,
)
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.secure_layer import ActiveShare, generate_keys
from vfl.protocol.secure_split import SecurePassivePeer
from vfl.transport.board import PartyState
from vfl.transport.grpc_channel import GrpcChannel


def refresh_session(run: PartyRun, shard: Shard, *, chunk: int, timeout: float) -> SessionBody:
    """E's body: steps 1-4 of the module docstring; returns ``{"z_b": (n_aligned, h)}``."""

    def body(channel: ByteChannel, plan: JobPlan) -> dict[str, Any]:
        check_plan(shard, plan)
        exchange_summaries(channel, shard, active=True, peer=channel.peer, timeout=timeout)
        u, w_bits = shard.share()
        settings = _settings(shard, plan, w_bits)
        share = ActiveShare(
            u=u,
            settings=settings,
            keys=generate_keys(settings),  # fresh for this session: no key is stored
            allow_plaintext=run.cfg.party.allow_plaintext,
            party=run.cfg.party.name,
            floor=run.cfg.party.floor(str(run.config_file)),
        )
        peer = SecurePassivePeer(
            SteppedEndpoint(channel, job_id=plan.job.name, timeout=timeout), share
        )
        everyone = np.arange(len(shard.alignment()), dtype=np.int64)
        starts = range(0, len(everyone), chunk)
        try:
            peer.setup()
            parts = [
                peer.forward(s, everyone[at : at + chunk], train=False)
                for s, at in enumerate(starts)
            ]
        finally:
            peer.shutdown(step=len(starts))
            share.close()
        return {"z_b": np.concatenate(parts).astype(np.float64)}

    return body


def refresh(run: PartyRun, shard: Shard, *, chunk: int, emit: Callable[[str], None]) -> np.ndarray:
    """One refresh session with P; every aligned user's ``z_B``.

    Raises:
        ShardError, ParameterMismatch, TransportError, ChannelTimeout, PeerLost.
    """
    return refresh_partners(run, [shard], chunk=chunk, emit=emit)[0]


def refresh_partners(
    run: PartyRun, shards: Sequence[Shard], *, chunk: int, emit: Callable[[str], None]
) -> list[np.ndarray]:
    """One refresh with each partner (``shards[k]``: E's shard shared with the k-th peer of
    ``[network]``): every user partner k knows, and only those, in k's own session over its
    own link; returns each partner's ``z_Bk`` (row j = its aligned position j).

    Every partner must be joined and alive before any is asked; a partner absent or
    silent, before or during its session, fails the whole refresh naming it.

    Raises:
        ShardError, ParameterMismatch, TransportError, ChannelTimeout, PeerLost.
    """
    net = run.cfg.network
    timeout, heartbeat, lost = (
        (net.timeout_s, net.heartbeat_s, net.lost_after_s) if net is not None else (60.0, 1.0, 5.0)
    )
    results = run_sessions(
        run,
        [refresh_session(run, shard, chunk=chunk, timeout=timeout) for shard in shards],
        emit=emit,
        wait_for_peer=present(lost_after_s=lost, grace_s=lost + 2 * heartbeat),
        # P's serve loop answers within a few heartbeats; a P killed a moment ago still
        # looks alive, so the session's opening gives up after this, not after minutes
        session_timeout=max(10.0, 3 * lost + 4 * heartbeat),
    )
    return [np.asarray(r["z_b"]) for r in results]


def present(*, lost_after_s: float, grace_s: float) -> Callable[[GrpcChannel], None]:
    """E's check before a refresh session: P's ``vfl serve`` is joined and alive.

    The sealed session's opening waits for a silent peer (a restart); a refresh instead
    fails within ``grace_s`` when P is absent or silent.

    Raises:
        PeerLost: P has not joined, or its last heartbeat is older than ``lost_after_s``.
    """

    def check(channel: GrpcChannel) -> None:
        deadline = time.monotonic() + grace_s
        while True:
            status = channel.peer_status()
            if (
                status is not None
                and status.state is PartyState.RUNNING
                and status.age_s is not None
                and status.age_s < lost_after_s
            ):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        heard = (
            "it has not joined the job"
            if status is None or status.age_s is None
            else f"no heartbeat for {status.age_s:.0f} s (state {status.state.value})"
        )
        raise PeerLost(
            f"{channel.name}: party '{channel.peer}' is not answering refreshes: {heard}. "
            f"Fix: start `vfl serve --config P_PARTY.toml --model DIR` at '{channel.peer}'"
        )

    return check


def waiter(
    stop: threading.Event, *, settle_s: float, lost_after_s: float
) -> Callable[[GrpcChannel], None]:
    """P's wait before a session: until E is *running* (a fresh heartbeat, state running).

    E's state from the session that just ended may still read running for a moment; a
    running state counts at once only after P has seen E idle (done, failed, silent or
    absent), otherwise once it has lasted ``settle_s``.

    Returns early when ``stop`` is set.
    """

    def wait(channel: GrpcChannel) -> None:
        joined, idle_seen = time.monotonic(), False
        while not stop.is_set():
            status = channel.peer_status()
            running = (
                status is not None
                and status.state is PartyState.RUNNING
                and status.age_s is not None
                and status.age_s < lost_after_s
            )
            if running and (idle_seen or time.monotonic() - joined > settle_s):
                return
            idle_seen = idle_seen or not running
            stop.wait(0.1)

    return wait


def serve_refreshes(
    run: PartyRun, shard: Shard, *, emit: Callable[[str], None], stop: threading.Event
) -> int:
    """P's loop: answer refresh sessions until ``stop`` is set; returns how many were served.

    A session that ends because E went away (or never came) is reported and the loop goes
    on; a shard or plan that does not fit stops the loop (it would fail every time).

    Raises:
        ShardError, ParameterMismatch: E serves another model or plan.
    """
    net = run.cfg.network
    timeout = net.timeout_s if net is not None else 60.0
    heartbeat, lost = (net.heartbeat_s, net.lost_after_s) if net is not None else (1.0, 5.0)
    wait = waiter(stop, settle_s=2 * heartbeat + 1.0, lost_after_s=lost)
    served = 0
    while not stop.is_set():
        try:
            answered = run_session(
                run,
                passive_session(run, shard, timeout),
                emit=emit,
                wait_for_peer=wait,
            )
        except (ShardError, ParameterMismatch):
            raise
        except (ChannelTimeout, ProtocolError, TransportError) as exc:
            if stop.is_set():
                break
            emit(f"refresh session ended: {exc}; waiting for the next")
            continue
        served += 1
        emit(f"served refresh {served}: {_asked(answered)}")
    return served


def _asked(answered: dict[str, Any]) -> str:
    """What E asked about in a refresh, in P's words (its own aligned positions)."""
    span = answered.get("positions")
    where = "" if span is None else f", positions {span[0]}..{span[1]}"
    return f"z_B of {answered.get('users')} of its {answered.get('aligned')} aligned users{where}"
