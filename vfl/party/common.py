"""What both parties do the same way: PSI on their own ids, with the alignment persisted."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vfl.config.job import PsiConfig
from vfl.config.party import PartyConfig
from vfl.data.tables import FeatureTable
from vfl.executor import LocalProcessExecutor
from vfl.psi.protocol import ByteLink, ProgressFn, PsiOptions, PsiResult, run_psi


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


def align_with_peer(
    channel: ByteLink,
    cfg: PartyConfig,
    users: FeatureTable,
    *,
    job_id: str,
    timeout: float,
    work_dir: Path,
    psi: PsiConfig | None = None,
) -> LocalAlignment:
    """Run PSI on this party's user ids; the alignment is stored in (and reused from)
    ``work_dir/alignment.json``."""
    psi = psi or PsiConfig()
    with LocalProcessExecutor(psi.workers) as executor:
        options = PsiOptions(
            curve=psi.curve,
            chunk_size=psi.chunk_size,
            timeout=timeout,
            executor=executor,
            work_dir=work_dir,
            progress=psi_progress(cfg.party.name),
        )
        result: PsiResult = run_psi(
            channel,
            [str(i) for i in users.ids],
            job_id=job_id,
            role=cfg.role,
            rule=cfg.ids,
            party=cfg.party.name,
            options=options,
        )
    return LocalAlignment(
        ids=np.array(result.ids), rows=np.asarray(result.rows, np.int64), reused=result.reused
    )
