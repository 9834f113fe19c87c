"""Each party's checkpoints: what is saved after each phase and step, and where both resume.

Saved in ``<work dir>/checkpoints`` (:class:`~vfl.checkpoint.CheckpointStore`, atomic writes):

* ``alignment`` 0 -- after PSI: the agreed ids and this party's rows.
* ``train`` s -- after global step s-1 is applied on this side (E: once its share update is
  applied; P: once its bottom model and share stepped, before it answers), and again after
  each epoch's evaluation (E). E: its head and Adam state, ``U``, the loop state (epoch,
  position in the epoch, the batch generator's state at the epoch start, every loss and
  epoch record so far); P: its bottom model and Adam state, ``V``, the steps served. Both:
  torch's RNG state. Paillier keys are not saved: each session makes fresh ones and E sends
  ``[[U]]_E`` again.
* ``eval`` 0 and ``export`` 0 -- E's final metrics, then each party's trained shard.

Where to resume (:func:`agree_position`): after the sealed handshake each side sends its
latest ``(phase, step)`` as a typed :class:`~vfl.protocol.messages.ResumeAt` through the
protocol's serde (the message recorder sees it); both take the older
(:func:`~vfl.checkpoint.agree_resume`), load it, and drop anything newer. P may be one step
ahead of E (it saved ``s+1`` and its answer was lost); it steps back, so each update of the
``W_B`` shares is applied by both or by neither.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfl.checkpoint import Checkpoint, CheckpointStore, Scalar, agree_resume
from vfl.config.party import PartyConfig
from vfl.config.plan import JobPlan
from vfl.data.tables import FeatureTable
from vfl.errors import ProtocolError
from vfl.executor import PartyExecutor
from vfl.party.common import LocalAlignment, PhaseFn, align_with_peer
from vfl.phases import CHECKPOINTED, Phase
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.messages import ResumeAt
from vfl.protocol.serde import decode_control, encode_control
from vfl.protocol.share_optim import ShareSgd
from vfl.psi.protocol import ByteLink

Position = tuple[Phase, int]


def party_store(cfg: PartyConfig, plan: JobPlan, out: Path) -> CheckpointStore:
    """This party's checkpoint store, bound to the job, the party and every plan field."""
    params: dict[str, Scalar] = {}
    for key, value in plan.fields().items():
        ok = value is None or isinstance(value, str | int | float | bool)
        params[key] = value if ok else json.dumps(value, sort_keys=True)
    return CheckpointStore(out, job_id=plan.job.name, party=cfg.party.name, params=params)


def latest_position(store: CheckpointStore) -> Position | None:
    """This party's newest ``(phase, step)`` (the newest file is checked, not just listed).

    Raises:
        CheckpointError: the newest checkpoint is corrupted or of another job/party/plan.
    """
    latest = store.latest()
    return None if latest is None else (latest.phase, latest.step)


def agree_position(
    channel: ByteChannel, mine: Position | None, *, me: str, timeout: float
) -> Position | None:
    """Exchange latest positions with the peer; return where both resume (None: start).

    Raises:
        CheckpointError: the positions cannot be reconciled (names both).
        ProtocolError: the peer's message is not a position.
    """
    # the sealed session binds the job; the control message's own envelope names none
    channel.send(encode_control(resume_at(mine)))
    theirs = _parse_position(channel.recv(timeout), channel.peer)
    return agree_resume(mine, theirs, me=me, peer=channel.peer)


def resume_at(position: Position | None) -> ResumeAt:
    """The typed message of ``position`` (``phase`` "" and ``step`` -1: none)."""
    if position is None:
        return ResumeAt(phase="", step=-1)
    return ResumeAt(phase=position[0].value, step=position[1])


def position_of(at: ResumeAt) -> Position | None:
    """Inverse of :func:`resume_at`.

    Raises:
        ValueError: not a checkpointed phase, or a step that is not a non-negative integer.
    """
    if at.phase == "" and at.step == -1:
        return None
    phase = Phase(at.phase)
    if phase not in CHECKPOINTED:
        raise ValueError(f"phase '{phase}' keeps no checkpoint")
    if not isinstance(at.step, int) or isinstance(at.step, bool) or at.step < 0:
        raise ValueError(f"step {at.step!r} is not a non-negative integer")
    return phase, at.step


def _parse_position(data: bytes, peer: str) -> Position | None:
    try:
        return position_of(decode_control(data, ResumeAt))
    except (ProtocolError, ValueError) as exc:
        raise ProtocolError(f"resume position from '{peer}' is malformed: {exc}") from exc


