"""vfl.psi: private set intersection of user ids between E and P, and their alignment.

- :mod:`vfl.psi.curve`: hash-to-point, per-job scalars and blinding on the prime-order
  subgroup of edwards25519 (libsodium through PyNaCl).
- :mod:`vfl.psi.protocol`: the two-party Diffie-Hellman PSI (:func:`~vfl.psi.protocol.run_psi`)
  over any object with ``send(bytes)``/``recv(timeout)``, returning a
  :class:`~vfl.psi.protocol.PsiResult` ordered identically on both sides.
"""
