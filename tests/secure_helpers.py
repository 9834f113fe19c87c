"""Builders for the secret-shared protocol tests: both parties over recorded in-memory channels."""

from __future__ import annotations

import copy
import functools
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vfl.config.job import ModelConfig, TrainConfig
from vfl.crypto.paillier import KeyPair
from vfl.errors import ParameterMismatch, ProtocolError
from vfl.executor import PartyExecutor
from vfl.models.bottom import PassiveBottom
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.initial_shares import initial_weight
from vfl.protocol.options import Mode, SecurityFloor
from vfl.protocol.recorder import RecordingChannel
from vfl.protocol.secure_layer import (
    ActiveShare,
    LayerSettings,
    PassiveShare,
    initial_factor,
    initial_rotation,
)
from vfl.protocol.secure_split import PassiveSecureServer, SecurePassivePeer
from vfl.protocol.share_optim import ShareSgdConfig
from vfl.training.inputs import Batch, UserBatcher
from vfl.training.secure import SecureSplitRecommender

CFG = ModelConfig(
    embedding_dim=4,
    passive_hidden=(6,),
    passive_out=3,
    active_hidden=(6,),
    interactive_out=4,
    top_hidden=(4,),
)
TRAIN = TrainConfig(learning_rate=0.01, users_per_step=4)
BITS = 512
# The parties' own floors in these tests: 512-bit keys and short exponents accepted (the
# defaults, 2048 bits and full randomness only, are what real party configs get).
TEST_FLOOR = SecurityFloor(min_key_bits=BITS, allow_short_exponent=True)


@functools.cache
def keys(party: str) -> KeyPair:
    """One 512-bit key pair per party name for the whole test session."""
    return KeyPair.generate(BITS)


