"""Synthetic vertically partitioned e-commerce (E) + payment (P) data with a known ground truth.

Generative model (all coefficients live in :class:`Coefficients` and are written to
``ground_truth.json`` together with every user's and item's latents):

1. **Users** (the union of both parties' customers). Each user ``u`` has
   category logits ``z_u ~ N(0, I_8)`` and preference ``theta_u = softmax(z_u / tau)`` over the
   C = 8 categories (small ``tau`` -> peaked tastes); price affinity ``pi_u ~ N(0, 1)`` (the
   standardised log price the user likes best); activity ``alpha_u ~ N(0, 1)``.
2. **Items**. Category ``k_i`` (uniform), log price ``log p_i = base[k_i] + sd * N(0, 1)``,
   standardised over the catalogue to ``q_i``; popularity ``rho_i ~ N(0, 1)``; brand tier from the
   within-category price residual; rating ``~ 3.6 + 0.35 rho_i`` plus noise.
3. **Utility** ``s(u, i) = a log theta_u[k_i] - b (q_i - pi_u)^2 / 2 + c rho_i``.
   User ``u`` buys ``n_u = clip(round(n_mid * exp(n_slope * alpha_u)), n_min, 20)`` distinct items,
   sampled without replacement with probability proportional to ``softmax(s(u, .) / T)``
   (Gumbel-top-k). It also clicks ``~ Poisson(click_ratio * n_u)`` further items without buying
   (label 0), sampled the same way at temperature ``click_T``. Timestamps are uniform over the
   window and sorted per user; purchase order is a random permutation of the sampled set.
4. **E features** (the platform): sessions/views/carts/orders/recency from ``alpha_u``;
   ``browse_share_<cat>`` for categories 0..3 only, shares of ``views + 20`` multinomial draws from
   ``(1 - mix) theta_u + mix / C``; device; membership tier (from ``alpha_u`` plus a weak
   ``leak * pi_u``). E sees nothing else about price affinity or categories 4..7.
5. **P features** (the payment provider): ``monthly_spend_level`` (log) and ``avg_ticket`` and
   ``instalment_rate`` and card type driven by ``pi_u``; ``txn_per_month`` from ``alpha_u``;
   account age; ``spend_share_<cat>`` for categories 4..7 from ``3 txn + 20`` multinomial draws;
   region (pure noise).
6. **L features** (an optional third organisation, a logistics partner; ``--parties 3``):
   ``parcel_share_<cat>`` for categories 2..5 from ``2 deliveries + 20`` multinomial draws;
   ``deliveries_per_month`` from ``alpha_u``; ``express_rate`` and ``avg_parcel_value`` driven
   by ``pi_u`` (more weakly than P's); returns rate, account age, delivery slot (noise) and
   locker use. L knows a random ``third_overlap`` share of the union, drawn from its own
   random stream so that E's and P's files are those of the two-party data of the same seed.
7. **Ids**. A fraction ``overlap`` of the union is held by both parties, the rest is split evenly
   into E-only and P-only customers. E writes ``user00042@example.com``; P writes the same customer
   as ``"  USER00042@EXAMPLE.COM "`` -- both configs say ``strip = true, case = "lower"``.

Only E's users interact; both halves of the signal matter (see :func:`oracle_ranking`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CATEGORIES = ("electronics", "fashion", "home", "beauty", "sports", "books", "grocery", "toys")
E_CATEGORIES = (0, 1, 2, 3)  # category shares E can observe (browsing)
P_CATEGORIES = (4, 5, 6, 7)  # category shares P can observe (offline card spend)
L_CATEGORIES = (2, 3, 4, 5)  # category shares L can observe (what its parcels hold)
BASE_LOG_PRICE = (5.0, 3.8, 4.3, 3.2, 4.0, 2.8, 2.4, 3.4)  # per category, log of currency units
START_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z
WINDOW_SECONDS = 182 * 24 * 3600
_CHUNK = 2048


@dataclass(frozen=True)
class Coefficients:
    """Every constant of the generative model (see the module docstring for the equations)."""

    tau: float = 0.6
    a: float = 1.0
    b: float = 1.5
    c: float = 0.5
    T: float = 1.0
    click_T: float = 2.0
    click_ratio: float = 0.6
    n_mid: float = 9.0
    n_slope: float = 0.45
    n_min: int = 4
    price_sd_within: float = 0.5
    share_mix: float = 0.1
    leak: float = 0.2

    @classmethod
    def sparse(cls) -> Coefficients:
        """Sparse purchase histories, as at most shops: a median of 3 purchases a customer
        (one to train on), where E's history reveals little and P's features matter most."""
        return cls(n_mid=3.0, n_slope=0.6, n_min=3)


@dataclass(frozen=True)
class Latents:
    """Per-user latents of the union (row ``u`` is union user ``u``)."""

    z: np.ndarray  # (n, C) category logits
    theta: np.ndarray  # (n, C) softmax(z / tau)
    price_affinity: np.ndarray  # (n,)
    activity: np.ndarray  # (n,)


@dataclass(frozen=True)
class Catalogue:
    """Items: the table E publishes plus the latents behind it."""

    table: pd.DataFrame
    category: np.ndarray  # (m,) int
    price_z: np.ndarray  # (m,) standardised log price
    popularity: np.ndarray  # (m,)


@dataclass(frozen=True)
class OracleReport:
    """HR@10 and AUC of ranking the last purchase against 99 unseen items by true utility.

    Keys: ``all`` (every latent), ``e_only`` / ``p_only`` (what E's / P's features reveal, the
    rest at its prior mean) and ``popularity`` (item popularity alone).
    """

    hr10: dict[str, float]
    auc: dict[str, float]


def sample_latents(rng: np.random.Generator, n: int, coef: Coefficients) -> Latents:
    """Draw category logits, preferences, price affinity and activity for ``n`` users."""
    z = rng.standard_normal((n, len(CATEGORIES)))
    logits = z / coef.tau
    theta = np.exp(logits - logits.max(axis=1, keepdims=True))
    theta /= theta.sum(axis=1, keepdims=True)
    return Latents(z, theta, rng.standard_normal(n), rng.standard_normal(n))


def make_catalogue(rng: np.random.Generator, m: int, coef: Coefficients) -> Catalogue:
    """Draw ``m`` items: category, price (lognormal by category), brand tier, rating, popularity."""
    category = rng.integers(0, len(CATEGORIES), m)
    resid = coef.price_sd_within * rng.standard_normal(m)
    log_price = np.asarray(BASE_LOG_PRICE)[category] + resid
    popularity = rng.standard_normal(m)
    tier = np.digitize(resid / coef.price_sd_within + 0.3 * rng.standard_normal(m), [-0.6, 0.6])
    rating = np.clip(3.6 + 0.35 * popularity + 0.3 * rng.standard_normal(m), 1.0, 5.0)
    table = pd.DataFrame(
        {
            "item_id": [f"item{j:05d}" for j in range(m)],
            "price": np.round(np.exp(log_price), 2),
            "rating": np.round(rating, 1),
            "category": np.asarray(CATEGORIES)[category],
            "brand_tier": np.asarray(["budget", "standard", "premium"])[tier],
        }
    )
    price_z = (log_price - log_price.mean()) / log_price.std()
    return Catalogue(table, category, price_z, popularity)


def utility(lat: Latents, cat: Catalogue, users: np.ndarray, coef: Coefficients) -> np.ndarray:
    """Return ``s(u, i)`` for the given union user rows, shape ``(len(users), m)``."""
    log_theta = np.log(lat.theta[users])[:, cat.category]
    gap = cat.price_z[None, :] - lat.price_affinity[users, None]
    score: np.ndarray = coef.a * log_theta - coef.b * gap**2 / 2 + coef.c * cat.popularity[None, :]
    return score


def _gumbel_top(rng: np.random.Generator, scores: np.ndarray, k: np.ndarray) -> list[np.ndarray]:
    """Per row, ``k[r]`` distinct columns sampled without replacement prop. to ``exp(scores)``."""
    order = np.argsort(-(scores + rng.gumbel(size=scores.shape)), axis=1)
    return [order[r, : k[r]] for r in range(len(k))]


def sample_interactions(
    rng: np.random.Generator, lat: Latents, cat: Catalogue, users: np.ndarray, coef: Coefficients
) -> pd.DataFrame:
    """Purchases (label 1) and clicks without purchase (label 0) of union rows ``users``.

    Columns: ``user`` (union row), ``item`` (catalogue row), ``timestamp``, ``purchased``; rows
    sorted by user then time. Times are i.i.d. uniform, so purchase order is random.
    """
    n_buy = np.clip(
        np.round(coef.n_mid * np.exp(coef.n_slope * lat.activity[users])), coef.n_min, 20
    )
    n_buy = np.minimum(n_buy.astype(int), len(cat.category))
    n_click = np.minimum(rng.poisson(coef.click_ratio * n_buy), len(cat.category) - n_buy)
    user_col, item_col, label_col = [], [], []
    for lo in range(0, len(users), _CHUNK):
        rows, k_buy = users[lo : lo + _CHUNK], n_buy[lo : lo + _CHUNK]
        s = utility(lat, cat, rows, coef)
        buy = _gumbel_top(rng, s / coef.T, k_buy)
        for r, items in enumerate(buy):
            s[r, items] = -np.inf  # clicks go to items not bought
        click = _gumbel_top(rng, s / coef.click_T, n_click[lo : lo + _CHUNK])
        for r, user in enumerate(rows):
            user_col.append(np.full(len(buy[r]) + len(click[r]), user))
            item_col.extend([buy[r], click[r]])
            label_col.extend([np.ones(len(buy[r]), int), np.zeros(len(click[r]), int)])
    user_arr = np.concatenate(user_col)
    log = pd.DataFrame(
        {
            "user": user_arr,
            "item": np.concatenate(item_col),
            "timestamp": START_EPOCH + rng.integers(0, WINDOW_SECONDS, len(user_arr)),
            "purchased": np.concatenate(label_col),
        }
    )
    return log.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)


def _shares(
    rng: np.random.Generator, theta: np.ndarray, draws: np.ndarray, mix: float
) -> np.ndarray:
    """Observed category shares: multinomial(draws, (1 - mix) theta + mix / C) / draws."""
    probs = (1 - mix) * theta + mix / theta.shape[1]
    counts = np.stack([rng.multinomial(n, p) for n, p in zip(draws, probs, strict=True)])
    shares: np.ndarray = counts / draws[:, None]
    return shares


def e_user_features(
    rng: np.random.Generator, lat: Latents, users: np.ndarray, coef: Coefficients
) -> pd.DataFrame:
    """E's behaviour table for union rows ``users`` (without the id column)."""
    act, n = lat.activity[users], len(users)
    sessions = rng.poisson(np.exp(1.6 + 0.6 * act))
    views = rng.poisson(4.0 * sessions * np.exp(0.2 * rng.standard_normal(n)))
    shares = _shares(rng, lat.theta[users], views + 20, coef.share_mix)
    tier_score = act + coef.leak * lat.price_affinity[users] + 0.8 * rng.standard_normal(n)
    device_logits = np.c_[0.8 * act, np.zeros(n), -0.4 * act] + rng.gumbel(size=(n, 3))
    table = {
        "sessions_30d": sessions,
        "views_30d": views,
        "carts_30d": rng.binomial(views, 0.08),
        "orders_90d": rng.poisson(np.exp(0.8 + 0.5 * act)),
        "days_since_last_visit": np.round(rng.exponential(np.exp(2.0 - 0.8 * act))).astype(int),
    }
    for c in E_CATEGORIES:
        table[f"browse_share_{CATEGORIES[c]}"] = np.round(shares[:, c], 4)
    table["device"] = np.asarray(["app", "web", "mobile_web"])[device_logits.argmax(axis=1)]
    table["membership_tier"] = np.asarray(["basic", "silver", "gold"])[
        np.digitize(tier_score, [0.0, 1.0])
    ]
    return pd.DataFrame(table)


