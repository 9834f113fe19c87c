"""E's side of the split network through the secret-shared interactive layers, one per partner.

Each passive party k has its own secure-layer pair (keys, shares of ``W_Bk``), reached through
a :class:`PartnerPeer`. A step is over E's users (every one of them once per epoch, in the
order of :class:`~vfl.training.inputs.UserBatcher`); partner k's step carries only the users
it knows, as its own aligned positions, in the step's order, and a step in which k knows no
user sends k nothing. E scores the users k does not know with ``a_k``
(:class:`~vfl.models.head.PartnerTerms`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vfl.config.job import ModelConfig, PrivacyConfig, TrainConfig
from vfl.executor import PartyExecutor
from vfl.models.head import PartnerTerms
from vfl.protocol.options import Mode, SecurityFloor
from vfl.protocol.secure_layer import (
    ActiveShare,
    LayerSettings,
    PassiveShare,
    check_floor,
    generate_keys,
    initial_factor,
    initial_rotation,
)
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
        cipher=train.cipher,
        rerandomise=train.randomness,
        embedding_noise=privacy.embedding_noise,
        precompute=train.precompute_randomness,
        workers=train.crypto_workers,
    )


@dataclass(frozen=True)
class LayerParty:
    """Who holds a share, and what that party's own config allows: its name, its
    ``allow_plaintext`` and its security floor (checked before its key pair exists)."""

    name: str
    allow_plaintext: bool = False
    floor: SecurityFloor = field(default_factory=SecurityFloor)


def active_share(
    model: ModelConfig,
    settings: LayerSettings,
    holder: LayerParty,
    *,
    rotation_seed: int | None,
    executor: PartyExecutor | None = None,
) -> ActiveShare:
    """E's share of one partner's ``W_B``, with E's key pair for that partner.

    ``rotation_seed`` draws E's secret rotation ``Q`` of a fresh job's ``W_B(0) = Q·G``; it
    must come from E's own secret (the party processes) -- only an in-process reference run,
    which holds both parties, may use the job seed. ``None``: no initial shares (a resumed
    run, whose ``U`` is restored from its checkpoint).

    Raises:
        SecurityFloorError: ``settings`` are below ``holder``'s floor.
    """
    check_floor(settings, holder.floor, party=holder.name)  # before E's key pair exists
    d, h = model.passive_out, model.interactive_out
    rotation = (
        None
        if rotation_seed is None
        else initial_rotation(d, settings.scales, np.random.default_rng(rotation_seed))
    )
    return ActiveShare(
        u=np.zeros((d, h), dtype=object),  # U0 comes from the setup exchange
        rotation=rotation,
        settings=settings,
        keys=generate_keys(settings),
        allow_plaintext=holder.allow_plaintext,
        party=holder.name,
        floor=holder.floor,
        executor=executor,
    )


def passive_share(
    model: ModelConfig,
    settings: LayerSettings,
    holder: LayerParty,
    *,
    factor_seed: int | None,
    noise_seed: int,
    executor: PartyExecutor | None = None,
) -> PassiveShare:
    """P's share of its ``W_B``, with P's key pair.

    ``factor_seed`` draws P's secret factor ``G`` of a fresh job's ``W_B(0) = Q·G`` (None: a
    resumed run, ``V`` restored from its checkpoint); ``noise_seed`` seeds P's embedding
    noise. Both come from P's own secret in the party processes.

    Raises:
        SecurityFloorError: ``settings`` are below ``holder``'s floor.
    """
    check_floor(settings, holder.floor, party=holder.name)  # before P's key pair exists
    d, h = model.passive_out, model.interactive_out
    factor = (
        None
        if factor_seed is None
        else initial_factor(d, h, settings.scales, np.random.default_rng(factor_seed))
    )
    return PassiveShare(
        v=np.zeros((d, h), dtype=object),  # V0 comes from the setup exchange
        factor=factor,
        settings=settings,
        keys=generate_keys(settings),
        allow_plaintext=holder.allow_plaintext,
        party=holder.name,
        noise_seed=noise_seed,
        floor=holder.floor,
        executor=executor,
    )


@dataclass(frozen=True)
class PartnerPeer:
    """One passive party as E's model reaches it: its secure-layer proxy and which of E's
    users it knows (``positions[u]``: the partner's aligned position of E's user u, -1 if the
    partner does not know u)."""

    name: str
    peer: SecurePassivePeer
    positions: np.ndarray  # (n_users,) int64

    @property
    def n_known(self) -> int:
        """How many of E's users the partner knows (its aligned users)."""
        return int(np.count_nonzero(self.positions >= 0))

    def known(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mask, positions)``: which of ``users`` the partner knows, and their positions
        at the partner (in the order of ``users``)."""
        at = self.positions[np.asarray(users, np.int64)]
        mask = at >= 0
        return mask, at[mask]


def partner_secret(secret: int, k: int) -> int:
    """Partner k's share of a step's defence secret: the step's own for the first partner,
    a value derived from it for the others (no two partners get correlated noise)."""
    if k == 0:
        return secret
    return int(np.random.SeedSequence([secret, k]).generate_state(1, np.uint64)[0] >> 1)


class FederatedRecommender:
    """E's network over every partner's secure layer: ``z = e·W_E + Σ_k term_k + bias``.

    Same network as :class:`~vfl.training.recommenders.SplitRecommender` for one partner who
    knows every user; each ``W_Bk`` is secret-shared and updated by SGD on its shares (a
    share update must stay linear in its gradient, SPEC §4). ``term_k`` is ``z_Bk`` for the
    users k knows and ``a_k`` for the others (:class:`~vfl.models.head.PartnerTerms`).
    """

    def __init__(
        self,
        inputs: ActiveInputs,
        cfg: ModelConfig,
        train: TrainConfig,
        *,
        partners: Sequence[PartnerPeer],
        n_users: int,
        defence: CutGradientDefence | None = None,
    ) -> None:
        if not partners:
            raise ValueError("a federated model needs at least one passive party")
        self.head = ActiveHead(inputs, cfg, n_users=n_users, n_partners=len(partners))
        self.partners = list(partners)
        self.defence = defence or NoDefence()
        # An audit's view of each step at the cut (benchmarks, the pilot's privacy audit):
        # called with the batch, the first partner's z_B (a leaf that requires grad) and
        # the rows' logits.
        self.observer: Callable[[Batch, torch.Tensor, torch.Tensor], None] | None = None
        plain = self.partners[0].peer.share.settings.mode is Mode.PLAINTEXT
        self.name = "split_shared_plaintext" if plain else "split_encrypted"
        self.optimizer = _adam(list(self.head.parameters()), train)
        # Validation and test score at the same step: each partner is asked for z_B of all
        # of its users once per evaluation, whoever has a held-out item (StepCache).
        self._z = [_eval_cache(p) for p in self.partners]

    def _terms(self) -> PartnerTerms:
        if self.head.partners is None:  # built with len(partners) > 0
            raise RuntimeError("the head has no partner terms")
        return self.head.partners

    def train_step(self, step: int, batch: Batch) -> float:
        """Forward through each partner's encrypted layer, local backward, encrypted
        backwards (one per partner that knows a user of the step)."""
        self.head.train()
        masks, zs = [], []
        for p in self.partners:
            mask, at = p.known(batch.users)
            rows = p.peer.forward(step, at, train=True) if len(at) else None
            z = _rows_tensor(rows, len(at), self.head.interactive.out_dim)
            masks.append(torch.as_tensor(mask))
            zs.append(z.requires_grad_(rows is not None))
        z_user = self._terms()(masks, zs)
        local = torch.as_tensor(batch.row_user)
        logits = self.head.logits(
            torch.as_tensor(batch.users)[local],
            torch.as_tensor(batch.row_item),
            z_user[local],
            train=True,
        )
        if self.observer is not None:
            self.observer(batch, zs[0], logits)
        loss = _bce(logits, batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        for k, (p, z) in enumerate(zip(self.partners, zs, strict=True)):
            if not z.requires_grad:
                continue  # the partner knows no user of this step: it is not asked
            if z.grad is None:
                raise RuntimeError(f"no gradient for z_B of {p.name}")
            delta = z.grad.numpy().astype(np.float64)
            p.peer.backward(step, delta, self.defence(delta, partner_secret(batch.secret, k)))
        return float(loss.detach())

    def z_b_latest(self) -> np.ndarray:
        """E's view: ``z_B`` of the first partner's users at the last evaluation.

        Raises:
            ValueError: before any evaluation.
        """
        values = self._z[0].latest()
        if values is None:
            raise ValueError("no evaluation yet: z_B of the aligned users is not known")
        return values

    @torch.no_grad()
    def predict(self, step: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Score candidates; each partner's ``z_B`` of all its users decrypted once a step."""
        return self._predict(step, users, items, without=None)

    @torch.no_grad()
    def predict_without(
        self, step: int, users: np.ndarray, items: np.ndarray, partner: str
    ) -> np.ndarray:
        """Scores with ``partner``'s term replaced by its ``a_k`` for every user (its gain is
        the metric of :meth:`predict` minus this one's); asks the partners nothing new."""
        return self._predict(step, users, items, without=partner)

    def partner_names(self) -> list[str]:
        """The partners' names, in the model's order."""
        return [p.name for p in self.partners]

    def _predict(
        self, step: int, users: np.ndarray, items: np.ndarray, *, without: str | None
    ) -> np.ndarray:
        self.head.eval()
        masks, zs = [], []
        for p, cache in zip(self.partners, self._z, strict=True):
            mask, at = p.known(users)
            if p.name == without:
                mask, at = np.zeros_like(mask), at[:0]
            rows = cache.rows(step, at)
            masks.append(torch.as_tensor(mask))
            zs.append(torch.as_tensor(rows, dtype=torch.float32))
        z_user = self._terms()(masks, zs)
        local = torch.as_tensor(np.repeat(np.arange(len(users)), items.shape[1]))
        row_user, row_item = _rows(users, items)
        logits = self.head.logits(row_user, row_item, z_user[local])
        return torch.sigmoid(logits).numpy().reshape(items.shape)


class SecureSplitRecommender(FederatedRecommender):
    """:class:`FederatedRecommender` with one partner that knows every one of E's users
    (position u at E is position u at P): the two-party model of the in-process runs."""

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
        partner = PartnerPeer(
            name=peer.endpoint.channel.peer,
            peer=peer,
            positions=np.arange(n_users, dtype=np.int64),
        )
        super().__init__(inputs, cfg, train, partners=[partner], n_users=n_users, defence=defence)

    @property
    def peer(self) -> SecurePassivePeer:
        """The one partner's proxy."""
        return self.partners[0].peer


def _eval_cache(partner: PartnerPeer) -> StepCache:
    """The partner's z_B of all its users at an evaluation step, fetched once."""
    peer = partner.peer
    return StepCache(
        lambda step, users: peer.forward(step, users, train=False),
        partner.n_known,
        min(EVAL_FETCH_USERS, peer.share.scales.max_users),
    )


def _rows_tensor(rows: np.ndarray | None, n: int, width: int) -> torch.Tensor:
    """``rows`` as a float32 tensor (an empty ``0 x width`` one when there are none)."""
    if rows is None:
        return torch.zeros((n, width), dtype=torch.float32)
    return torch.tensor(rows, dtype=torch.float32)
