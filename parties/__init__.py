"""One definition per kind of organisation that takes part in a vfl job.

Each module holds ``KIND``, a :class:`vfl.kinds.PartyKind`: its role, its tables' columns and
types in the embedded data, its numeric feature transform and its bottom model, built from the
library's blocks. A party config picks one with ``[party] kind = "<module name>"``; the library
loads it through :func:`vfl.kinds.party_kind` only. A new kind of partner is one new module here.
"""
