"""vfl.crypto: the arithmetic under the encrypted split-learning protocol (SPEC §4).

- :mod:`vfl.crypto.encoding`: the fixed-point codec, reals as residues of ``Z_n``
  (``quantise``, ``lift_signed``, ``dequantise``, ``OverflowDetected``).
- :mod:`vfl.crypto.signed_packing`: many signed slots per Paillier plaintext, balanced digits
  (``pack_rows``/``unpack_rows``).
- :mod:`vfl.crypto.batched`: ``M @ [[X]]`` with fixed-base tables, optionally on an executor.
- :mod:`vfl.crypto.parallel`: when batched work is worth an executor (:mod:`vfl.executor`).
- :mod:`vfl.crypto.randomness`: ``Randomness`` (FULL / SHORT_EXPONENT), ``ShortExponentSource``.
- :mod:`vfl.crypto.paillier`: keys, raw ring operations and ``EncryptedVector``
  (``KeyMismatchError``); Paillier 1999, EUROCRYPT.
- :mod:`vfl.crypto.pool`: ``RandomnessPool`` precomputing obfuscators in background;
  ``randomness_source`` builds any source in one line.

This package imports only numpy, phe, gmpy2, the standard library and :mod:`vfl.errors`.
"""
