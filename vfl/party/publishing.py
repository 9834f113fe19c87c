"""What a party tells the coordinator with its heartbeats: only what its own config allows.

The coordinator relays sealed bytes and is trusted with no data (SPEC §1, §4). Besides the
sizes and timing of what it relays it learns exactly what the parties' heartbeats say, and a
:class:`Publisher` is the only way a party writes them:

* ``phase`` (the pipeline phase) when ``[party] publish`` lists ``phase``, else ``""``;
* at each of E's epochs, the entries of ``{epoch, loss, valid_ndcg}`` that ``publish`` lists;
* when E finishes, its test ``auc``, ``hr@10`` and ``ndcg@10`` only if ``publish`` lists
  ``metrics``;
* ``state`` (running / done / failed) always, and on a failure the error's class name only
  (its message may quote ids or values).

P publishes its phase (if listed) and state, never a count: not the intersection size, not
its step count. The default, ``publish = ["phase", "epoch"]``, lets the coordinator show
progress without any loss or metric. What the coordinator tells each *party* in a heartbeat
reply is narrower still (the peer's phase, state and age): see :mod:`vfl.transport.board`.
"""

from __future__ import annotations

from typing import Any

from vfl.config.party import PartyConfig, Published, Role
from vfl.phases import Phase
from vfl.training.loop import EpochRecord
from vfl.transport.board import PartyState
from vfl.transport.grpc_channel import GrpcChannel

_FINAL_METRICS = ("auc", "hr@10", "ndcg@10")


class Publisher:
    """Heartbeat reports of one party, filtered by its ``[party] publish`` list."""

    def __init__(self, channel: GrpcChannel, cfg: PartyConfig) -> None:
        self.channel = channel
        self.items = frozenset(cfg.party.publish)
        self.active = cfg.role is Role.ACTIVE
        self._progress: dict[str, Any] = {}

    def phase(self, name: Phase) -> None:
        """Report that this party entered phase ``name`` (``""`` unless ``phase`` is listed)."""
        self.channel.report(phase=name if Published.PHASE in self.items else "")

    def epoch(self, record: EpochRecord) -> None:
        """E's epoch progress: the listed ones of epoch number, loss and validation NDCG."""
        if not self.active:
            return
        values = {
            Published.EPOCH: ("epoch", record.epoch),
            Published.LOSS: ("loss", round(record.train_loss, 4)),
            Published.VALID_NDCG: ("valid_ndcg", round(record.valid.ndcg, 4)),
        }
        self._progress = dict(v for item, v in values.items() if item in self.items)
        self.channel.report(progress=dict(self._progress))

    def done(self, result: dict[str, Any] | None = None) -> None:
        """Report ``done``; E adds its test metrics of ``result`` if ``metrics`` is listed."""
        progress = dict(self._progress)
        row = (result or {}).get("split_encrypted")
        if self.active and Published.METRICS in self.items and isinstance(row, dict):
            progress.update({k: row[k] for k in _FINAL_METRICS if k in row})
        self.channel.report(state=PartyState.DONE, progress=progress)

    def failed(self, exc: BaseException) -> None:
        """Report ``failed`` with the error's class name only."""
        self.channel.report(state=PartyState.FAILED, progress={"error": type(exc).__name__})