def p_user_features(
    rng: np.random.Generator, lat: Latents, users: np.ndarray, coef: Coefficients
) -> pd.DataFrame:
    """P's payment table for union rows ``users`` (without the id column)."""
    act, pi, n = lat.activity[users], lat.price_affinity[users], len(users)
    noise = rng.standard_normal((n, 4))
    txn = rng.poisson(np.exp(2.3 + 0.4 * act))
    shares = _shares(rng, lat.theta[users], 3 * txn + 20, coef.share_mix)
    instalment = 1 / (1 + np.exp(-(-1.0 + 1.0 * pi + 0.4 * noise[:, 0])))
    card_score = 0.9 * pi + 0.6 * noise[:, 1]
    table = {
        "monthly_spend_level": np.round(6.0 + 0.5 * act + 0.6 * pi + 0.3 * noise[:, 2], 4),
        "txn_per_month": txn,
        "avg_ticket": np.round(np.exp(3.5 + 0.7 * pi + 0.25 * noise[:, 3]), 2),
        "instalment_rate": np.round(instalment, 4),
        "account_age_days": rng.integers(30, 3650, n),
    }
    for c in P_CATEGORIES:
        table[f"spend_share_{CATEGORIES[c]}"] = np.round(shares[:, c], 4)
    table["card_type"] = np.asarray(["debit", "credit", "premium_credit"])[
        np.digitize(card_score, [-0.3, 0.9])
    ]
    table["region"] = rng.choice(["north", "south", "east", "west", "central"], n)
    return pd.DataFrame(table)


