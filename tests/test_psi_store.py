"""Alignment persistence: stored atomically, reused only when both sides' inputs are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_psi import KEEP, LOWER, X, assert_same_alignment, random_sets, run_pair
from vfl.config.job import PsiCurve
from vfl.psi import store
from vfl.psi.frames import VERSION


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "e", tmp_path / "p"


def test_alignment_is_stored_and_reused_on_unchanged_input(tmp_path: Path) -> None:
    # Prepare
    e_ids, p_ids = random_sets(11)
    first_e, first_p = run_pair(e_ids, p_ids, dirs=_dirs(tmp_path))
    stored = json.loads((tmp_path / "e" / store.ALIGNMENT_FILE).read_text())
    # Execute
    e, p = run_pair(e_ids, p_ids, dirs=_dirs(tmp_path))
    # Assert
    assert_same_alignment(e, p, set(e_ids) & set(p_ids))
    assert e.result is not None and p.result is not None and first_e.result is not None
    assert e.result.reused and p.result.reused and not first_e.result.reused
    assert e.result.ids == first_e.result.ids and e.result.rows.tolist() == stored["rows"]
    assert stored["ids"] == first_e.result.ids == stored["ids"]
    assert len(e.sent) == len(p.sent) == 1  # only the hellos: no point was exchanged
    assert sorted(f.name for f in (tmp_path / "e").iterdir()) == [store.ALIGNMENT_FILE]
    assert first_p.result is not None and p.result.rows.tolist() == first_p.result.rows.tolist()


def test_changed_input_on_one_side_makes_both_recompute(tmp_path: Path) -> None:
    # Prepare
    e_ids, p_ids = random_sets(12)
    run_pair(e_ids, p_ids, dirs=_dirs(tmp_path))
    changed = [*p_ids[:-1], e_ids[0]]  # P swaps its last id for one E holds
    # Execute
    e, p = run_pair(e_ids, changed, dirs=_dirs(tmp_path))
    # Assert
    assert_same_alignment(e, p, set(e_ids) & set(changed))
    assert e.result is not None and p.result is not None
    assert not e.result.reused and not p.result.reused  # E's file was still valid for E
    assert len(e.sent) > 1
    # and the new alignment was stored by both and is reused next time
    e2, p2 = run_pair(e_ids, changed, dirs=_dirs(tmp_path))
    assert e2.result is not None and e2.result.reused and e2.result.ids == e.result.ids
    assert p2.result is not None and p2.result.reused


def test_changed_rule_order_or_missing_file_is_not_reused(tmp_path: Path) -> None:
    e_ids, p_ids = random_sets(13)
    run_pair(e_ids, p_ids, dirs=_dirs(tmp_path))
    variants = [
        dict(e_ids=e_ids, p_ids=p_ids, rule=LOWER),  # another rule on both sides
        dict(e_ids=list(reversed(e_ids)), p_ids=p_ids, rule=KEEP),  # same set, other order
    ]
    for variant in variants:
        e, p = run_pair(
            variant["e_ids"], variant["p_ids"], rule=variant["rule"], dirs=_dirs(tmp_path)
        )
        assert e.result is not None and p.result is not None, (e.error, p.error)
        assert not e.result.reused and not p.result.reused
        assert [variant["e_ids"][r] for r in e.result.rows] == e.result.ids
    (tmp_path / "p" / store.ALIGNMENT_FILE).unlink()
    e, p = run_pair(list(reversed(e_ids)), p_ids, dirs=_dirs(tmp_path))
    assert e.result is not None and p.result is not None
    assert not e.result.reused and not p.result.reused


def test_corrupt_or_foreign_file_is_recomputed(tmp_path: Path) -> None:
    e_ids, p_ids = random_sets(14)
    run_pair(e_ids, p_ids, dirs=_dirs(tmp_path))
    (tmp_path / "e" / store.ALIGNMENT_FILE).write_text("{not json")
    e, p = run_pair(e_ids, p_ids, dirs=_dirs(tmp_path))
    assert e.result is not None and not e.result.reused and p.result is not None
    assert json.loads((tmp_path / "e" / store.ALIGNMENT_FILE).read_text())["format"] == 1


def test_input_digest_covers_every_parameter() -> None:
    ids = ["a", "b"]
    base = store.input_digest(ids, version=VERSION, curve=X, job_id="j", rule=KEEP)
    others = [
        store.input_digest(["b", "a"], version=VERSION, curve=X, job_id="j", rule=KEEP),
        store.input_digest(["ab"], version=VERSION, curve=X, job_id="j", rule=KEEP),
        store.input_digest(ids, version=VERSION + 1, curve=X, job_id="j", rule=KEEP),
        store.input_digest(ids, version=VERSION, curve=PsiCurve.ED25519, job_id="j", rule=KEEP),
        store.input_digest(ids, version=VERSION, curve=X, job_id="k", rule=KEEP),
        store.input_digest(ids, version=VERSION, curve=X, job_id="j", rule=LOWER),
    ]
    assert len({base, *others}) == 7


def test_id_rule_normalises_unicode_and_states_itself() -> None:
    from vfl.config.party import Case, IdRule, UnicodeForm

    decomposed = " Cafe\u0301 "
    assert IdRule(case=Case.LOWER).normalise(decomposed) == "caf\u00e9"
    assert IdRule(case=Case.LOWER, unicode=UnicodeForm.NONE).normalise(decomposed) == "cafe\u0301"
    assert IdRule(unicode=UnicodeForm.NFKC).normalise("\uff21") == "A"  # fullwidth A
    assert IdRule().fingerprint() == "strip=1;case=keep;unicode=NFC;steps=2"
    assert IdRule().fingerprint() != IdRule(unicode=UnicodeForm.NFKC).fingerprint()
