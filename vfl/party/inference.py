"""Joint inference from the two exported shards (SPEC §2 step 7): E asks, P contributes
``[[b·W_B]]_E``, only E sees the scores.

Steps of one inference session (after join, heartbeats, seal and the plan handshake); a
refresh (:mod:`vfl.party.refresh`) runs them for every aligned user at once:

1. **Shard check.** E sends its shard summary (job, plan, own and partner digests); P refuses
   unless it is the partner of the shard P serves, then answers with its own, which E checks
   the same way (:func:`vfl.party.export.check_partner`). A shard never runs alone.
2. **Setup.** Fresh Paillier key pairs on both sides, exchanged as in training (no key is
   stored in a shard); E sends ``[[U]]_E``.
3. **Forward.** E asks for every aligned position, in fixed chunks (``train = False``);
   P answers ``[[b·U + b·V]]_E`` and E decrypts ``z_B = b·W_B``; nothing is trained.
4. E caches ``z_B`` and scores requests from it (:mod:`vfl.party.recommend`); P never sees a
   request or a score.
"""

from __future__ import annotations

import json

import numpy as np

from vfl.config.plan import JobPlan
from vfl.data.tables import ActiveData
from vfl.errors import ShardError
from vfl.party.export import MANIFEST, Shard, check_partner
from vfl.protocol.endpoint import ByteChannel


def exchange_summaries(
    channel: ByteChannel, shard: Shard, *, active: bool, peer: str, timeout: float
) -> None:
    """Step 1: each side checks that the other serves its partner shard.

    Raises:
        ShardError: the peer's shard is not this shard's partner (or the peer refused ours).
    """
    mine = json.dumps(shard.summary()).encode()
    if active:
        channel.send(mine)
        theirs = _summary(channel.recv(timeout), shard, peer)
        check_partner(shard, theirs, where=f"party {peer}")
        return
    theirs = _summary(channel.recv(timeout), shard, peer)
    try:
        check_partner(shard, theirs, where=f"party {peer}")
    except ShardError as exc:
        channel.send(json.dumps({"refused": str(exc)}).encode())
        raise
    channel.send(mine)


def _summary(data: bytes, shard: Shard, peer: str) -> dict[str, str]:
    try:
        table = json.loads(data)
    except ValueError as exc:
        raise ShardError(f"{shard.path / MANIFEST}: malformed shard summary from {peer}") from exc
    if "refused" in table:
        raise ShardError(f"party {peer} refused this shard: {table['refused']}")
    return {str(k): str(v) for k, v in table.items()}


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