def l_user_features(
    rng: np.random.Generator, lat: Latents, users: np.ndarray, coef: Coefficients
) -> pd.DataFrame:
    """L's delivery table for union rows ``users`` (without the id column)."""
    act, pi, n = lat.activity[users], lat.price_affinity[users], len(users)
    noise = rng.standard_normal((n, 3))
    deliveries = rng.poisson(np.exp(1.2 + 0.5 * act))
    shares = _shares(rng, lat.theta[users], 2 * deliveries + 20, coef.share_mix)
    express = 1 / (1 + np.exp(-(-1.2 + 0.7 * pi + 0.5 * noise[:, 0])))
    table = {
        "deliveries_per_month": deliveries,
        "express_rate": np.round(express, 4),
        "avg_parcel_value": np.round(np.exp(3.0 + 0.5 * pi + 0.35 * noise[:, 1]), 2),
        "returns_rate": np.round(rng.beta(2.0, 12.0, n), 4),
        "account_age_days": rng.integers(30, 3650, n),
    }
    for c in L_CATEGORIES:
        table[f"parcel_share_{CATEGORIES[c]}"] = np.round(shares[:, c], 4)
    table["delivery_slot"] = rng.choice(["morning", "afternoon", "evening"], n)
    table["locker_user"] = np.where(act + noise[:, 2] > 0.5, "yes", "no")
    return pd.DataFrame(table)


