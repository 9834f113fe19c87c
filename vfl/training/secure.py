"""E's side of the split network through the secret-shared layer (``W_B``, Paillier)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vfl.config.job import ModelConfig, PrivacyConfig, TrainConfig
from vfl.protocol.options import Mode
from vfl.protocol.secure_layer import LayerSettings
from vfl.protocol.secure_split import SecurePassivePeer
from vfl.protocol.share_optim import ShareSgdConfig
from vfl.training.defences import CutGradientDefence, NoDefence
from vfl.training.inputs import Batch
from vfl.training.recommenders import (
    EVAL_FETCH_USERS,
    ActiveHead,
    ActiveInputs,
    StepCache,
    _adam,
    _bce,
    _rows,
)


def layer_settings(
    train: TrainConfig, *, key_bits: int | None = None, privacy: PrivacyConfig | None = None
) -> LayerSettings:
    """The interactive layer's settings named by a job's ``[train]`` and ``[privacy]``."""
    privacy = privacy or PrivacyConfig()
    return LayerSettings(
        mode=train.protocol,
        sgd=ShareSgdConfig(
            lr=train.wb_learning_rate,
            momentum=train.wb_momentum,
            weight_decay=train.wb_weight_decay,
        ),
        key_bits=key_bits or train.key_bits,
        rerandomise=train.randomness,
        embedding_noise=privacy.embedding_noise,
        precompute=train.precompute_randomness,
        workers=train.crypto_workers,
    )


class SecureSplitRecommender:
    """Same network as :class:`~vfl.training.recommenders.SplitRecommender`, but ``W_B`` is
    secret-shared and updated by SGD (momentum, weight decay) on the shares: a share update
    must stay linear in its gradient (SPEC §4). The W_B optimiser lives in the shares."""

    def __init__(
        self,
        inputs: ActiveInputs,
        cfg: ModelConfig,
        train: TrainConfig,
        *,
        n_users: int,
        peer: SecurePassivePeer,
        defence: CutGradientDefence | None = None,
    ) -> None:
        self.head = ActiveHead(inputs, cfg, n_users=n_users)
        self.peer = peer
        self.defence = defence or NoDefence()
        # An audit's view of each step at the cut (benchmarks, the pilot's privacy audit):
        # called with the batch, z_B (a leaf that requires grad) and the rows' logits.
        self.observer: Callable[[Batch, torch.Tensor, torch.Tensor], None] | None = None
        plain = peer.share.settings.mode is Mode.PLAINTEXT
        self.name = "split_shared_plaintext" if plain else "split_encrypted"
        self.optimizer = _adam(list(self.head.parameters()), train)
        # Validation and test score at the same step: z_B of every aligned user is asked
        # for once per evaluation, whoever has a held-out item (StepCache).
        self._z = StepCache(
            lambda step, users: peer.forward(step, users, train=False),
            n_users,
            min(EVAL_FETCH_USERS, peer.share.scales.max_users),
        )

    def train_step(self, step: int, batch: Batch) -> float:
        """Forward through the encrypted layer, local backward, encrypted backward."""
        self.head.train()
        z_user = torch.tensor(
            self.peer.forward(step, batch.users, train=True),
            dtype=torch.float32,
            requires_grad=True,
        )
        local = torch.as_tensor(batch.row_user)
        logits = self.head.logits(
            torch.as_tensor(batch.users)[local],
            torch.as_tensor(batch.row_item),
            z_user[local],
            train=True,
        )
        if self.observer is not None:
            self.observer(batch, z_user, logits)
        loss = _bce(logits, batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if z_user.grad is None:
            raise RuntimeError("no gradient for z_B")
        delta = z_user.grad.numpy().astype(np.float64)
        self.peer.backward(step, delta, self.defence(delta, batch.secret))
        return float(loss.detach())

    def z_b_latest(self) -> np.ndarray:
        """E's view: ``z_B`` of every aligned user at the last evaluation.

        Raises:
            ValueError: before any evaluation.
        """
        values = self._z.latest()
        if values is None:
            raise ValueError("no evaluation yet: z_B of the aligned users is not known")
        return values

    @torch.no_grad()
    def predict(self, step: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Score candidates with ``z_B`` of every aligned user, decrypted once per step."""
        self.head.eval()
        z_user = torch.as_tensor(self._z.rows(step, users), dtype=torch.float32)
        local = torch.as_tensor(np.repeat(np.arange(len(users)), items.shape[1]))
        row_user, row_item = _rows(users, items)
        logits = self.head.logits(row_user, row_item, z_user[local])
        return torch.sigmoid(logits).numpy().reshape(items.shape)
