"""Joint inference from the two exported shards (SPEC §2 step 7): E asks, P contributes
``[[b·W_B]]_E``, only E sees the scores.

Steps of one inference session (after join, heartbeats, seal and the plan handshake):

1. **Shard check.** E sends its shard summary (job, plan, own and partner digests); P refuses
   unless it is the partner of the shard P serves, then answers with its own, which E checks
   the same way (:func:`vfl.party.export.check_partner`). A shard never runs alone.
2. **Setup.** Fresh Paillier key pairs on both sides, exchanged as in training (no key is
   stored in a shard); E sends ``[[U]]_E``.
3. **Forward.** E asks for the aligned positions of the users to score (``train = False``);
   P answers ``[[b·U + b·V]]_E`` and E decrypts ``z_B = b·W_B``; nothing is trained.
4. E scores every requested (user, item) row with its head and ``z_B``; P never sees a score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from vfl.config.party import PartyConfig
from vfl.config.plan import JobPlan
from vfl.data.tables import ActiveData
from vfl.errors import DataError, ShardError
from vfl.party.common import LocalAlignment
from vfl.party.export import MANIFEST, Shard, check_partner
from vfl.protocol.endpoint import ByteChannel
from vfl.training.inputs import TableTensors
from vfl.training.recommenders import ActiveHead, ActiveInputs


@dataclass(frozen=True)
class InferenceRequest:
    """What E asks: the top ``k`` items of ``user``, or a score for each ``(user, item)``."""

    user: str | None = None
    k: int = 10
    include_seen: bool = False  # by default the top-K skips items the user already has
    pairs: list[tuple[str, str]] = field(default_factory=list)


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


def load_head(shard: Shard, data: ActiveData, plan: JobPlan) -> ActiveHead:
    """E's trained head from its shard, over E's own features in the shard's aligned order."""
    local = shard.alignment()
    inputs = ActiveInputs(
        users=TableTensors.from_table(data.users, local.rows),
        items=TableTensors.from_table(data.items),
        kind=data.kind,
    )
    state = shard.state_dict("head.pt")
    # a head trained with partners holds one "unknown user" vector a_k per partner; the
    # shard's users are all known to the partner, so a_k is kept but never used here
    absent = state.get("partners.absent")
    n_partners = 0 if absent is None else int(absent.shape[0])
    head = ActiveHead(inputs, plan.model, n_users=len(local), n_partners=n_partners)
    head.load_state_dict(state)
    head.eval()
    return head


@dataclass(frozen=True)
class Rows:
    """Aligned user positions and item indices of the rows to score."""

    users: np.ndarray  # (r,) aligned positions
    items: np.ndarray  # (r,) item indices

    def unique_users(self) -> np.ndarray:
        """The distinct positions, sorted: what P is asked for."""
        return np.unique(self.users)


def request_rows(
    request: InferenceRequest, cfg: PartyConfig, data: ActiveData, local: LocalAlignment
) -> Rows:
    """The (position, item) rows of a request; a top-K request covers the candidate items.

    Raises:
        DataError: a user outside the aligned intersection or an unknown item.
    """
    position = {str(u): k for k, u in enumerate(local.ids.tolist())}
    item_index = {str(i): k for k, i in enumerate(data.items.ids.tolist())}

    def user_pos(raw: str) -> int:
        uid = cfg.ids.normalise(raw)
        if uid not in position:
            raise DataError(
                "request",
                "user",
                f"user {raw!r} is not among the aligned customers of this shard",
                "joint inference scores only users in the PSI intersection",
            )
        return position[uid]

    def item_idx(raw: str) -> int:
        for key in (raw, raw.strip(), cfg.ids.normalise(raw)):
            if key in item_index:
                return item_index[key]
        raise DataError("request", "item", f"item {raw!r} is not in E's catalogue", "check the id")

    if request.user is not None:
        pos = user_pos(request.user)
        items = candidate_items(data, local.ids[pos], include_seen=request.include_seen)
        return Rows(np.full(len(items), pos, np.int64), items)
    users = [user_pos(u) for u, _ in request.pairs]
    return Rows(
        np.array(users, np.int64), np.array([item_idx(i) for _, i in request.pairs], np.int64)
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


@torch.no_grad()
def score_rows(head: ActiveHead, rows: Rows, users: np.ndarray, z_b: np.ndarray) -> np.ndarray:
    """Probability of each row, given ``z_b[j]`` = ``b·W_B`` of aligned position ``users[j]``."""
    where = {int(u): j for j, u in enumerate(users.tolist())}
    z = torch.as_tensor(np.asarray(z_b, np.float32))[[where[int(u)] for u in rows.users.tolist()]]
    logits = head.logits(torch.as_tensor(rows.users), torch.as_tensor(rows.items), z)
    return torch.sigmoid(logits).numpy().astype(np.float64)


def top_k(scores: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Item indices of the ``k`` highest scores (ties: the lower item index first)."""
    order = np.lexsort((items, -scores))
    return np.asarray(items[order[:k]], np.int64)
