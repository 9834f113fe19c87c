"""Encrypted split learning: P's server and E's proxy for the secret-shared interactive layer.

Same message flow as :mod:`vfl.protocol.plain_split`, with the payloads of
:mod:`vfl.protocol.secure_layer`:

0. E -> P ``SetupIns(pk_E, [[U]]_E, params)``; P compares the agreed parameters (key size,
   fixed-point scales, masks, packing, layer shapes) field by field and answers
   ``SetupRes(pk_P, params)``; any mismatch stops both sides, naming each field.
1. E -> P ``ForwardIns(users)``; P -> E ``SecureForwardRes([[b·W_B]]_E, [[V]]_P)``.
2. E -> P ``SecureBackwardIns([[η·δ]]_E, [[δ·W_Bᵀ]]_P)``; P updates its bottom model and its
   share, and answers ``SecureBackwardRes([[η·bᵀδ - R]]_E)``, with which E updates its share.

Only ciphertexts, the public keys, user positions and step numbers cross.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from vfl.crypto.paillier import EncryptedVector, PublicKey
from vfl.errors import ProtocolError
from vfl.models.bottom import PassiveBottom
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.messages import (
    ForwardIns,
    Message,
    SecureBackwardIns,
    SecureBackwardRes,
    SecureForwardRes,
    SetupIns,
    SetupRes,
    Shutdown,
)
from vfl.protocol.plain_split import PassivePlainServer
from vfl.protocol.secure_layer import ActiveShare, PassiveShare, check_agreement


class PassiveSecureServer(PassivePlainServer):
    """P's side in secure mode: bottom model plus its share ``V`` of ``W_B``."""

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        bottom: PassiveBottom,
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
        """One request -> one reply; plaintext requests are refused in secure mode."""
        if isinstance(msg, SetupIns):
            mine = self.share.params()
            check_agreement(mine, json.loads(msg.params), me="P", peer="E")
            public_key = self.share.accept_setup(msg.public_key, msg.enc_u)
            return SetupRes(step=msg.step, public_key=public_key, params=json.dumps(mine))
        if isinstance(msg, ForwardIns):
            b = self._embed(msg)
            enc_zb, enc_v = self.share.forward_payload(b.detach().numpy(), train=msg.train)
            return SecureForwardRes(step=msg.step, enc_zb=enc_zb, enc_v=enc_v)
        if isinstance(msg, SecureBackwardIns):
            b = self._pop_pending(msg.step)
            enc_ge, d_b = self.share.backward(msg.enc_g, msg.enc_db)
            self._step_bottom(msg.step, b, d_b)
            return SecureBackwardRes(step=msg.step, enc_ge=enc_ge)
        raise ProtocolError(f"P in secure mode does not accept {type(msg).__name__}")


class SecurePassivePeer:
    """E's view of P in secure mode; owns E's share ``U`` and key pair."""

    def __init__(self, endpoint: Endpoint, share: ActiveShare) -> None:
        self.endpoint = endpoint
        self.share = share

    def setup(self) -> None:
        """Step 0: exchange public keys and hand P ``[[U]]_E``."""
        public_key, enc_u = self.share.setup_payload()
        mine = self.share.params()
        self.endpoint.send(
            SetupIns(step=-1, public_key=public_key, enc_u=enc_u, params=json.dumps(mine))
        )
        res = self.endpoint.recv(SetupRes)
        check_agreement(mine, json.loads(res.params), me="E", peer="P")
        self.share.peer_key = PublicKey.from_bytes(res.public_key)

    def forward(self, step: int, users: np.ndarray, *, train: bool) -> np.ndarray:
        """Step 1: ``z_B = b·W_B`` for ``users`` (m x h), decrypted by E."""
        self.endpoint.send(ForwardIns(step=step, users=np.asarray(users, np.int64), train=train))
        res = self.endpoint.recv(SecureForwardRes)
        if res.step != step:
            raise ProtocolError(f"SecureForwardRes for step {res.step} does not match {step}")
        if train:
            if self.share.peer_key is None:
                raise ProtocolError("training forward before setup")
            self.share.enc_vt = EncryptedVector.deserialise(res.enc_v, self.share.peer_key)
        return self.share.decode_zb(res.enc_zb)

    def backward(self, step: int, delta: np.ndarray, lr: float) -> None:
        """Steps 2 and 4: send the encrypted gradients, then apply the masked share update."""
        enc_g, enc_db = self.share.backward_payload(delta, lr)
        self.endpoint.send(SecureBackwardIns(step=step, enc_g=enc_g, enc_db=enc_db))
        res = self.endpoint.recv(SecureBackwardRes)
        if res.step != step:
            raise ProtocolError(f"SecureBackwardRes for step {res.step} does not match {step}")
        self.share.apply_update(res.enc_ge)

    def shutdown(self, step: int) -> None:
        """Tell P the job is over."""
        self.endpoint.send(Shutdown(step=step))