def l_user_id(u: int, width: int) -> str:
    """L's raw id of union user ``u``: E's id in upper case with a trailing space."""
    return f"{e_user_id(u, width).upper()} "


def assign_groups(rng: np.random.Generator, n: int, overlap: float) -> dict[str, np.ndarray]:
    """Split union rows into sorted index arrays ``shared``, ``e_only`` and ``p_only``.

    ``round(overlap * n)`` rows are shared; the rest is split evenly (E-only gets the odd one).
    """
    perm = rng.permutation(n)
    n_shared = round(overlap * n)
    n_e_only = (n - n_shared + 1) // 2
    shared = np.sort(perm[:n_shared])
    e_only = np.sort(perm[n_shared : n_shared + n_e_only])
    return {"shared": shared, "e_only": e_only, "p_only": np.sort(perm[n_shared + n_e_only :])}


def id_width(n_union: int) -> int:
    """Digits in a user number: at least 5, enough for ``n_union - 1``."""
    return max(5, len(str(n_union - 1)))


def e_user_id(u: int, width: int) -> str:
    """E's id of union user ``u``: ``user00042@example.com``."""
    return f"user{u:0{width}d}@example.com"


def p_user_id(u: int, width: int) -> str:
    """P's raw id of the same customer: upper case with surrounding spaces (normalisable)."""
    return f"  {e_user_id(u, width).upper()} "


def _candidate_scores(
    lat: Latents, cat: Catalogue, users: np.ndarray, cand: np.ndarray, coef: Coefficients
) -> dict[str, np.ndarray]:
    """True utility of candidate items under four knowledge sets (expected value given the set).

    Unknown logits are replaced by their prior mean 0 and an unknown ``pi`` by
    ``E[-(q - pi)^2 / 2] = -(q^2 + 1) / 2``; the user-constant log-sum-exp drops out of rankings.
    """
    logit = lat.z[users][np.arange(len(users))[:, None], cat.category[cand]] / coef.tau
    in_e = np.isin(cat.category[cand], E_CATEGORIES)
    q, pop = cat.price_z[cand], coef.c * cat.popularity[cand]
    price_known = -coef.b * (q - lat.price_affinity[users, None]) ** 2 / 2
    price_prior = -coef.b * (q**2 + 1) / 2
    return {
        "all": coef.a * logit + price_known + pop,
        "e_only": coef.a * np.where(in_e, logit, 0.0) + price_prior + pop,
        "p_only": coef.a * np.where(in_e, 0.0, logit) + price_known + pop,
        "popularity": pop,
    }


def oracle_ranking(
    rng: np.random.Generator, lat: Latents, cat: Catalogue, log: pd.DataFrame, coef: Coefficients
) -> OracleReport:
    """Rank each user's last purchase against up to 99 never-interacted items by true utility.

    HR@10 = share of users whose target beats all but at most 9 negatives; AUC = mean share of
    negatives ranked below the target. This bounds what any model with that knowledge can reach.
    """
    m = len(cat.category)
    n_neg = min(99, m - int(log.groupby("user").size().max()))
    seen = {u: set(g.tolist()) for u, g in log.groupby("user")["item"]}
    last = log[log["purchased"] == 1].groupby("user")["item"].last()
    users = last.index.to_numpy()
    cand = np.empty((len(users), n_neg + 1), dtype=int)
    for r, u in enumerate(users):
        unseen = np.setdiff1d(np.arange(m), np.fromiter(seen[u], int), assume_unique=True)
        cand[r] = np.r_[last[u], rng.choice(unseen, n_neg, replace=False)]
    hr10, auc = {}, {}
    for name, s in _candidate_scores(lat, cat, users, cand, coef).items():
        above = (s[:, 1:] > s[:, :1]).sum(axis=1)
        below = (s[:, 1:] < s[:, :1]).mean(axis=1)
        hr10[name] = float((above < 10).mean())
        auc[name] = float((below + (1 - below - above / n_neg) / 2).mean())
    return OracleReport(hr10=hr10, auc=auc)
