"""One id rule for the loader and the PSI, checked on quirky ids under every Unicode form
against a reference written here from docs/configuration.md's statement of the rule."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import run_concurrently
from vfl.config.party import Case, FeatureSchema, IdRule, Role, UnicodeForm
from vfl.data.loading import load_feature_table
from vfl.executor import InlineExecutor
from vfl.psi.protocol import PsiOptions, run_psi
from vfl.transport.channel import InMemoryChannel

_BOLD_A, _BOLD_CAP_A = 0x1D41A, 0x1D400  # mathematical bold a / A


def _bold(text: str) -> str:
    return "".join(
        chr(_BOLD_A + ord(c) - 97) if c.islower() else chr(_BOLD_CAP_A + ord(c) - 65) for c in text
    )


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


# (E's spelling, P's spelling) of one customer each; ids differ only by what some rule erases
PAIRS: list[tuple[str, str]] = [
    ("caf\u00e9", "cafe\u0301"),  # NFC vs NFD
    ("Ren\u00e9e", "  RENE\u0301E "),  # NFD + case + whitespace
    ("\u5f20\u4f1f", "\u5f20\u4f1f"),  # CJK
    ("\U0001f600smile", "\U0001f600SMILE"),  # emoji + case
    ("abc", _full_width("ABC")),  # full-width upper
    ("bold", _bold("BOLD")),  # mathematical bold capitals: NFKC gives 'BOLD', then lower
    ("fine", "\ufb01ne"),  # ligature fi
    ("kelvin", "\u212aELVIN"),  # Kelvin sign K
    ("space", "\u3000space\u3000"),  # ideographic spaces
    ("mixed", "MiXeD"),
    ("only-e", "other-p"),
    ("\u00c5ngstr\u00f6m", "\u212bngstro\u0308m"),  # angstrom sign + NFD
]


# compatibility forms also erase full-width, bold, ligature, Kelvin and angstrom signs
EXPECTED_COMMON = {
    UnicodeForm.NONE: 5,
    UnicodeForm.NFC: 8,
    UnicodeForm.NFD: 8,
    UnicodeForm.NFKC: 11,
    UnicodeForm.NFKD: 11,
}


def _reference(raw: str, form: UnicodeForm) -> str:
    """docs/configuration.md's rule, written out independently: repeat U, strip, lower, U to a fixed
    point (U = the Unicode normal form, or nothing for 'none')."""

    def u(text: str) -> str:
        return text if form is UnicodeForm.NONE else unicodedata.normalize(form.value, text)

    value = None
    while value != raw:
        value, raw = raw, u(u(raw).strip().lower())
    return raw


def _csv(path: Path, ids: Sequence[str]) -> Path:
    pd.DataFrame({"user_id": list(ids), "x": range(len(ids))}).to_csv(path, index=False)
    return path


def _psi(e_ids: Sequence[str], p_ids: Sequence[str], rule: IdRule) -> set[str]:
    """The intersection the PSI finds between the two id lists (both sides under ``rule``)."""
    ch_e, ch_p = InMemoryChannel.pair("E", "P")
    found: dict[str, list[str]] = {}

    def side(name: str, link: InMemoryChannel, ids: Sequence[str], role: Role) -> None:
        options = PsiOptions(executor=InlineExecutor(), timeout=30)
        result = run_psi(link, list(ids), job_id="j", role=role, rule=rule, options=options)
        found[name] = result.ids

    run_concurrently(side, [("E", ch_e, e_ids, Role.ACTIVE), ("P", ch_p, p_ids, Role.PASSIVE)])
    assert found["E"] == found["P"]
    return set(found["E"])


@pytest.mark.parametrize("form", list(UnicodeForm), ids=[f.value for f in UnicodeForm])
def test_loader_and_psi_apply_one_rule_matching_the_reference(
    tmp_path: Path, form: UnicodeForm
) -> None:
    # Prepare: both parties' files, and the expected common ids by a plain pandas merge
    rule = IdRule(strip=True, case=Case.LOWER, unicode=form)
    e_raw, p_raw = [e for e, _ in PAIRS], [p for _, p in PAIRS]
    reference: Callable[[str], str] = lambda raw: _reference(raw, form)  # noqa: E731
    e_frame = pd.DataFrame({"raw": e_raw, "key": [reference(i) for i in e_raw]})
    p_frame = pd.DataFrame({"raw": p_raw, "key": [reference(i) for i in p_raw]})
    expected = set(e_frame.merge(p_frame, on="key")["key"])

    # Execute: PSI on the raw ids, and PSI on the ids as the loader hands them to a party
    def load(name: str, ids: list[str]) -> list[str]:
        path = _csv(tmp_path / f"{name}.csv", ids)
        schema = FeatureSchema(path=path, id_column="user_id", numeric=("x",))
        return list(load_feature_table(schema, rule).ids)

    e_loaded, p_loaded = load("e", e_raw), load("p", p_raw)
    on_raw = _psi(e_raw, p_raw, rule)
    on_loaded = _psi(e_loaded, p_loaded, rule)

    # Assert: one result, the reference's; the rule is idempotent on every id
    assert on_raw == on_loaded == expected
    assert len(expected) == EXPECTED_COMMON[form]
    for raw in e_raw + p_raw:
        once = rule.normalise(raw)
        assert rule.normalise(once) == once == reference(raw)
    assert e_loaded == [rule.normalise(i) for i in e_raw]
