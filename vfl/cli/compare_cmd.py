"""``vfl compare``: E alone vs split (plaintext) vs centralised on one split."""

from __future__ import annotations


def compare() -> None:
    """Placeholder replaced by the real command."""
