"""Split-learning protocol: typed messages, their wire form, and each party's steps.

Nothing here imports a transport: the same code runs over an in-memory channel in tests and
over gRPC in production.
"""