def show(position: Position | None) -> str:
    """``train step 12`` or ``the start``."""
    return "the start" if position is None else f"{position[0].value} step {position[1]}"


# -- alignment -------------------------------------------------------------------------------


def save_alignment_checkpoint(store: CheckpointStore, local: LocalAlignment) -> None:
    """``alignment`` 0: the PSI result."""
    ids = np.asarray([str(i) for i in local.ids.tolist()], dtype=np.str_)
    store.save(Phase.ALIGNMENT, 0, arrays={"ids": ids, "rows": local.rows})


def load_alignment_checkpoint(store: CheckpointStore, at: Position | None) -> LocalAlignment | None:
    """The saved alignment if the agreed position is at or after it, else None (run PSI)."""
    if at is None or at[0].order < Phase.ALIGNMENT.order:
        return None
    ckpt = store.load(Phase.ALIGNMENT, 0)
    return LocalAlignment(ids=ckpt.arrays["ids"], rows=ckpt.arrays["rows"].astype(np.int64))


def align_or_resume(
    channel: ByteLink,
    cfg: PartyConfig,
    users: FeatureTable,
    plan: JobPlan,
    out_dir: Path,
    *,
    timeout: float,
    phase: PhaseFn,
    store: CheckpointStore | None,
    resume_at: Position | None,
    executor: PartyExecutor | None = None,
) -> LocalAlignment:
    """The alignment: from the checkpoint when both resume past PSI, else by PSI (saved) on
    the party's ``executor``."""
    local = None if store is None else load_alignment_checkpoint(store, resume_at)
    if local is not None:
        return local
    phase(Phase.PSI)
    local = align_with_peer(
        channel, cfg, users, job_id=plan.job.name, timeout=timeout, work_dir=out_dir,
        psi=plan.psi, executor=executor,
    )  # fmt: skip
    if store is not None:
        save_alignment_checkpoint(store, local)
    return local


def training_checkpoint(store: CheckpointStore, at: Position | None) -> Checkpoint | None:
    """The ``train`` checkpoint to resume from (the last one if past training), or None."""
    if at is None or at[0].order < Phase.TRAIN.order:
        return None
    steps = [s for p, s in store.positions() if p is Phase.TRAIN]
    if at[0] is not Phase.TRAIN and not steps:
        return None
    return store.load(Phase.TRAIN, at[1] if at[0] is Phase.TRAIN else steps[-1])


# -- torch state -----------------------------------------------------------------------------


def torch_blob(state: Any) -> bytes:
    """A ``state_dict`` (tensors, numbers) as bytes, for a checkpoint blob."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def torch_state(blob: bytes) -> Any:
    """Inverse of :func:`torch_blob`; only tensors and plain containers are accepted."""
    return torch.load(io.BytesIO(blob), weights_only=True)


def module_blobs(
    prefix: str, module: torch.nn.Module, opt: torch.optim.Optimizer
) -> dict[str, bytes]:
    """A model's and its optimiser's state, plus torch's RNG state."""
    return {
        f"{prefix}": torch_blob(module.state_dict()),
        f"{prefix}_optimizer": torch_blob(opt.state_dict()),
        "torch_rng": torch_blob(torch.get_rng_state()),
    }


def restore_modules(
    ckpt: Checkpoint, prefix: str, module: torch.nn.Module, opt: torch.optim.Optimizer
) -> None:
    """Inverse of :func:`module_blobs`."""
    module.load_state_dict(torch_state(ckpt.blobs[prefix]))
    opt.load_state_dict(torch_state(ckpt.blobs[f"{prefix}_optimizer"]))
    torch.set_rng_state(torch_state(ckpt.blobs["torch_rng"]))


# -- W_B share optimiser state ----------------------------------------------------------------


def sgd_state(name: str, sgd: ShareSgd) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """This party's share of the ``W_B`` momentum buffer (if any) and its step count."""
    arrays = {} if sgd.buffer is None else {f"{name}_momentum": np.asarray(sgd.buffer)}
    return arrays, {"sgd_steps": sgd.steps}


def restore_sgd(ckpt: Checkpoint, name: str, sgd: ShareSgd) -> None:
    """Inverse of :func:`sgd_state`."""
    sgd.buffer = ckpt.arrays.get(f"{name}_momentum")
    sgd.steps = int(ckpt.meta.get("sgd_steps", 0))
