"""What both parties do the same way: PSI on their own ids, with the alignment persisted."""

from __future__ import annotations

import json
import secrets
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vfl.config.job import PsiConfig
from vfl.config.party import PartyConfig
from vfl.data.tables import FeatureTable
from vfl.executor import Executor, LocalProcessExecutor, PartyExecutor, open_party_executor
from vfl.phases import Phase
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.messages import Message
from vfl.psi.protocol import ByteLink, ProgressFn, PsiOptions, PsiResult, run_psi

PhaseFn = Callable[[Phase], None]
"""``phase(name)``: called as the party enters ``psi``, ``train`` and ``export`` (sets the
sealed envelopes' phase and what the heartbeats report)."""

# torch's default generator is process-wide; two parties run as threads of one process (tests,
# in-process reference runs) must not interleave their seeding and model construction.
TORCH_INIT_LOCK = threading.Lock()


def no_phase(name: Phase) -> None:
    """Default :data:`PhaseFn`: nothing to tell."""


def local_rng_seed(local_seed: int | None) -> int:
    """This party's own secret seed: ``local_seed`` if given (reproducible runs), else fresh.

    The seed drives the party's secret initialisation (its half of ``W_B``, P's bottom
    model); it must not be derived from anything the other party knows, such as the job seed.
    """
    return secrets.randbits(63) if local_seed is None else local_seed


class SteppedEndpoint(Endpoint):
    """An :class:`Endpoint` that writes each message's protocol step into the sealed envelope
    header (when the channel is a :class:`~vfl.transport.sealing.SealedChannel`)."""

    def send(self, message: Message) -> None:
        """Set the channel's ``step`` to ``message.step``, then send as usual."""
        step = getattr(message, "step", None)  # control messages (Hello, ...) carry none
        if hasattr(self.channel, "step") and step is not None:
            self.channel.step = step
        super().send(message)


@dataclass(frozen=True)
class LocalAlignment:
    """This party's view of the aligned intersection: ``rows[k]`` of its table is user ``k``."""

    ids: np.ndarray  # (n,) normalised ids in the agreed order
    rows: np.ndarray  # (n,) int64 rows of this party's user table
    reused: bool = False  # taken from the work directory (inputs unchanged on both sides)

    def __len__(self) -> int:
        return len(self.ids)


def psi_progress(party: str, *, steps: int = 4) -> ProgressFn:
    """A progress callback printing each PSI stage to stderr at every ``1/steps`` of it."""
    shown: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        level = steps if total <= 0 else done * steps // total
        if level > shown.get(stage, 0):
            shown[stage] = level
            print(f"{party}: PSI {stage} {done}/{total}", file=sys.stderr, flush=True)

    return report


def party_executor(cfg: PartyConfig) -> AbstractContextManager[PartyExecutor | None]:
    """The executor of ``cfg``'s ``[executor]``, opened for the run (``None`` without one:
    the local pools of ``[psi] workers`` and ``[train] crypto_workers``).

    Raises:
        ExecutorUnavailable: the Ray extra is missing or the cluster cannot be reached.
    """
    if cfg.executor is None:
        return nullcontext()
    return open_party_executor(cfg.executor.spec(), owner=cfg.party.name)


def align_with_peer(
    channel: ByteLink,
    cfg: PartyConfig,
    users: FeatureTable,
    *,
    job_id: str,
    timeout: float,
    work_dir: Path,
    psi: PsiConfig | None = None,
    executor: PartyExecutor | None = None,
) -> LocalAlignment:
    """Run PSI on this party's user ids, on ``executor`` (default: a local pool of ``[psi]
    workers`` for the PSI); the alignment is stored in (and reused from)
    ``work_dir/alignment.json``."""
    psi = psi or PsiConfig()
    pool: AbstractContextManager[Executor] = (
        LocalProcessExecutor(psi.workers) if executor is None else nullcontext(executor.executor)
    )
    with pool as executor_in_use:
        options = PsiOptions(
            curve=psi.curve,
            chunk_size=psi.chunk_size,
            timeout=timeout,
            executor=executor_in_use,
            work_dir=work_dir,
            progress=psi_progress(cfg.party.name),
        )
        result: PsiResult = run_psi(
            channel,
            (str(i) for i in users.ids),  # streamed: PSI holds them compactly
            job_id=job_id,
            role=cfg.role,
            rule=cfg.ids,
            party=cfg.party.name,
            options=options,
        )
    return LocalAlignment(
        ids=np.array(result.ids), rows=np.asarray(result.rows, np.int64), reused=result.reused
    )


def load_alignment(path: Path) -> LocalAlignment:
    """Read the ``ids`` and ``rows`` of an ``alignment.json`` written by the PSI store."""
    data = json.loads(path.read_text())
    return LocalAlignment(ids=np.array(data["ids"]), rows=np.asarray(data["rows"], np.int64))


def in_id_order(alignment: LocalAlignment) -> LocalAlignment:
    """The alignment sorted by normalised id, the same order at both parties.

    PSI orders the intersection by doubly-blinded value, which changes with every job's fresh
    scalars. Both parties know the intersection's ids, so sorting by id leaks nothing more and
    makes aligned positions (hence batches and per-user embeddings) the same in every run on
    the same data: two runs from the same seeds then train the same model.
    """
    order = np.argsort(alignment.ids.astype(str), kind="stable")
    return LocalAlignment(
        ids=alignment.ids[order], rows=alignment.rows[order], reused=alignment.reused
    )
