"""Leading-zero and id-kind mismatches stop the PSI at its hello, naming both kinds; no id
value crosses to tell."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from tests.helpers import run_concurrently
from vfl.config.party import IdRule, LeadingZeros, Role
from vfl.errors import ParameterMismatch
from vfl.executor import InlineExecutor
from vfl.psi.frames import Hello
from vfl.psi.protocol import PsiOptions, PsiResult, run_psi
from vfl.transport.channel import InMemoryChannel


def _psi(
    e_ids: Sequence[str], p_ids: Sequence[str], rule: IdRule
) -> tuple[dict[str, PsiResult | BaseException], list[bytes]]:
    """Both sides' outcome, and the first message each sent (its hello)."""
    ch_e, ch_p = InMemoryChannel.pair("E", "P")
    ch_e.sent, ch_p.sent = [], []
    out: dict[str, PsiResult | BaseException] = {}

    def side(name: str, link: InMemoryChannel, ids: Sequence[str], role: Role) -> None:
        options = PsiOptions(executor=InlineExecutor(), timeout=30)
        try:
            out[name] = run_psi(link, list(ids), job_id="j", role=role, rule=rule, options=options)
        except ParameterMismatch as exc:
            out[name] = exc

    run_concurrently(side, [("E", ch_e, e_ids, Role.ACTIVE), ("P", ch_p, p_ids, Role.PASSIVE)])
    return out, [ch_e.sent[0], ch_p.sent[0]]


def test_zero_padded_against_integer_ids_stops_both_naming_the_kinds_and_the_fix() -> None:
    # Prepare: E writes "001".."160", P writes 1..160 (the 83 of 160 aligned)
    e_ids = [f"{i:03d}" for i in range(1, 161)]
    p_ids = [str(i) for i in range(1, 161)]

    # Execute
    out, hellos = _psi(e_ids, p_ids, IdRule())

    # Assert: both stop, naming both kinds and the key that fixes it; the hellos carry the
    # kind only, no id
    for name in ("E", "P"):
        error = out[name]
        assert isinstance(error, ParameterMismatch), error
        assert "zero-padded" in str(error) and "integers" in str(error)
        assert 'leading_zeros = "strip"' in str(error)
    kinds = [Hello.decode(h).id_kind for h in hellos]
    assert kinds == ["zero-padded", "integers"]
    fields = [set(json.loads(h[4:])) for h in hellos]
    assert fields == [{"version", "curve", "job_id", "id_rule", "n", "reuse", "id_kind"}] * 2


def test_the_declared_rule_for_numeric_ids_aligns_every_customer() -> None:
    e_ids = [f"{i:03d}" for i in range(1, 161)]
    p_ids = [str(i) for i in range(1, 161)]
    out, _ = _psi(e_ids, p_ids, IdRule(leading_zeros=LeadingZeros.STRIP))
    result = out["E"]
    assert isinstance(result, PsiResult) and result.n_common == 160


@pytest.mark.parametrize(
    ("e_ids", "p_ids", "stops"),
    [
        (["1", "2", "3"], ["u1", "u2", "u3"], True),  # digits against text: nothing can match
        (["1", "2", "u3"], ["u1", "2", "3"], False),  # mixed: left to the intersection
        (["a@x", "b@x"], ["a@x", "c@x"], False),
        (["10", "20"], ["10", "30"], False),
    ],
    ids=["digits-vs-text", "mixed", "text-text", "integers-integers"],
)
def test_id_kinds_that_cannot_share_ids_stop_others_pass(
    e_ids: list[str], p_ids: list[str], stops: bool
) -> None:
    out, _ = _psi(e_ids, p_ids, IdRule())
    assert isinstance(out["E"], ParameterMismatch) is stops
    assert isinstance(out["P"], ParameterMismatch) is stops
