"""Split-learning protocol: typed messages, their wire form, and each party's steps.

``messages``/``serde``/``endpoint``: typed messages, wire form, ordered endpoints;
``secure_layer``/``secure_split``: the secret-shared interactive layer with Paillier (SPEC §4)
and the two parties' state machines; ``ciphers``: packed Paillier and plaintext-mode codecs;
``fixed_point``: scales and bounds; ``share_optim``: SGD on shares; ``kernels``: batched
products; ``recorder``: every message a party receives, typed; ``plain_split``: the plaintext
split network (``b`` in the clear).

Nothing here imports a transport: the same code runs over an in-memory channel in tests and
over gRPC in production.
"""
