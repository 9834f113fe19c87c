"""vfl.psi: private set intersection of user ids between E and P, and their alignment.

- :mod:`vfl.psi.curve`: the agreed group (``[psi] curve``) behind one interface, and the
  chunk-level work the executor runs; :mod:`vfl.psi.x25519` (default) and
  :mod:`vfl.psi.ed25519` implement it with libsodium through PyNaCl.
- :mod:`vfl.psi.protocol`: the two-party Diffie-Hellman PSI (:func:`~vfl.psi.protocol.run_psi`)
  over any object with ``send(bytes)``/``recv(timeout)``, returning a
  :class:`~vfl.psi.protocol.PsiResult` ordered identically on both sides.
- :mod:`vfl.psi.frames`: the hello and the streamed chunk frames.
- :mod:`vfl.psi.store`: the alignment persisted in each party's work directory, reused only
  when both sides' inputs are unchanged.
- :mod:`vfl.psi.resume`: checkpoints of the blinding work (scalar, order, blinded chunks),
  so a PSI killed half-way and run again on the same input resumes it.
"""