@dataclass
class Pair:
    """E's model and P's server, wired over recording channels, plus the reference weights."""

    model: SecureSplitRecommender
    server: PassiveSecureServer
    e_rec: RecordingChannel  # what E receives
    p_rec: RecordingChannel  # what P receives
    p: Any  # P's TableTensors
    split: Any
    ref: dict[str, Any]
    thread: threading.Thread | None = field(default=None)

    def start(self) -> None:
        """P serves in a thread; E runs setup."""
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        self.model.peer.setup()

    def stop(self) -> None:
        """Shut P down and stop both parties' workers."""
        self.model.peer.shutdown(step=10**6)
        assert self.thread is not None
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        self.model.peer.share.close()
        self.server.share.close()

    def w_b(self) -> np.ndarray:
        """``(U + V) / S`` -- only a test may add the two shares."""
        s = self.model.peer.share.scales
        return (self.model.peer.share.u + self.server.share.v).astype(float) / 2.0**s.w_bits

    def batches(self, n: int, *, users_per_step: int = 4, seed: int = 1) -> list[Batch]:
        """``n`` training steps: whole epochs of the user batcher, fresh order each epoch."""
        batcher = UserBatcher(self.split, users_per_step=users_per_step, negatives_per_positive=2)
        rng, out = np.random.default_rng(seed), list[Batch]()
        while len(out) < n:
            out.extend(batcher.epoch(rng, len(out) // batcher.steps_per_epoch() + 1))
        return out[:n]


def settings(
    mode: Mode = Mode.ENCRYPTED, sgd: ShareSgdConfig | None = None, **kw: Any
) -> LayerSettings:
    """Test settings: 512-bit keys, r^n drawn inline (no background pools) by default."""
    return LayerSettings(
        mode=mode,
        sgd=sgd or ShareSgdConfig(lr=0.5),
        key_bits=BITS,
        precompute=kw.pop("precompute", False),
        **kw,
    )


def build_pair(
    inputs: tuple[Any, ...],
    *,
    e_settings: LayerSettings,
    p_settings: LayerSettings | None = None,
    allow: tuple[bool, bool] = (False, False),
    timeout: float = 30.0,
    floors: tuple[SecurityFloor, SecurityFloor] = (TEST_FLOOR, TEST_FLOOR),
    executors: tuple[PartyExecutor | None, PartyExecutor | None] = (None, None),
) -> Pair:
    """Both parties on ``tests.helpers.tiny_training_inputs()``-style inputs; ``executors``:
    each party's own executor for its Paillier batches (default: the settings' local pools)."""
    torch.manual_seed(0)
    al, split, e_inputs, p, e_ch, p_ch = inputs
    p_settings = p_settings or e_settings
    d, h = CFG.passive_out, CFG.interactive_out
    q = initial_rotation(d, e_settings.scales, np.random.default_rng(1))
    g = initial_factor(d, h, p_settings.scales, np.random.default_rng(2))
    zeros = np.zeros((d, h), dtype=object)  # the shares are made at setup
    plain = e_settings.mode is Mode.PLAINTEXT
    e_share = ActiveShare(
        u=zeros,
        rotation=q,
        settings=e_settings,
        keys=None if plain else keys("E"),
        allow_plaintext=allow[0],
        floor=floors[0],
        executor=executors[0],
    )
    p_plain = p_settings.mode is Mode.PLAINTEXT
    p_share = PassiveShare(
        v=zeros,
        factor=g,
        settings=p_settings,
        keys=None if p_plain else keys("P"),
        allow_plaintext=allow[1],
        noise_seed=3,  # P's embedding-noise stream: the same in every mode
        floor=floors[1],
        executor=executors[1],
    )
    e_rec, p_rec = RecordingChannel(e_ch), RecordingChannel(p_ch)
    bottom = PassiveBottom(p.n_numeric, p.cardinalities, CFG.passive_hidden, CFG.passive_out)
    server = PassiveSecureServer(
        endpoint=Endpoint(p_rec, job_id="t", timeout=timeout),
        bottom=bottom,
        numeric=p.numeric,
        categorical=p.categorical,
        share=p_share,
        optimizer=torch.optim.Adam(bottom.parameters(), lr=0.01),
    )
    peer = SecurePassivePeer(Endpoint(e_rec, job_id="t", timeout=timeout), e_share)
    model = SecureSplitRecommender(e_inputs, CFG, TRAIN, n_users=len(al), peer=peer)
    w0 = initial_weight(q, g, e_settings.scales)  # = (U0 + V0) / S once set up
    ref = {"head": copy.deepcopy(model.head), "bottom": copy.deepcopy(bottom), "w0": w0}
    return Pair(model, server, e_rec, p_rec, p, split, ref)


def refused_setup(pair: Pair) -> tuple[ProtocolError, list[ParameterMismatch]]:
    """E's setup while P serves in a thread, for a pair whose setup P must refuse: the
    error E raised (P's reason, as E was told it) and what P raised; P has stopped."""
    errors: list[ParameterMismatch] = []

    def serve() -> None:
        try:
            pair.server.serve()
        except ParameterMismatch as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        pair.model.peer.setup()
    except ProtocolError as exc:
        at_e = exc
    else:
        raise AssertionError("E's setup was not refused")
    thread.join(timeout=5)
    assert not thread.is_alive(), "P still serves after refusing the setup"
    return at_e, errors


def reference_run(pair: Pair, batches: list[Batch], sgd: ShareSgdConfig) -> dict[str, Any]:
    """The plaintext split network in one process: same weights, Adam on both sides' own
    layers, ``torch.optim.SGD`` on ``W_B``. Returns losses, per-step ``b``, ``δ``, ``W_B``."""
    head, bottom, p = pair.ref["head"], pair.ref["bottom"], pair.p
    w_b = torch.tensor(pair.ref["w0"], dtype=torch.float32, requires_grad=True)
    opt_e = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=TRAIN.weight_decay)
    opt_p = torch.optim.Adam(bottom.parameters(), lr=0.01)
    opt_w = torch.optim.SGD([w_b], lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay)
    keys_ = ("loss", "b", "delta", "w_b", "grad_w", "d_b", "e")
    out: dict[str, Any] = {k: [] for k in keys_}
    for batch in batches:
        users = torch.as_tensor(batch.users)
        b = bottom(p.numeric[users], p.categorical[users])
        b.retain_grad()
        z_b = b @ w_b
        z_b.retain_grad()
        local = torch.as_tensor(batch.row_user)
        row_item = torch.as_tensor(batch.row_item)
        with torch.no_grad():  # E's bottom output e, for the who-sees-what checks
            e = head.bottom(
                head.inputs.users.gather(users[local]), head.inputs.items.gather(row_item)
            )
        out["e"].append(e.numpy().copy())
        logits = head.logits(users[local], row_item, z_b[local], train=True)
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(
                logits, torch.as_tensor(batch.labels), reduction="none"
            )
            * torch.as_tensor(batch.row_weight)
        ).sum()
        out["w_b"].append(w_b.detach().numpy().copy())
        for o in (opt_e, opt_p, opt_w):
            o.zero_grad()
        loss.backward()
        out["b"].append(b.detach().numpy().copy())
        out["delta"].append(z_b.grad.detach().numpy().copy())
        out["grad_w"].append(w_b.grad.detach().numpy().copy())
        out["d_b"].append(b.grad.detach().numpy().copy())
        for o in (opt_e, opt_p, opt_w):
            o.step()
        out["loss"].append(float(loss.detach()))
    out["final_w_b"] = w_b.detach().numpy()
    return out
