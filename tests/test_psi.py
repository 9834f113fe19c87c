"""ECDH-PSI: curve identities, intersection against Python sets, refusals and wire contents."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import run_concurrently
from vfl.config.job import PsiCurve
from vfl.config.party import Case, IdRule, Role, UnicodeForm
from vfl.errors import ChannelTimeout, DataError, ParameterMismatch, ProtocolError
from vfl.executor import InlineExecutor, LocalProcessExecutor
from vfl.psi import curve, x25519
from vfl.psi.frames import Frame, FrameKind, Hello
from vfl.psi.protocol import PsiOptions, PsiResult, run_psi
from vfl.transport.channel import InMemoryChannel

JOB = "job-test"
KEEP = IdRule(strip=False, case=Case.KEEP, unicode=UnicodeForm.NONE)
LOWER = IdRule(strip=True, case=Case.LOWER)
CURVES = list(PsiCurve)
X = PsiCurve.X25519
TWIST_U = (2).to_bytes(32, "little")  # f(2) is a non-square mod p: 2 is a twist point


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
    rule: IdRule = KEEP,
    p_rule: IdRule | None = None,
    curves: tuple[PsiCurve, PsiCurve] = (X, X),
    job: str = JOB,
    chunk_size: int = 64,
    timeout: float = 5.0,
    tamper_p: tuple[int, Callable[[bytes], bytes]] | None = None,
    dirs: tuple[Path, Path] | None = None,
    pool: bool = False,
) -> tuple[Outcome, Outcome]:
    """Run E (active) and P (passive) in two threads over an in-memory pair."""
    ch_e, ch_p = InMemoryChannel.pair("E", "P")
    outcomes = {"E": Outcome(sent=[]), "P": Outcome(sent=[])}
    ch_e.sent, ch_p.sent = outcomes["E"].sent, outcomes["P"].sent
    link_p = TamperLink(ch_p, *tamper_p) if tamper_p else ch_p
    work = dirs or (None, None)
    jobs = [
        ("E", ch_e, e_ids, Role.ACTIVE, rule, curves[0], work[0]),
        ("P", link_p, p_ids, Role.PASSIVE, p_rule or rule, curves[1], work[1]),
    ]

    def side(
        name: str, link: InMemoryChannel | TamperLink, ids: Sequence[str], role: Role,
        side_rule: IdRule, side_curve: PsiCurve, work_dir: Path | None,
    ) -> None:  # fmt: skip
        executor = LocalProcessExecutor(2) if pool else InlineExecutor()
        options = PsiOptions(
            curve=side_curve, chunk_size=chunk_size, timeout=timeout, executor=executor,
            work_dir=work_dir,
        )  # fmt: skip
        try:
            outcomes[name].result = run_psi(
                link, ids, job_id=job, role=role, rule=side_rule, party=name, options=options
            )
        except Exception as exc:  # the test inspects it
            outcomes[name].error = exc
        finally:
            executor.close()

    run_concurrently(side, jobs)
    return outcomes["E"], outcomes["P"]


def random_sets(seed: int, n: int = 200) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    universe = [f"user-{rng.getrandbits(40):x}" for _ in range(3 * n)]
    return rng.sample(universe, n), rng.sample(universe, n)


def frames_of(payloads: list[bytes]) -> list[Frame]:
    return [Frame.decode(p) for p in payloads[1:]]  # the first message is the hello


def points_of(payloads: list[bytes], kind: FrameKind) -> list[bytes]:
    blob = b"".join(f.blob for f in frames_of(payloads) if f.kind == kind)
    return curve.split(blob)


def assert_same_alignment(e: Outcome, p: Outcome, expected: set[str]) -> None:
    assert e.result is not None and p.result is not None, (e.error, p.error)
    assert set(e.result.ids) == expected
    assert e.result.ids == p.result.ids
    assert e.result.alignment_digest == p.result.alignment_digest


# --- curves ------------------------------------------------------------------------------


@pytest.mark.parametrize("group", CURVES)
def test_blinding_commutes(group: PsiCurve) -> None:
    # Prepare
    a, b = curve.random_scalar(group), curve.random_scalar(group)
    point = curve.hash_to_point(group, "alice", JOB)
    # Execute
    ab = curve.blind(group, curve.blind(group, point, a), b)
    ba = curve.blind(group, curve.blind(group, point, b), a)
    # Assert
    assert ab == ba
    assert curve.is_valid_point(group, ab)
    assert len({point, curve.blind(group, point, a), ab}) == 3


def test_x25519_matches_rfc7748_vector() -> None:
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    expected = "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    assert x25519.blind(u, scalar).hex() == expected


def test_x25519_hashes_land_on_the_curve_never_the_twist() -> None:
    points = x25519.hash_many([f"id-{i}" for i in range(300)], x25519.domain_tag(JOB))
    assert all(x25519.is_valid_point(p) for p in points)
    assert len(set(points)) == 300
    assert not x25519.is_valid_point(TWIST_U)
    with pytest.raises(ValueError, match="point 0"):
        curve.reblind(X, TWIST_U, x25519.random_scalar())


@pytest.mark.parametrize("group", CURVES)
def test_hash_to_point_is_deterministic_and_job_separated(group: PsiCurve) -> None:
    h = curve.hash_to_point
    assert h(group, "bob", "j1") == h(group, "bob", "j1")
    assert h(group, "bob", "j1") != h(group, "bob", "j2")
    assert h(group, "bob", "j1") != h(group, "bob ", "j1")
    assert curve.is_valid_point(group, h(group, "", "j1"))
    assert h(PsiCurve.X25519, "bob", "j1") != h(PsiCurve.ED25519, "bob", "j1")


def test_random_scalars_are_fresh_and_reduced() -> None:
    for group in CURVES:
        assert len({curve.random_scalar(group) for _ in range(20)}) == 20
    ed = {curve.random_scalar(PsiCurve.ED25519) for _ in range(20)}
    assert all(len(s) == 32 and s[31] < 0x20 for s in ed)  # < L < 2^253


@pytest.mark.parametrize(
    ("group", "point"),
    [
        (PsiCurve.ED25519, bytes([1]) + bytes(31)),  # identity
        (PsiCurve.ED25519, bytes(32)),  # small order
        (PsiCurve.ED25519, b"\xff" * 32),  # non-canonical
        (X, bytes(32)),  # u = 0, order 2
        (X, (1).to_bytes(32, "little")),  # u = 1, order 4
        (X, bytes(31)),
        (X, bytes(33)),
    ],
    ids=["ed-identity", "ed-small-order", "ed-non-canonical", "x-zero", "x-one", "x-31", "x-33"],
)
def test_blind_rejects_invalid_points(group: PsiCurve, point: bytes) -> None:
    assert not curve.is_valid_point(group, point)
    with pytest.raises(ValueError):
        curve.reblind(group, point, curve.random_scalar(group))


def test_blind_rejects_zero_scalar_on_ed25519() -> None:
    with pytest.raises(ValueError):
        curve.blind(PsiCurve.ED25519, curve.hash_to_point(PsiCurve.ED25519, "x", JOB), bytes(32))


# --- protocol ----------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "group"), [(0, X), (1, X), (2, PsiCurve.ED25519)])
def test_intersection_matches_python_sets_in_the_same_order(seed: int, group: PsiCurve) -> None:
    # Prepare
    e_ids, p_ids = random_sets(seed)
    # Execute
    e, p = run_pair(e_ids, p_ids, chunk_size=37 + seed, curves=(group, group))
    # Assert
    assert_same_alignment(e, p, set(e_ids) & set(p_ids))
    assert e.result is not None and p.result is not None
    assert [e_ids[r] for r in e.result.rows] == e.result.ids
    assert [p_ids[r] for r in p.result.rows] == p.result.ids
    assert (e.result.n_local, e.result.n_remote) == (len(e_ids), len(p_ids))
    assert e.result.n_common == len(e.result.ids) and not e.result.reused


def test_full_overlap_and_unequal_sizes() -> None:
    ids = [f"u{i}" for i in range(150)]
    e, p = run_pair(ids, list(reversed(ids)))
    assert_same_alignment(e, p, set(ids))
    for chunk in (1000, 16):
        e, p = run_pair(ids, ids[140:145], chunk_size=chunk)
        assert_same_alignment(e, p, set(ids[140:145]))


def test_both_cores_through_a_process_pool() -> None:
    e_ids, p_ids = random_sets(5, n=300)
    e, p = run_pair(e_ids, p_ids, pool=True)
    assert_same_alignment(e, p, set(e_ids) & set(p_ids))


def test_normalisation_maps_p_ids_onto_e_ids() -> None:
    e_ids = ["alice", "bob", "carol", "caf\u00e9"]
    p_ids = ["  ALICE ", "Bob", " dave", "CAFE\u0301"]  # decomposed e + combining acute
    e, p = run_pair(e_ids, p_ids, rule=LOWER)
    assert_same_alignment(e, p, {"alice", "bob", "caf\u00e9"})
    assert p.result is not None and sorted(p.result.rows.tolist()) == [0, 1, 3]


def test_random_inputs_with_duplicates_are_reported_not_dropped() -> None:
    # Prepare: random sets, then three P ids repeated (one of them twice)
    e_ids, p_ids = random_sets(3)
    dup = [*p_ids, p_ids[5], p_ids[9], p_ids[9], p_ids[11].upper()]
    # Execute
    e, p = run_pair(e_ids, dup, rule=LOWER)
    # Assert
    assert isinstance(p.error, DataError)
    message = str(p.error)
    assert (
        "'P'" in message and "3 ids occur more than once" in message and "4 extra rows" in message
    )
    assert f"'{p_ids[9]}' x3" in message
    assert isinstance(e.error, ProtocolError) and "stopped" in str(e.error)


@pytest.mark.parametrize("p_ids", [["a", "  ", "b"], ["a", "", "b", "\t"]])
def test_empty_ids_are_reported_naming_the_party(p_ids: list[str]) -> None:
    e, p = run_pair(["a", "b", "c"], p_ids, rule=LOWER)
    assert isinstance(p.error, DataError)
    empty = sum(1 for i in p_ids if not i.strip())
    assert "'P'" in str(p.error) and f"{empty} of {len(p_ids)} ids are empty" in str(p.error)
    assert isinstance(e.error, ProtocolError) and "stopped" in str(e.error)


def test_no_overlap_stops_both_with_sizes_and_the_rule() -> None:
    e, p = run_pair(["a", "b", "c"], ["x", "y"])
    assert "3 local and 2 remote" in str(e.error) and "2 local and 3 remote" in str(p.error)
    for outcome in (e, p):
        assert isinstance(outcome.error, DataError)
        assert "normalisation rule" in str(outcome.error)


@pytest.mark.parametrize(
    ("p_rule", "curves", "field"),
    [(LOWER, (X, X), "id_rule"), (KEEP, (X, PsiCurve.ED25519), "curve")],
)
def test_mismatched_parameters_stop_both_before_any_point(
    p_rule: IdRule, curves: tuple[PsiCurve, PsiCurve], field: str
) -> None:
    e, p = run_pair(["a", "b"], ["a", "b"], p_rule=p_rule, curves=curves)
    for outcome in (e, p):
        assert isinstance(outcome.error, ParameterMismatch) and field in str(outcome.error)
        assert len(outcome.sent) == 1  # only the hello


def _truncate(data: bytes) -> bytes:
    return data[:-1]


def _bad_point(data: bytes) -> bytes:
    return data[:-32] + b"\xff" * 32


def _twist_point(data: bytes) -> bytes:
    return data[:-32] + TWIST_U


def _duplicate_point(data: bytes) -> bytes:
    return data[:-32] + data[-64:-32]


def _drop_last_point(data: bytes) -> bytes:
    frame = Frame.decode(data)
    return Frame(frame.kind, frame.total - 1, frame.index, frame.blob[:-32], frame.final).encode()


@pytest.mark.parametrize(
    ("nth", "edit", "message", "p_sees"),
    [
        (2, _truncate, "payload has", ChannelTimeout),  # P waits for E's next message
        (2, _bad_point, "invalid curve point", ChannelTimeout),
        (2, _twist_point, "invalid curve point", ChannelTimeout),
        # a duplicate shows once E holds the whole re-blinded set, after the exchange; P then
        # gets one double value back for two of its (tampered) points
        (2, _duplicate_point, "twice", ProtocolError),
        (3, _drop_last_point, "announced 19 DOUBLE points, expected 20", None),  # P finished
    ],
)
def test_corrupted_chunk_is_a_protocol_error(
    nth: int, edit: Callable[[bytes], bytes], message: str, p_sees: type[Exception] | None
) -> None:
    ids = [f"u{i}" for i in range(20)]
    e, p = run_pair(ids, ids, timeout=0.5, tamper_p=(nth, edit))
    assert isinstance(e.error, ProtocolError) and message in str(e.error)
    if p_sees is None:
        assert p.result is not None
    else:
        assert isinstance(p.error, p_sees)


@pytest.mark.parametrize("group", CURVES)
def test_each_party_receives_only_curve_points(group: PsiCurve) -> None:
    # Prepare
    e_ids, p_ids = random_sets(7, n=60)
    # Execute
    e, p = run_pair(e_ids, p_ids, curves=(group, group))
    # Assert: what E received is what P sent, and vice versa
    for sender, own_ids in ((p, p_ids), (e, e_ids)):
        hello = Hello.decode(sender.sent[0])
        assert (hello.n, hello.reuse, hello.curve) == (len(own_ids), "", group.value)
        assert not any(i.encode() in sender.sent[0] for i in own_ids)
        frames = frames_of(sender.sent)
        assert {f.kind for f in frames} == {FrameKind.SINGLE, FrameKind.DOUBLE}
        points = curve.split(b"".join(f.blob for f in frames))
        assert len(points) == 120 and all(curve.is_valid_point(group, pt) for pt in points)


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
        leaks += [curve.hash_to_point(g, raw, JOB) for g in CURVES]
        assert not any(leak in wire for leak in leaks), raw


def test_same_ids_give_unlinkable_points_across_jobs_and_runs() -> None:
    ids = [f"u{i}" for i in range(30)]
    runs = [run_pair(ids, ids, job="job-a"), run_pair(ids, ids, job="job-b")]
    runs.append(run_pair(ids, ids, job="job-a"))  # same job again: fresh scalars
    for kind in (FrameKind.SINGLE, FrameKind.DOUBLE):
        seen = [set(points_of(e.sent, kind)) | set(points_of(p.sent, kind)) for e, p in runs]
        assert all(len(s) == 30 * (2 if kind is FrameKind.SINGLE else 1) for s in seen)
        assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


def test_singly_blinded_set_is_shuffled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a known scalar, so the in-order blinded set can be recomputed
    scalar = curve.random_scalar(X)
    monkeypatch.setattr(curve, "random_scalar", lambda group: scalar)
    ids = [f"u{i:03d}" for i in range(100)]
    # Execute
    e, _ = run_pair(ids, ids)
    # Assert
    sent = points_of(e.sent, FrameKind.SINGLE)
    in_order = [curve.blind(X, curve.hash_to_point(X, i, JOB), scalar) for i in ids]
    assert sorted(sent) == sorted(in_order)
    assert sent != in_order


def test_progress_is_reported() -> None:
    ch_e, ch_p = InMemoryChannel.pair("E", "P")
    seen: list[tuple[str, int, int]] = []
    ids = [f"u{i}" for i in range(10)]
    inline = PsiOptions(executor=InlineExecutor(), timeout=5.0)
    thread = threading.Thread(
        target=run_psi,
        args=(ch_p, ids),
        kwargs={"job_id": JOB, "role": Role.PASSIVE, "rule": KEEP, "options": inline},
        daemon=True,
    )
    thread.start()
    options = PsiOptions(executor=InlineExecutor(), progress=lambda *a: seen.append(a))
    run_psi(ch_e, ids, job_id=JOB, role=Role.ACTIVE, rule=KEEP, options=options)
    thread.join(timeout=10)
    assert {s for s, _, _ in seen} == {"hash", "send", "reblind", "return"}
    assert ("reblind", 10, 10) in seen and ("hash", 10, 10) in seen


def test_chunk_size_must_be_positive() -> None:
    ch_e, _ = InMemoryChannel.pair("E", "P")
    with pytest.raises(ValueError):
        run_psi(
            ch_e, ["a"], job_id=JOB, role=Role.ACTIVE, rule=KEEP,
            options=PsiOptions(chunk_size=0),
        )  # fmt: skip


@pytest.mark.parametrize(
    "data",
    [b"VPSH{not json", b'VPSH{"version": 2}', b"hello", b'VPSH{"version": "2", "curve": "x25519", '
     b'"job_id": "j", "id_rule": "r", "n": 1, "reuse": ""}'],
    ids=["json", "fields", "magic", "types"],
)  # fmt: skip
def test_malformed_hello_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="hello"):
        Hello.decode(data)


def test_hello_mismatch_names_every_field_on_both_sides() -> None:
    mine = Hello(2, "x25519", "j", "strip=1;case=keep;unicode=NFC", 5, "")
    theirs = Hello(3, "ed25519", "j", "strip=1;case=lower;unicode=NFC", 9, "abc")
    with pytest.raises(ParameterMismatch) as err:
        mine.check_against(theirs, me="E")
    text = str(err.value)
    assert "version: E has 2, the peer has 3" in text and "curve: E has 'x25519'" in text
    assert "case=lower" in text and "job_id:" not in text and " n: " not in text
