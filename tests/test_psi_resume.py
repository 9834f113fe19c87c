"""PSI checkpoints: a PSI cut half-way resumes from the saved scalar, order and chunks."""

from __future__ import annotations

import hashlib
import stat
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.helpers import run_concurrently
from tests.test_psi import JOB, KEEP, X, random_sets
from vfl.config.party import Role
from vfl.executor import InlineExecutor
from vfl.psi import curve, store
from vfl.psi.frames import VERSION
from vfl.psi.protocol import PsiOptions, PsiResult, run_psi
from vfl.psi.resume import SECRET_FILE, STATE_DIR, BlindingState
from vfl.transport.channel import InMemoryChannel

R = TypeVar("R")
CHUNK = 16
N = 200


class CountingExecutor(InlineExecutor):
    """An inline executor that counts the points handed to each PSI worker function."""

    def __init__(self) -> None:
        self.points: Counter[str] = Counter()

    def submit(self, fn: Callable[..., R], /, *args: Any) -> Any:
        if fn is curve.hash_and_blind:
            self.points["hash"] += len(args[2])
        elif fn is curve.reblind:
            self.points["reblind"] += len(args[1]) // curve.POINT_BYTES
        return super().submit(fn, *args)


class Cut(ConnectionError):
    """The wire went down (the party was killed)."""


class CutLink:
    """Delivers the first ``limit`` messages this side sends, then every send fails."""

    def __init__(self, inner: InMemoryChannel, limit: int) -> None:
        self.inner, self.limit, self.count = inner, limit, 0

    def send(self, data: bytes) -> None:
        if self.count >= self.limit:
            raise Cut(f"cut after {self.limit} messages")
        self.count += 1
        self.inner.send(data)

    def recv(self, timeout: float) -> bytes:
        return self.inner.recv(timeout)


@dataclass
class Side:
    """One party's run: result or error, points computed, progress reports."""

    result: PsiResult | None = None
    error: Exception | None = None
    executor: CountingExecutor = field(default_factory=CountingExecutor)
    progress: list[tuple[str, int, int]] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)

    def reported(self, stage: str) -> int:
        return max((done for s, done, _ in self.progress if s == stage), default=0)


def run_both(
    e_ids: Sequence[str], p_ids: Sequence[str], dirs: tuple[Path, Path], *,
    cut_e: int | None = None, wrap_p: Callable[[Any], Any] | None = None,
) -> tuple[Side, Side]:  # fmt: skip
    """E (active) and P (passive) in two threads; E's wire is cut after ``cut_e`` sends;
    ``wrap_p`` wraps P's end of the wire."""
    ch_e, ch_p = InMemoryChannel.pair("E", "P")
    sides = {"E": Side(), "P": Side()}
    link_e = CutLink(ch_e, cut_e) if cut_e is not None else ch_e
    link_p = wrap_p(ch_p) if wrap_p is not None else ch_p
    jobs = [("E", link_e, e_ids, Role.ACTIVE, dirs[0]), ("P", link_p, p_ids, Role.PASSIVE, dirs[1])]

    def side(name: str, link: Any, ids: Sequence[str], role: Role, work: Path) -> None:
        me = sides[name]
        options = PsiOptions(
            curve=X, chunk_size=CHUNK, timeout=1.0 if cut_e is not None else 10.0,
            executor=me.executor, work_dir=work, progress=lambda *a: me.progress.append(a),
        )  # fmt: skip
        try:
            me.result = run_psi(link, ids, job_id=JOB, role=role, rule=KEEP, options=options)
        except Exception as exc:  # the test inspects it
            me.error = exc

    run_concurrently(side, jobs)
    return sides["E"], sides["P"]


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "e", tmp_path / "p"


def _state_dir(work: Path) -> Path:
    (only,) = list((work / STATE_DIR).iterdir())
    return only


def _secret(work: Path, ids: Sequence[str]) -> bytes:
    """The scalar saved in ``work`` for ``ids`` (opened through the public interface)."""
    digest = store.input_digest(ids, version=VERSION, curve=X, job_id=JOB, rule=KEEP)
    state = BlindingState.open(
        work, digest, curve=X, job_id=JOB, n=len(ids), chunk_size=CHUNK, progress=lambda *a: None
    )
    state.close()
    assert state.resumed
    return state.scalar


def _expected(
    e_ids: Sequence[str], p_ids: Sequence[str], x: bytes, y: bytes
) -> tuple[list[str], str]:
    """The alignment scalars ``x`` and ``y`` determine: common ids sorted by ``x·y·H(id)``."""
    doubles = {
        curve.blind(X, curve.blind(X, curve.hash_to_point(X, i, JOB), x), y): i
        for i in set(e_ids) & set(p_ids)
    }
    order = sorted(doubles)
    return [doubles[d] for d in order], hashlib.sha256(b"".join(order)).hexdigest()


def _assert_aligned(e: Side, p: Side, e_ids: Sequence[str], p_ids: Sequence[str]) -> None:
    assert e.result is not None and p.result is not None, (e.error, p.error)
    assert set(e.result.ids) == set(e_ids) & set(p_ids)
    assert e.result.ids == p.result.ids
    assert e.result.alignment_digest == p.result.alignment_digest
    assert [e_ids[r] for r in e.result.rows] == e.result.ids
    assert [p_ids[r] for r in p.result.rows] == p.result.ids


SENT_BEFORE_CUT = 7  # E's hello and its first 6 chunks of singles reach P


