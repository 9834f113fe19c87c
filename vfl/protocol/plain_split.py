"""Plaintext split learning: P's side of each step and E's proxy for P.

Steps of one training iteration (E drives):

1. E -> P ``ForwardIns(users)``; P computes ``b = f_P(x_P[users])`` and returns it.
2. E computes ``z = e·W_E + b·W_B + bias``, the top model and the loss, back-propagates and
   sums ``dL/db`` over each user's rows (so P gets one row per user, whatever E's row count).
3. E -> P ``BackwardIns(dL/db)``; P back-propagates through ``f_P`` and steps its optimiser.

This mode sends ``b`` in the clear and is for development and for measuring the cost of privacy;
the encrypted protocol keeps the same message flow.

Reference: Vepakomma et al., "Split learning for health", 2018 (arxiv.org/abs/1812.00564).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from vfl.errors import ParameterMismatch, ProtocolError, VflError
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.messages import (
    BackwardIns,
    BackwardRes,
    ErrorRes,
    ForwardIns,
    ForwardRes,
    Message,
    SecureForwardIns,
    Shutdown,
)


class PassivePlainServer:
    """P's side: answers forward and backward requests until ``Shutdown``."""

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        bottom: nn.Module,  # P's bottom model: (numeric, categorical) -> b in (-1, 1)^d
        numeric: torch.Tensor,
        categorical: torch.Tensor,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        self.endpoint = endpoint
        self.bottom = bottom
        self.numeric, self.categorical = numeric, categorical
        self.optimizer = optimizer
        self._pending: tuple[int, torch.Tensor] | None = None
        self.steps_done = 0
        # called with ``step + 1`` once a step's update is applied, before the answer goes out
        self.on_update: Callable[[int], None] | None = None
        self._updated: int | None = None

    def serve(self) -> None:
        """Handle messages until ``Shutdown``; a bad request gets an ``ErrorRes``, not a crash."""
        while True:
            msg = self.endpoint.recv_any()
            if isinstance(msg, Shutdown):
                return
            try:
                reply = self.handle(msg)
            except (VflError, ValueError) as exc:  # a bad request, not a crash of P
                self.endpoint.send(ErrorRes(step=getattr(msg, "step", -1), reason=str(exc)))
                if isinstance(exc, ParameterMismatch):
                    raise  # the job cannot go on: stop P too
                continue
            if self._updated is not None and self.on_update is not None:
                self.on_update(self._updated)
            self._updated = None
            self.endpoint.send(reply)

    def handle(self, msg: Message) -> Message:
        """One request -> one reply."""
        if isinstance(msg, ForwardIns):
            return self._forward(msg)
        if isinstance(msg, BackwardIns):
            return self._backward(msg)
        raise ProtocolError(f"P does not accept {type(msg).__name__}")

    def _forward(self, msg: ForwardIns) -> ForwardRes:
        b = self._embed(msg)
        return ForwardRes(step=msg.step, embeddings=b.detach().numpy().astype(np.float32))

    def _embed(self, msg: ForwardIns | SecureForwardIns) -> torch.Tensor:
        """Validate the requested users and compute ``b`` (kept for backward if training)."""
        users = np.asarray(msg.users)
        n = self.numeric.shape[0]
        if users.ndim != 1 or users.size == 0 or users.min() < 0 or users.max() >= n:
            raise ProtocolError(f"step {msg.step}: user positions must be in [0, {n})")
        if np.unique(users).size != users.size:
            raise ProtocolError(f"step {msg.step}: duplicate users in one step")
        idx = torch.as_tensor(users, dtype=torch.int64)
        self.bottom.train(msg.train)
        with torch.set_grad_enabled(msg.train):
            b: torch.Tensor = self.bottom(self.numeric[idx], self.categorical[idx])
        self._pending = (msg.step, b) if msg.train else None
        return b

    def _peek_pending(self, step: int) -> torch.Tensor:
        """``b`` of the training forward of ``step``, kept pending (nothing changes)."""
        if self._pending is None or self._pending[0] != step:
            raise ProtocolError(f"step {step}: backward without a matching training forward")
        return self._pending[1]

    def _pop_pending(self, step: int) -> torch.Tensor:
        """``b`` of the training forward of ``step``, no longer pending."""
        b = self._peek_pending(step)
        self._pending = None
        return b

    def _step_bottom(self, step: int, b: torch.Tensor, grads: np.ndarray) -> None:
        """Back-propagate ``dL/db`` through the bottom model and step P's optimiser."""
        g = torch.as_tensor(np.asarray(grads, dtype=np.float32))
        if g.shape != b.shape or not torch.isfinite(g).all():
            raise ProtocolError(f"step {step}: gradient must be finite with shape {tuple(b.shape)}")
        self.optimizer.zero_grad()
        b.backward(g)
        self.optimizer.step()
        self.steps_done += 1
        self._updated = step + 1

    def _backward(self, msg: BackwardIns) -> BackwardRes:
        self._step_bottom(msg.step, self._pop_pending(msg.step), msg.grads)
        return BackwardRes(step=msg.step)


class PassivePeer:
    """E's view of P: request/response calls over an :class:`Endpoint`."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def forward(self, step: int, users: np.ndarray, *, train: bool) -> np.ndarray:
        """P's ``b`` for ``users`` (m x d)."""
        self.endpoint.send(ForwardIns(step=step, users=np.asarray(users, np.int64), train=train))
        res = self.endpoint.recv(ForwardRes)
        if res.step != step or res.embeddings.shape[0] != len(users):
            raise ProtocolError(f"ForwardRes for step {res.step} does not match step {step}")
        return res.embeddings

    def backward(self, step: int, grads: np.ndarray) -> None:
        """Send ``dL/db`` per user and wait for P's acknowledgement."""
        self.endpoint.send(BackwardIns(step=step, grads=np.asarray(grads, np.float32)))
        res = self.endpoint.recv(BackwardRes)
        if res.step != step:
            raise ProtocolError(f"BackwardRes for step {res.step} does not match step {step}")

    def shutdown(self, step: int) -> None:
        """Tell P the job is over."""
        self.endpoint.send(Shutdown(step=step))
