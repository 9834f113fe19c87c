"""The pieces of resuming, in process: a fresh sealed session per start that drops what an
earlier session left behind, a training loop that continues exactly from a saved state, and
a store that forgets the state the peer never reached."""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import tiny_training_inputs
from vfl.checkpoint import CheckpointStore
from vfl.config.job import ModelConfig, TrainConfig
from vfl.errors import ChannelTimeout, PeerLost, TamperError
from vfl.phases import Phase
from vfl.training.inputs import UserBatcher
from vfl.training.loop import FitResult, LoopState, StopRule, fit
from vfl.training.recommenders import HeadRecommender
from vfl.transport.channel import InMemoryChannel
from vfl.transport.sealing import SealedChannel
from vfl.transport.session import SessionChannel, open_session

KEYS = {name: bytes([i + 1]) * 32 for i, name in enumerate(("E", "P"))}


def _keys(me: str, peer: str) -> dict[str, bytes]:
    import nacl.public

    private = nacl.public.PrivateKey(KEYS[me])
    public = nacl.public.PrivateKey(KEYS[peer]).public_key
    return {"private_key": bytes(private), "peer_public_key": bytes(public)}


def _open_pair(e: InMemoryChannel, p: InMemoryChannel) -> tuple[SessionChannel, SessionChannel]:
    """Both sides open a session at the same time, as two processes do."""
    got: dict[str, SessionChannel] = {}

    def side(ch: InMemoryChannel, me: str, peer: str) -> None:
        got[me] = open_session(ch, **_keys(me, peer), job_id="job", me=me, timeout=10)

    thread = threading.Thread(target=side, args=(p, "P", "E"))
    thread.start()
    side(e, "E", "P")
    thread.join(timeout=10)
    return got["E"], got["P"]


def test_a_new_session_drops_what_the_previous_one_left_in_the_mailbox() -> None:
    # Prepare: a first session; E's last request to P is never read (P was killed)
    e_raw, p_raw = InMemoryChannel.pair("E", "P")
    e1, p1 = _open_pair(e_raw, p_raw)
    e1.send(b"step 7 forward")
    p1.send(b"step 6 answer, never read")
    # Execute: both restart (new sessions on the same mailboxes)
    e2, p2 = _open_pair(e_raw, p_raw)
    e2.send(b"resume at step 6")
    # Assert: only the new session's message is delivered, and the ids differ
    assert p2.recv(timeout=5) == b"resume at step 6"
    assert e2.job_id != e1.job_id and e2.job_id == p2.job_id
    assert e2.job_id.startswith("job/") and p2.dropped >= 1


def test_an_envelope_of_an_earlier_session_is_dropped_never_applied() -> None:
    # Prepare: capture what E sent in session 1
    e_raw, p_raw = InMemoryChannel.pair("E", "P")
    e_raw.sent = []
    e1, _ = _open_pair(e_raw, p_raw)
    e1.send(b"old session, step 3")
    old = e_raw.sent[-1]
    while True:  # empty P's inbox
        try:
            p_raw.recv(timeout=0.1)
        except TimeoutError:
            break
    e2, p2 = _open_pair(e_raw, p_raw)
    # Execute: the relay replays the old envelope (same seq 0) ahead of the new one
    p_raw._inbox.put(old)
    e2.send(b"new session, step 3")
    # Assert
    assert p2.recv(timeout=5) == b"new session, step 3"
    # the pinned keys alone (a plain sealed channel) cannot even open it: session keys
    plain = SealedChannel(p_raw, **_keys("P", "E"), job_id="job", me="P")
    p_raw._inbox.put(old)
    with pytest.raises(TamperError, match="failed authentication"):
        plain.recv(timeout=1)


def test_a_peer_that_restarted_ends_the_session_with_peer_lost() -> None:
    # Prepare
    e_raw, p_raw = InMemoryChannel.pair("E", "P")
    _, p1 = _open_pair(e_raw, p_raw)

    # Execute: E restarts and says hello with a new session id while P waits
    def restarted_e() -> None:
        with contextlib.suppress(ChannelTimeout):  # nobody answers its hello here
            open_session(e_raw, **_keys("E", "P"), job_id="job", me="E", timeout=1)

    thread = threading.Thread(target=restarted_e)
    thread.start()
    # Assert
    with pytest.raises(PeerLost, match="'E' was restarted"):
        p1.recv(timeout=5)
    thread.join(timeout=5)