def _interrupted(tmp_path: Path, e_ids: Sequence[str], p_ids: Sequence[str]) -> tuple[Side, Side]:
    e, p = run_both(e_ids, p_ids, _dirs(tmp_path), cut_e=SENT_BEFORE_CUT)
    assert isinstance(e.error, Cut) and p.error is not None and p.result is None
    return e, p


def test_cut_psi_resumes_and_does_only_the_missing_work(tmp_path: Path) -> None:
    # Prepare: a PSI cut while the singly-blinded sets stream
    e_ids, p_ids = random_sets(21, N)
    first_e, first_p = _interrupted(tmp_path, e_ids, p_ids)
    x, y = _secret(tmp_path / "e", e_ids), _secret(tmp_path / "p", p_ids)
    # Execute: both restart on the same inputs and work directories
    e, p = run_both(e_ids, p_ids, _dirs(tmp_path))
    # Assert: the right alignment, the one the cut run's scalars determine
    _assert_aligned(e, p, e_ids, p_ids)
    assert e.result is not None and (e.result.ids, e.result.alignment_digest) == _expected(
        e_ids, p_ids, x, y
    )
    # E's six delivered chunks (at least) came from its state, the rest was computed
    sent = (SENT_BEFORE_CUT - 1) * CHUNK
    assert e.reported("hash_resumed") >= sent
    assert e.executor.points["hash"] == N - e.reported("hash_resumed") < N
    assert first_e.executor.points["hash"] + e.executor.points["hash"] < 2 * N
    assert ("hash", N, N) in e.progress  # the stage still reaches the total
    # P re-blinded those chunks in the cut run; E resent the same bytes, so the cache hit
    assert p.reported("reblind_resumed") >= sent
    assert p.executor.points["reblind"] == N - p.reported("reblind_resumed")
    assert first_p.executor.points["reblind"] >= sent
    assert p.reported("hash_resumed") > 0 and e.reported("reblind_resumed") > 0


def test_state_files_are_private_and_gone_after_success(tmp_path: Path) -> None:
    e_ids, p_ids = random_sets(22, N)
    _interrupted(tmp_path, e_ids, p_ids)
    for work in _dirs(tmp_path):
        state = _state_dir(work)
        files = list(state.iterdir())
        assert SECRET_FILE in {f.name for f in files} and len(files) > 1
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    e, p = run_both(e_ids, p_ids, _dirs(tmp_path))
    _assert_aligned(e, p, e_ids, p_ids)
    for work in _dirs(tmp_path):
        assert not (work / STATE_DIR).exists()  # no scalar left on disk
        assert (work / store.ALIGNMENT_FILE).exists()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip])
def test_damaged_checkpoint_files_are_recomputed(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    # Prepare: damage two of E's own chunks and one of P's re-blinded chunks
    e_ids, p_ids = random_sets(23, N)
    _interrupted(tmp_path, e_ids, p_ids)
    x, y = _secret(tmp_path / "e", e_ids), _secret(tmp_path / "p", p_ids)
    e_state, p_state = _state_dir(tmp_path / "e"), _state_dir(tmp_path / "p")
    saved = len(list(e_state.glob("own-*")))
    damage(e_state / "own-0")
    damage(e_state / "own-3")
    damage(sorted(p_state.glob("reblind-*"))[0])
    # Execute
    e, p = run_both(e_ids, p_ids, _dirs(tmp_path))
    # Assert: still the alignment of the saved scalars; the damaged chunks were recomputed
    _assert_aligned(e, p, e_ids, p_ids)
    assert e.result is not None and (e.result.ids, e.result.alignment_digest) == _expected(
        e_ids, p_ids, x, y
    )
    assert e.reported("state_discarded") == 2 and p.reported("state_discarded") == 1
    assert e.reported("hash_resumed") == (saved - 2) * CHUNK
    assert e.executor.points["hash"] == N - (saved - 2) * CHUNK


def test_damaged_secret_starts_afresh_and_is_still_right(tmp_path: Path) -> None:
    e_ids, p_ids = random_sets(24, N)
    _interrupted(tmp_path, e_ids, p_ids)
    _flip(_state_dir(tmp_path / "e") / SECRET_FILE)
    e, p = run_both(e_ids, p_ids, _dirs(tmp_path))
    _assert_aligned(e, p, e_ids, p_ids)
    assert e.reported("hash_resumed") == 0 and e.executor.points["hash"] == N
    assert p.reported("reblind_resumed") == 0  # E's new scalar gives new singles: no hit
    assert p.reported("hash_resumed") > 0  # P still resumed its own work


def test_changed_input_does_not_reuse_the_old_state(tmp_path: Path) -> None:
    # Prepare: a cut run, then E adds one id
    e_ids, p_ids = random_sets(25, N)
    _interrupted(tmp_path, e_ids, p_ids)
    old = _state_dir(tmp_path / "e").name
    grown = [*e_ids, "user-new"]
    # Execute: cut again, then run to the end
    e_cut, _ = _interrupted(tmp_path, grown, p_ids)
    now = _state_dir(tmp_path / "e").name
    e, p = run_both(grown, p_ids, _dirs(tmp_path))
    # Assert: the old state was removed at once, nothing of it was reused, the result is right
    assert now != old
    assert e_cut.reported("hash_resumed") == 0 and e_cut.executor.points["hash"] > 0
    _assert_aligned(e, p, grown, p_ids)
    assert e.reported("hash_resumed") > 0  # from the second cut run, same grown input
    assert not (tmp_path / "e" / STATE_DIR).exists()
