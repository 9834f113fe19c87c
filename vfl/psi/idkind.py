"""What kind of ids a party holds, compared in the PSI hello so "001" never meets 1 silently.

Each side classifies its normalised ids and sends only the class (no id, no count):

* ``integers``: every id is ASCII digits without a leading zero (``"7"``, ``"1042"``);
* ``zero-padded``: every id is ASCII digits, some with a leading zero (``"007"``);
* ``text``: no id is all digits (e-mails, ``"u7"``);
* ``mixed``: some ids are all digits, some are not.

Two kinds that cannot share ids by accident of spelling stop both sides with
:class:`~vfl.errors.ParameterMismatch`: ``integers`` against ``zero-padded`` (``"001"``
and ``"1"`` name the same customer in two spellings; declare ``[ids] leading_zeros =
"strip"`` on both parties), and all-digit ids against ``text`` (nothing can match). What
the peer learns is this class, one of four values.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from vfl.errors import ParameterMismatch


class IdKind(Enum):
    """The class of a party's normalised ids (see the module docstring)."""

    INTEGERS = "integers"
    ZERO_PADDED = "zero-padded"
    TEXT = "text"
    MIXED = "mixed"


_DIGITS = frozenset("0123456789")
_NUMERIC = frozenset({IdKind.INTEGERS, IdKind.ZERO_PADDED})


def id_kind(ids: Sequence[str]) -> IdKind:
    """The kind of ``ids`` (normalised, non-empty)."""
    digits = padded = 0
    for value in ids:
        if value and _DIGITS.issuperset(value):
            digits += 1
            padded += len(value) > 1 and value[0] == "0"
    if digits == 0:
        return IdKind.TEXT
    if digits < len(ids):
        return IdKind.MIXED
    return IdKind.ZERO_PADDED if padded else IdKind.INTEGERS


def check_id_kinds(mine: str, theirs: str, *, me: str) -> None:
    """Stop if the two kinds cannot describe the same customers (symmetric: both sides stop).

    An empty or unknown kind (a peer of an earlier version) is not checked.

    Raises:
        ParameterMismatch: naming both kinds and the fix.
    """
    known = {k.value: k for k in IdKind}
    if mine not in known or theirs not in known:
        return
    pair = {known[mine], known[theirs]}
    if pair == _NUMERIC:
        fix = (
            'declare [ids] leading_zeros = "strip" in both party configs, so "001" and "1" '
            "are the same id"
        )
    elif len(pair & _NUMERIC) == 1 and IdKind.TEXT in pair:
        fix = "point both parties' [users] id_column at the same kind of customer id"
    else:
        return
    raise ParameterMismatch(
        f"PSI id kinds differ -- {me} has {mine} ids, the peer has {theirs} ids, so the "
        f"intersection would silently miss customers. Fix: {fix}"
    )
