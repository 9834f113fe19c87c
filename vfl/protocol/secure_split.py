"""Split learning through the secret-shared interactive layer: P's state machine and E's proxy.

Messages of :mod:`vfl.protocol.messages`, payloads of :mod:`vfl.protocol.secure_layer`:

0. E -> P ``SetupIns(cipher, pk_E, params, [[Qᵀ]]_E)``; P checks that its own config allows
   the requested mode, compares the agreed parameters (mode, cipher suite, key size,
   fixed-point scales, masks, packing, layer shapes, W_B optimiser, embedding noise) field by
   field, reads ``pk_E`` with the suite ``cipher`` names (:mod:`vfl.protocol.suites`) and
   answers ``SetupRes(cipher, pk_P, params, [[W_B(0)ᵀ - Mᵀ]]_E)``; any mismatch stops both
   sides, naming each field. ``[[Qᵀ]]`` is empty when the shares exist already (resumed run,
   loaded shard).
1. E -> P ``SecureForwardIns(users, train, [[U]]_E)``;
   P -> E ``SecureForwardRes([[b·W_B]]_E, [[Vᵀ]]_P)``.
2. E -> P ``SecureBackwardIns([[δ]]_E, [[δ·W_Bᵀ]]_P)``; P steps its bottom model and its
   share and answers ``SecureBackwardRes([[bᵀδ - R]]_E)``, with which E steps its share.

P's state: ``idle`` (after setup or a backward) -> ``forwarded(step)`` after a training
forward -> ``idle`` after the matching backward; anything else is refused with an
``ErrorRes``. Only ciphertexts (or, in plaintext mode, plain integers), public keys, user
positions and step numbers cross.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from vfl.errors import ProtocolError
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.messages import (
    Message,
    SecureBackwardIns,
    SecureBackwardRes,
    SecureForwardIns,
    SecureForwardRes,
    SetupIns,
    SetupRes,
    Shutdown,
)
from vfl.protocol.options import Mode
from vfl.protocol.plain_split import PassivePlainServer
from vfl.protocol.secure_layer import ActiveShare, PassiveShare, check_agreement, check_mode_allowed


class PassiveSecureServer(PassivePlainServer):
    """P's side: bottom model plus its share ``V`` of ``W_B``."""

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        bottom: nn.Module,  # P's bottom model: (numeric, categorical) -> b in (-1, 1)^d
        numeric: torch.Tensor,
        categorical: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        share: PassiveShare,
    ) -> None:
        super().__init__(
            endpoint=endpoint,
            bottom=bottom,
            numeric=numeric,
            categorical=categorical,
            optimizer=optimizer,
        )
        self.share = share

    def handle(self, msg: Message) -> Message:
        """One request -> one reply; the plain split's requests are refused here."""
        if isinstance(msg, SetupIns):
            return self._setup(msg)
        if not isinstance(msg, SecureForwardIns | SecureBackwardIns):
            raise ProtocolError(
                f"P in the secret-shared protocol does not accept {type(msg).__name__}"
            )
        if self.share.peer is None:
            raise ProtocolError(f"{type(msg).__name__} before setup")
        if isinstance(msg, SecureForwardIns):
            b = self._embed(msg)
            enc_zb, enc_v = self.share.forward_payload(
                b.detach().numpy(), msg.enc_u, train=msg.train, step=msg.step, users=msg.users
            )
            return SecureForwardRes(step=msg.step, enc_zb=enc_zb, enc_v=enc_v)
        b = self._peek_pending(msg.step)  # a rejected backward leaves the forward pending
        enc_ge, d_b = self.share.backward(msg.enc_g, msg.enc_db)  # checks all, then steps V
        self._pop_pending(msg.step)
        self._step_bottom(msg.step, b, d_b)
        return SecureBackwardRes(step=msg.step, enc_ge=enc_ge)

    def _setup(self, msg: SetupIns) -> SetupRes:
        """Step 0 at P: permission, parameter agreement, keys."""
        theirs = json.loads(msg.params)
        mode = Mode(theirs.get("mode", Mode.ENCRYPTED.value))
        check_mode_allowed(mode, self.share.settings.mode is mode, party=self.share.party)
        mine = self.share.params()
        check_agreement(mine, theirs, me="P", peer="E")
        self.share.set_peer(msg.public_key, scheme=msg.cipher, peer="E")
        return SetupRes(
            step=msg.step,
            cipher=self.share.settings.scheme,
            public_key=self.share.own.key_bytes(),
            params=json.dumps(mine),
            enc_init=self.share.init_reply(msg.enc_init),
        )


class SecurePassivePeer:
    """E's view of P; owns E's share ``U`` and key pair."""

    def __init__(self, endpoint: Endpoint, share: ActiveShare) -> None:
        self.endpoint = endpoint
        self.share = share

    def setup(self) -> None:
        """Step 0: exchange public keys and parameters, and make the initial shares."""
        mine = self.share.params()
        self.endpoint.send(
            SetupIns(
                step=-1,
                cipher=self.share.settings.scheme,
                public_key=self.share.own.key_bytes(),
                params=json.dumps(mine),
                enc_init=self.share.init_payload(),
            )
        )
        res = self.endpoint.recv(SetupRes)
        check_agreement(mine, json.loads(res.params), me="E", peer="P")
        self.share.set_peer(res.public_key, scheme=res.cipher, peer="P")
        self.share.accept_init(res.enc_init)

    def forward(self, step: int, users: np.ndarray, *, train: bool) -> np.ndarray:
        """Step 1: ``z_B = b·W_B`` for ``users`` (m x h), decrypted by E."""
        users = np.asarray(users, np.int64)
        self.endpoint.send(
            SecureForwardIns(step=step, users=users, train=train, enc_u=self.share.u_payload())
        )
        res = self.endpoint.recv(SecureForwardRes)
        if res.step != step:
            raise ProtocolError(f"SecureForwardRes for step {res.step} does not match {step}")
        if train:
            self.share.accept_vt(res.enc_v)
        return self.share.decode_zb(res.enc_zb, len(users))

    def backward(
        self, step: int, delta: np.ndarray, embedding_delta: np.ndarray | None = None
    ) -> None:
        """Steps 2 and 4: send the encrypted gradients, then apply the masked share update.

        ``embedding_delta`` (E's label defence) replaces ``delta`` in P's embedding gradient.
        """
        enc_g, enc_db = self.share.backward_payload(delta, embedding_delta)
        self.endpoint.send(SecureBackwardIns(step=step, enc_g=enc_g, enc_db=enc_db))
        res = self.endpoint.recv(SecureBackwardRes)
        if res.step != step:
            raise ProtocolError(f"SecureBackwardRes for step {res.step} does not match {step}")
        self.share.apply_update(res.enc_ge)

    def shutdown(self, step: int) -> None:
        """Tell P the job is over."""
        self.endpoint.send(Shutdown(step=step))
