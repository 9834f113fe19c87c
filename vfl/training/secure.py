"""E's side of the split network through the secret-shared layer (``W_B``, Paillier)."""

from __future__ import annotations

import numpy as np
import torch

from vfl.config.job import ModelConfig, PrivacyConfig, TrainConfig
from vfl.protocol.options import Mode
from vfl.protocol.secure_layer import LayerSettings
from vfl.protocol.secure_split import SecurePassivePeer
from vfl.protocol.share_optim import ShareSgdConfig
from vfl.training.inputs import Batch
from vfl.training.recommenders import ActiveHead, ActiveInputs, _adam, _bce, _rows


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
    ) -> None:
        self.head = ActiveHead(inputs, cfg, n_users=n_users)
        self.peer = peer
        plain = peer.share.settings.mode is Mode.PLAINTEXT
        self.name = "split_shared_plaintext" if plain else "split_encrypted"
        self.optimizer = _adam(list(self.head.parameters()), train)
        self._z_step: int | None = None
        self._z_cache: dict[int, np.ndarray] = {}

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
            torch.as_tensor(batch.users)[local], torch.as_tensor(batch.row_item), z_user[local]
        )
        loss = _bce(logits, batch.labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if z_user.grad is None:
            raise RuntimeError("no gradient for z_B")
        self.peer.backward(step, z_user.grad.numpy().astype(np.float64))
        return float(loss.detach())

    def _eval_z(self, step: int, users: np.ndarray) -> np.ndarray:
        """``z_B`` of ``users`` at ``step``, asking P only for users not yet scored at it.

        Validation and test score the same users with the same weights; re-encrypting their
        ``z_B`` would double the most expensive part of an encrypted evaluation.
        """
        if self._z_step != step:
            self._z_step, self._z_cache = step, {}
        missing = np.array([u for u in users.tolist() if u not in self._z_cache], np.int64)
        if missing.size:
            fresh = self.peer.forward(step, missing, train=False)
            self._z_cache.update(zip(missing.tolist(), fresh, strict=True))
        return np.stack([self._z_cache[u] for u in users.tolist()])

    @torch.no_grad()
    def predict(self, step: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Score candidates with ``z_B`` decrypted for these users (no training)."""
        self.head.eval()
        z_user = torch.as_tensor(self._eval_z(step, users), dtype=torch.float32)
        local = torch.as_tensor(np.repeat(np.arange(len(users)), items.shape[1]))
        row_user, row_item = _rows(users, items)
        logits = self.head.logits(row_user, row_item, z_user[local])
        return torch.sigmoid(logits).numpy().reshape(items.shape)
