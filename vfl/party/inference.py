"""Joint inference from the two exported shards (SPEC §2 step 7): E asks, P contributes
``[[b·W_B]]_E``, only E sees the scores.

Steps of one inference session (after join, heartbeats, seal and the plan handshake); a
refresh (:mod:`vfl.party.refresh`) runs them for every aligned user at once:

1. **Shard check.** E sends its ``InferenceSummary`` (job, plan, own and partner digests); P
   refuses (``ErrorRes``, with the reason) unless it is the partner of the shard P serves,
   then answers with its own, which E checks the same way
   (:func:`vfl.party.export.check_partner`). A shard never runs alone. Both are typed
   control messages through the protocol's serde, so the message recorder sees them.
2. **Setup.** Fresh Paillier key pairs on both sides, exchanged as in training (no key is
   stored in a shard); E sends ``[[U]]_E``.
3. **Forward.** E asks for every aligned position, in fixed chunks (``train = False``);
   P answers ``[[b·U + b·V]]_E`` and E decrypts ``z_B = b·W_B``; nothing is trained.
4. E caches ``z_B`` and scores requests from it (:mod:`vfl.party.recommend`); P never sees a
   request or a score.
"""

from __future__ import annotations

import numpy as np

from vfl.config.plan import JobPlan
from vfl.data.tables import ActiveData
from vfl.errors import ProtocolError, ShardError
from vfl.party.export import MANIFEST, Shard, check_partner
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.messages import ErrorRes, InferenceSummary
from vfl.protocol.serde import decode, encode_control


def exchange_summaries(
    channel: ByteChannel, shard: Shard, *, active: bool, peer: str, timeout: float
) -> None:
    """Step 1: each side checks that the other serves its partner shard.

    Raises:
        ShardError: the peer's shard is not this shard's partner (or the peer refused ours).
    """
    mine = shard.summary()
    if active:
        channel.send(encode_control(mine, job_id=mine.job))
        theirs = _summary(channel.recv(timeout), shard, peer)
        check_partner(shard, theirs, where=f"party {peer}")
        return
    theirs = _summary(channel.recv(timeout), shard, peer)
    try:
        check_partner(shard, theirs, where=f"party {peer}")
    except ShardError as exc:
        channel.send(encode_control(ErrorRes(step=0, reason=str(exc)), job_id=mine.job))
        raise
    channel.send(encode_control(mine, job_id=mine.job))


def _summary(data: bytes, shard: Shard, peer: str) -> InferenceSummary:
    """The peer's :class:`InferenceSummary`, or its refusal of ours as a :class:`ShardError`."""
    try:
        message = decode(data).message
    except ProtocolError as exc:
        raise ShardError(
            f"{shard.path / MANIFEST}: malformed shard summary from {peer}: {exc}"
        ) from exc
    if isinstance(message, ErrorRes):
        raise ShardError(f"party {peer} refused this shard: {message.reason}")
    if not isinstance(message, InferenceSummary):
        raise ShardError(
            f"{shard.path / MANIFEST}: {peer} sent a {type(message).__name__}, not its shard "
            "summary"
        )
    return message


def check_plan(shard: Shard, plan: JobPlan) -> None:
    """The session's plan must be the plan the shard was trained under.

    Raises:
        ShardError: another plan (names both fingerprints).
    """
    if shard.manifest["plan_fingerprint"] != plan.fingerprint():
        raise ShardError(
            f"{shard.path / MANIFEST}: exported under plan "
            f"{str(shard.manifest['plan_fingerprint'])[:16]}, the coordinator hands out plan "
            f"{plan.fingerprint()[:16]}. Fix: run the coordinator with the training job file"
        )


def candidate_items(data: ActiveData, user_id: str, *, include_seen: bool) -> np.ndarray:
    """Every catalogue item, without those ``user_id`` has in E's log (unless ``include_seen``)."""
    every = np.arange(len(data.items.ids), dtype=np.int64)
    if include_seen:
        return every
    log = data.interactions
    seen_ids = set(log.item_ids[log.user_ids.astype(str) == str(user_id)].astype(str).tolist())
    keep = np.array([str(i) not in seen_ids for i in data.items.ids.tolist()], dtype=bool)
    return np.asarray(every[keep], np.int64)
