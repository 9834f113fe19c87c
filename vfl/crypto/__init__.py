"""vfl.crypto: the arithmetic under the encrypted split-learning protocol (SPEC §4).

- :mod:`vfl.crypto.encoding`: fixed-point reals as residues of ``Z_n`` (``FixedPoint``,
  ``OverflowDetected``).
- :mod:`vfl.crypto.packing`: many signed slots per Paillier plaintext (``SlotLayout``).
- :mod:`vfl.crypto.paillier`: keys, raw ring operations and ``EncryptedVector``
  (``KeyMismatchError``); Paillier 1999, EUROCRYPT.
- :mod:`vfl.crypto.pool`: ``RandomnessPool`` precomputing ``r^n mod n^2`` in background.

This package imports only numpy, phe, gmpy2, the standard library and :mod:`vfl.errors`.
"""
