"""PSI memory: a compact id column, and peak allocations that grow by a fixed, small number
of bytes per id (the 32-byte points), not by Python objects per id."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_concurrently
from vfl.config.job import PsiCurve
from vfl.config.party import Case, IdRule, Role, UnicodeForm
from vfl.errors import DataError
from vfl.executor import InlineExecutor
from vfl.psi.idcolumn import IdColumn, normalise_column
from vfl.psi.protocol import PsiOptions, PsiResult, run_psi
from vfl.transport.channel import InMemoryChannel

KEEP = IdRule(strip=False, case=Case.KEEP, unicode=UnicodeForm.NONE)
# per party: own and peer points (64), order (8), id column (14 + 8), the aligned output for
# half the ids (~40) and chunk buffers; a list of str per id alone would add ~70
MAX_BYTES_PER_ID_PER_PARTY = 128  # measured ~73; the code before this test: ~213


def _ids(start: int, n: int) -> Iterator[str]:
    """``n`` ids generated one at a time, so the caller holds none of them."""
    return (f"user-{i:09d}" for i in range(start, start + n))


def _traced_pair(n: int, work: Path) -> tuple[int, dict[str, PsiResult]]:
    """Peak traced bytes while E and P (threads, inline executors) run a PSI of ``n`` ids
    each, half shared, with work directories; and the two results."""
    ch_e, ch_p = InMemoryChannel.pair("E", "P")
    out: dict[str, PsiResult] = {}

    def side(name: str, link: InMemoryChannel, role: Role, start: int) -> None:
        options = PsiOptions(chunk_size=256, timeout=60.0, executor=InlineExecutor(),
                             work_dir=work / name)  # fmt: skip
        out[name] = run_psi(link, _ids(start, n), job_id="mem", role=role, rule=KEEP,
                            party=name, options=options)  # fmt: skip

    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run_concurrently(side, [("E", ch_e, Role.ACTIVE, 0), ("P", ch_p, Role.PASSIVE, n // 2)])
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, out


def test_peak_allocations_grow_by_a_few_bytes_per_id(tmp_path: Path) -> None:
    # Prepare
    small, large = 6000, 24000  # both above the 16-chunk batches of chunk_size 256
    # Execute
    peak_small, _ = _traced_pair(small, tmp_path / "small")
    peak_large, results = _traced_pair(large, tmp_path / "large")
    # Assert: the results are right, and the growth per id and party is bounded
    assert results["E"].ids == [f"user-{i:09d}" for i in results["E"].rows.tolist()]
    assert sorted(results["E"].ids) == [f"user-{i:09d}" for i in range(large // 2, large)]
    assert results["E"].ids == results["P"].ids
    per_id_per_party = (peak_large - peak_small) / (large - small) / 2
    assert per_id_per_party < MAX_BYTES_PER_ID_PER_PARTY, (
        f"PSI peak grows by {per_id_per_party:.0f} bytes per id and party"
    )


def test_id_column_is_the_sequence_of_its_ids() -> None:
    # Prepare
    ids = ["a", "ünï", "", "日本語", "x" * 300]
    # Execute
    column = IdColumn.from_strings(iter(ids))
    # Assert
    assert len(column) == len(ids) and list(column) == ids
    assert [column[k] for k in range(-len(ids), len(ids))] == ids + ids
    assert column[1:4] == ids[1:4]
    assert column.take(np.array([4, 0, 3])) == [ids[4], ids[0], ids[3]]
    assert column.nbytes == sum(len(i.encode()) for i in ids) + 8 * (len(ids) + 1)
    with pytest.raises(IndexError, match="out of range"):
        column[len(ids)]


def test_normalise_column_refuses_empty_and_duplicate_ids() -> None:
    # Prepare
    rule = IdRule(strip=True, case=Case.LOWER)
    # Execute / Assert
    assert list(normalise_column(iter([" A", "b "]), rule.normalise, party="E")) == ["a", "b"]
    with pytest.raises(DataError, match=r"2 of 4 ids are empty.*rows \[1, 3\]"):
        normalise_column(["a", " ", "b", ""], rule.normalise, party="E")
    with pytest.raises(DataError, match=r"1 ids occur more than once.*2 extra rows.*'a' x3"):
        normalise_column(["a", "A ", "b", " a"], rule.normalise, party="E")


def test_psi_reads_a_generator_once_and_matches_the_list_input() -> None:
    # Prepare
    e_ids, p_ids = [f"u{i}" for i in range(0, 600)], [f"u{i}" for i in range(300, 900)]
    out: dict[str, dict[str, PsiResult]] = {"list": {}, "stream": {}}

    def side(kind: str, name: str, link: InMemoryChannel, role: Role, ids: list[str]) -> None:
        source = iter(ids) if kind == "stream" else ids
        options = PsiOptions(curve=PsiCurve.X25519, chunk_size=64, executor=InlineExecutor())
        out[kind][name] = run_psi(link, source, job_id="g", role=role, rule=KEEP, party=name,
                                  options=options)  # fmt: skip

    # Execute
    for kind in out:
        ch_e, ch_p = InMemoryChannel.pair("E", "P")
        run_concurrently(side, [(kind, "E", ch_e, Role.ACTIVE, e_ids),
                                (kind, "P", ch_p, Role.PASSIVE, p_ids)])  # fmt: skip
    # Assert: same intersection and rows (the doubles differ: fresh scalars per run)
    for kind in out:
        e, p = out[kind]["E"], out[kind]["P"]
        assert e.ids == p.ids and set(e.ids) == set(e_ids) & set(p_ids)
        assert [e_ids[r] for r in e.rows.tolist()] == e.ids
        assert [p_ids[r] for r in p.rows.tolist()] == p.ids
