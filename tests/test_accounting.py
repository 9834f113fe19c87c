"""E's per-phase accounting: bytes on the wire and the epoch/evaluation split of the loop."""

from __future__ import annotations

import numpy as np

from vfl.party.accounting import CountingChannel, MeteredModel, PhaseMeter
from vfl.party.common import LocalAlignment, in_id_order
from vfl.training.inputs import Batch
from vfl.transport.channel import InMemoryChannel


class _Model:
    name = "m"

    def train_step(self, step: int, batch: Batch) -> float:
        return 0.5

    def predict(self, step: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.zeros(items.shape)


def test_meter_splits_bytes_by_phase_and_epochs_from_evaluations() -> None:
    # Prepare
    a, b = InMemoryChannel.pair("e", "p")
    counted = CountingChannel(a)
    meter = PhaseMeter(counted)
    lines: list[str] = []
    model = MeteredModel(_Model(), meter, steps_per_epoch=2, emit=lines.append)
    batch = Batch.__new__(Batch)
    # Execute
    meter.enter("psi")
    counted.send(b"x" * 10)
    b.send(b"y" * 7)
    counted.recv(1.0)
    for _ in range(2):
        for step in range(2):
            model.train_step(step, batch)
            counted.send(b"z" * 3)
        model.predict(0, np.zeros(1), np.zeros((1, 2)))
        model.predict(0, np.zeros(1), np.zeros((1, 2)))
    meter.close()
    # Assert
    phases = [(r["phase"], r["bytes_sent"], r["bytes_received"]) for r in meter.records]
    assert phases == [
        ("psi", 10, 7),
        ("epoch 1", 6, 0),
        ("evaluation 1", 0, 0),
        ("epoch 2", 6, 0),
        ("evaluation 2", 0, 0),
    ]
    assert meter.totals()["bytes_sent"] == 22 and counted.peer == "p"
    assert lines[-1] == "m: epoch 2 step 2/2"


def test_id_order_is_the_same_whatever_order_psi_returned() -> None:
    ids = np.array(["c", "a", "b"])
    one = in_id_order(LocalAlignment(ids=ids, rows=np.array([5, 3, 9])))
    two = in_id_order(LocalAlignment(ids=ids[[2, 0, 1]], rows=np.array([9, 5, 3])))
    assert one.ids.tolist() == two.ids.tolist() == ["a", "b", "c"]
    assert one.rows.tolist() == two.rows.tolist() == [3, 9, 5]