def _model(inputs: Any, n_users: int) -> HeadRecommender:
    torch.manual_seed(0)
    return HeadRecommender(
        "e_alone", inputs, ModelConfig(), TrainConfig(users_per_step=8), n_users=n_users
    )


def _fit(model: HeadRecommender, split: Any, start: LoopState | None, on_step: Any) -> FitResult:
    batcher = UserBatcher(split, users_per_step=8, negatives_per_positive=2)
    stop = StopRule(max_epochs=2)
    return fit(model, split, batcher, stop=stop, seed=3, k=10, start=start, on_step=on_step)


def test_fit_resumed_from_any_saved_state_ends_as_the_uninterrupted_run() -> None:
    # Prepare: the uninterrupted run, saving (as a checkpoint would) after every call
    al, split, inputs, _, _, _ = tiny_training_inputs()
    saved: list[tuple[str, Any, Any]] = []

    def on_step(state: LoopState) -> None:
        saved.append(
            (
                json.dumps(state.to_meta()),
                copy.deepcopy(model.head.state_dict()),
                copy.deepcopy(model.optimizer.state_dict()),
            )
        )

    model = _model(inputs, len(al))
    want = _fit(model, split, None, on_step)
    steps = len(json.loads(saved[-1][0])["losses"])
    assert steps >= 6 and len(saved) == steps + 2  # every step, plus each epoch's evaluation
    # Execute / Assert: resume from a mid-epoch step, a trained-but-not-evaluated epoch and
    # an evaluated one, each in a fresh model
    spe = steps // 2
    evaluated_first = next(i for i, s in enumerate(saved) if json.loads(s[0])["epoch"] == 2)
    for index in (1, spe - 1, evaluated_first, len(saved) - 2):
        meta, head, optimiser = saved[index]
        resumed = _model(inputs, len(al))
        resumed.head.load_state_dict(head)
        resumed.optimizer.load_state_dict(optimiser)
        got = _fit(resumed, split, LoopState.from_meta(json.loads(meta)), None)
        assert [r.train_loss for r in got.history] == [r.train_loss for r in want.history]
        assert got.history[-1].test == want.history[-1].test, index
        for name, value in resumed.head.state_dict().items():
            assert torch.equal(value, model.head.state_dict()[name]), (index, name)


def test_discard_after_forgets_what_the_peer_never_reached(tmp_path: Any) -> None:
    # Prepare: P saved steps 4 and 5; E only reached 4
    store = CheckpointStore(tmp_path, job_id="j", party="P")
    store.save(Phase.ALIGNMENT, 0, arrays={"rows": np.arange(3)})
    for step in (4, 5):
        store.save(Phase.TRAIN, step, arrays={"v": np.array([step, 1], dtype=object)})
    # Execute
    gone = store.discard_after((Phase.TRAIN, 4))
    # Assert: step 5 is gone, 4 and the alignment stay; None forgets everything
    assert gone == [(Phase.TRAIN, 5)]
    assert store.positions() == [(Phase.ALIGNMENT, 0), (Phase.TRAIN, 4)]
    assert store.discard_after(None) == [(Phase.ALIGNMENT, 0), (Phase.TRAIN, 4)]
    assert store.latest() is None


def test_workers_of_a_killed_party_exit_with_it() -> None:
    # Prepare: a process with a running executor pool, as a party during PSI or training
    import os
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import time\nfrom vfl.executor import LocalProcessExecutor\n"
        "ex = LocalProcessExecutor(2)\nprint(ex.submit(abs, -3).result(), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"3\n"
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) >= 2
        # Execute: kill -9 the parent only
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{c}") for c in children):
            time.sleep(0.2)
        # Assert: no worker is left behind
        assert not [c for c in children if os.path.exists(f"/proc/{c}")]
    finally:
        if proc.poll() is None:
            proc.kill()
