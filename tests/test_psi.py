"""ECDH-PSI: curve identities, intersection against Python sets, refusals and wire contents."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from vfl.config.party import Case, IdRule, Role
from vfl.errors import ChannelTimeout, DataError, ProtocolError
from vfl.psi import curve
from vfl.psi.protocol import Frame, FrameKind, PsiResult, run_psi
from vfl.transport.channel import InMemoryChannel

JOB = "job-test"
LOWER = IdRule(strip=True, case=Case.LOWER).normalise


def _keep(raw: str) -> str:
    return raw


@dataclass
class Outcome:
    """What one side returned or raised, and the payloads it sent."""

    result: PsiResult | None = None
    error: Exception | None = None
    sent: list[bytes] = field(default_factory=list)


class TamperLink:
    """Wraps an endpoint and rewrites its ``nth`` sent message with ``edit``."""

    def __init__(self, inner: InMemoryChannel, nth: int, edit: Callable[[bytes], bytes]) -> None:
        self.inner, self.nth, self.edit, self.count = inner, nth, edit, 0

    def send(self, data: bytes) -> None:
        self.count += 1
        self.inner.send(self.edit(data) if self.count == self.nth else data)

    def recv(self, timeout: float) -> bytes:
        return self.inner.recv(timeout)


def run_pair(
    e_ids: Sequence[str],
    p_ids: Sequence[str],
    *,
    normalise: Callable[[str], str] = _keep,
    chunk_size: int = 64,
    timeout: float = 5.0,
    tamper_p: tuple[int, Callable[[bytes], bytes]] | None = None,
) -> tuple[Outcome, Outcome]:
    """Run E (active) and P (passive) in two threads over an in-memory pair."""
    ch_e, ch_p = InMemoryChannel.pair("E", "P")
    outcomes = {"E": Outcome(sent=[]), "P": Outcome(sent=[])}
    ch_e.sent, ch_p.sent = outcomes["E"].sent, outcomes["P"].sent
    link_p = TamperLink(ch_p, *tamper_p) if tamper_p else ch_p
    jobs = [("E", ch_e, e_ids, Role.ACTIVE), ("P", link_p, p_ids, Role.PASSIVE)]

    def side(name: str, link: InMemoryChannel | TamperLink, ids: Sequence[str], role: Role) -> None:
        try:
            outcomes[name].result = run_psi(
                link, ids, job_id=JOB, role=role, normalise=normalise,
                party=name, chunk_size=chunk_size, timeout=timeout,
            )  # fmt: skip
        except Exception as exc:  # the test inspects it
            outcomes[name].error = exc

    threads = [threading.Thread(target=side, args=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    return outcomes["E"], outcomes["P"]


def random_sets(seed: int, n: int = 200) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    universe = [f"user-{rng.getrandbits(40):x}" for _ in range(3 * n)]
    return rng.sample(universe, n), rng.sample(universe, n)


def points_of(payloads: list[bytes], kind: FrameKind) -> list[bytes]:
    frames = [Frame.decode(p) for p in payloads]
    blob = b"".join(f.blob for f in frames if f.kind == kind)
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


# --- curve -------------------------------------------------------------------------------


def test_blinding_commutes() -> None:
    # Prepare
    a, b = curve.random_scalar(), curve.random_scalar()
    point = curve.hash_to_point("alice", JOB)
    # Execute
    ab, ba = curve.blind(curve.blind(point, a), b), curve.blind(curve.blind(point, b), a)
    # Assert
    assert ab == ba
    assert curve.is_valid_point(ab)
    assert len({point, curve.blind(point, a), ab}) == 3


def test_hash_to_point_is_deterministic_and_job_separated() -> None:
    assert curve.hash_to_point("bob", "j1") == curve.hash_to_point("bob", "j1")
    assert curve.hash_to_point("bob", "j1") != curve.hash_to_point("bob", "j2")
    assert curve.hash_to_point("bob", "j1") != curve.hash_to_point("bob ", "j1")
    assert curve.is_valid_point(curve.hash_to_point("", "j1"))


def test_random_scalars_are_fresh_and_reduced() -> None:
    scalars = {curve.random_scalar() for _ in range(20)}
    assert len(scalars) == 20
    assert all(len(s) == 32 and s[31] < 0x20 for s in scalars)  # < L < 2^253


@pytest.mark.parametrize(
    "point",
    [bytes([1]) + bytes(31), bytes(32), b"\xff" * 32, bytes(31), bytes(33)],
    ids=["identity", "small-order", "non-canonical", "31-bytes", "33-bytes"],
)
def test_blind_rejects_invalid_points(point: bytes) -> None:
    with pytest.raises(ValueError):
        curve.blind(point, curve.random_scalar())


def test_blind_rejects_zero_scalar() -> None:
    with pytest.raises(ValueError):
        curve.blind(curve.hash_to_point("x", JOB), bytes(32))


# --- protocol ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intersection_matches_python_sets_in_the_same_order(seed: int) -> None:
    # Prepare
    e_ids, p_ids = random_sets(seed)
    # Execute
    e, p = run_pair(e_ids, p_ids, chunk_size=37 + seed)
    # Assert
    assert e.result is not None and p.result is not None, (e.error, p.error)
    assert set(e.result.ids) == set(e_ids) & set(p_ids)
    assert e.result.ids == p.result.ids
    assert [e_ids[r] for r in e.result.rows] == e.result.ids
    assert [p_ids[r] for r in p.result.rows] == p.result.ids
    assert (e.result.n_local, e.result.n_remote) == (len(e_ids), len(p_ids))
    assert e.result.n_common == len(e.result.ids)


def test_unequal_sizes_and_single_chunk() -> None:
    e_ids = [f"u{i}" for i in range(150)]
    p_ids = [f"u{i}" for i in range(140, 145)]
    for chunk in (1000, 16):
        e, p = run_pair(e_ids, p_ids, chunk_size=chunk)
        assert e.result is not None and p.result is not None, (e.error, p.error)
        assert e.result.ids == p.result.ids and sorted(e.result.ids) == sorted(p_ids)


def test_normalisation_maps_p_ids_onto_e_ids() -> None:
    e_ids = ["alice", "bob", "carol"]
    p_ids = ["  ALICE ", "Bob", " dave"]
    e, p = run_pair(e_ids, p_ids, normalise=LOWER)
    assert e.result is not None and p.result is not None, (e.error, p.error)
    assert sorted(e.result.ids) == ["alice", "bob"] == sorted(p.result.ids)
    assert sorted(p.result.rows.tolist()) == [0, 1]


@pytest.mark.parametrize(
    ("p_ids", "problem"),
    [(["a", " A ", "b"], "occur more than once"), (["a", "  ", "b"], "empty")],
)
def test_bad_ids_are_reported_naming_the_party(p_ids: list[str], problem: str) -> None:
    e, p = run_pair(["a", "b", "c"], p_ids, normalise=LOWER)
    assert isinstance(p.error, DataError)
    assert "'P'" in str(p.error) and problem in str(p.error)
    assert isinstance(e.error, ProtocolError) and "stopped" in str(e.error)


def test_empty_intersection_names_both_sizes_and_the_rule() -> None:
    e, p = run_pair(["a", "b", "c"], ["x", "y"])
    for outcome in (e, p):
        assert isinstance(outcome.error, DataError)
        assert "3 local and 2 remote" in str(outcome.error) or "2 local and 3 remote" in str(
            outcome.error
        )
        assert "normalisation rule" in str(outcome.error)


def _truncate(data: bytes) -> bytes:
    return data[:-1]


def _bad_point(data: bytes) -> bytes:
    return data[:-32] + b"\xff" * 32


def _duplicate_point(data: bytes) -> bytes:
    return data[:-32] + data[-64:-32]


def _drop_last_point(data: bytes) -> bytes:
    frame = Frame.decode(data)
    return Frame(frame.kind, frame.total - 1, frame.index, frame.blob[:-32], frame.final).encode()


@pytest.mark.parametrize(
    ("nth", "edit", "message"),
    [
        (1, _truncate, "payload has"),
        (1, _bad_point, "invalid curve point"),
        (1, _duplicate_point, "twice"),
        (2, _drop_last_point, "announced 19 DOUBLE points, expected 20"),
    ],
)
def test_corrupted_chunk_is_a_protocol_error(
    nth: int, edit: Callable[[bytes], bytes], message: str
) -> None:
    ids = [f"u{i}" for i in range(20)]
    e, p = run_pair(ids, ids, timeout=0.5, tamper_p=(nth, edit))
    assert isinstance(e.error, ProtocolError) and message in str(e.error)
    # P either waits for E's next message or, having sent its last one, finishes
    assert isinstance(p.error, ChannelTimeout) if nth == 1 else p.result is not None


def test_fresh_scalar_per_run() -> None:
    ids = [f"u{i}" for i in range(30)]
    first, _ = run_pair(ids, ids)
    second, _ = run_pair(ids, ids)
    singles = [set(points_of(o.sent, FrameKind.SINGLE)) for o in (first, second)]
    assert len(singles[0]) == 30 and not singles[0] & singles[1]


def test_wire_carries_no_raw_ids_or_plain_hashes() -> None:
    # Prepare
    e_ids, p_ids = random_sets(7, n=60)
    # Execute
    e, p = run_pair(e_ids, p_ids)
    # Assert
    wire = b"".join(e.sent + p.sent)
    for raw in e_ids + p_ids:
        data = raw.encode()
        leaks = [data, hashlib.sha256(data).digest(), hashlib.sha512(data).digest()[:32]]
        leaks.append(curve.hash_to_point(raw, JOB))
        assert not any(leak in wire for leak in leaks), raw


def test_singly_blinded_set_is_shuffled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a known scalar, so the in-order blinded set can be recomputed
    scalar = curve.random_scalar()
    monkeypatch.setattr(curve, "random_scalar", lambda: scalar)
    ids = [f"u{i:03d}" for i in range(100)]
    # Execute
    e, _ = run_pair(ids, ids)
    # Assert
    sent = points_of(e.sent, FrameKind.SINGLE)
    in_order = [curve.blind(curve.hash_to_point(i, JOB), scalar) for i in ids]
    assert sorted(sent) == sorted(in_order)
    assert sent != in_order


def test_progress_is_reported() -> None:
    ch_e, ch_p = InMemoryChannel.pair("E", "P")
    seen: list[tuple[str, int, int]] = []
    ids = [f"u{i}" for i in range(10)]
    thread = threading.Thread(
        target=run_psi,
        args=(ch_p, ids),
        kwargs={"job_id": JOB, "role": Role.PASSIVE, "normalise": _keep, "timeout": 5.0},
        daemon=True,
    )
    thread.start()
    run_psi(
        ch_e, ids, job_id=JOB, role=Role.ACTIVE, normalise=_keep, progress=lambda *a: seen.append(a)
    )
    thread.join(timeout=10)
    assert {s for s, _, _ in seen} == {"hash", "send", "reblind", "return"}
    assert ("reblind", 10, 10) in seen


def test_chunk_size_must_be_positive() -> None:
    ch_e, _ = InMemoryChannel.pair("E", "P")
    with pytest.raises(ValueError):
        run_psi(ch_e, ["a"], job_id=JOB, role=Role.ACTIVE, normalise=_keep, chunk_size=0)
