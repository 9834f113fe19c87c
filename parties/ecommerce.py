"""An e-commerce platform (active): customer behaviour, the catalogue and the labelled log.

Its tables in the embedded data (:mod:`vfl.data.synthetic`): per customer, activity counters
(sessions, views, carts, orders, recency), browsing shares for categories 0-3, device and
membership tier; per item, price, rating, category and brand tier; and the interaction log
(user, item, time, purchased). Numeric features are z-scored on its own rows. The bottom
model is a user tower and an item tower (optional id embedding plus a feature MLP) combined
as ``e = [u, v, u * v]``; the head adds E's history attention, ``W_E`` and the top model.
"""

from __future__ import annotations

from vfl.config.job import ModelConfig
from vfl.config.party import Role
from vfl.data.loading import standardise
from vfl.kinds import BottomInputs, PartyKind, TableSchema
from vfl.models.bottom import ActiveBottom, Tower


def bottom(inputs: BottomInputs, model: ModelConfig) -> ActiveBottom:
    """The two towers, each ``model.embedding_dim`` wide; a user id embedding if asked for."""
    users, items = inputs.users, inputs.items
    if items is None:
        raise ValueError("an e-commerce bottom model needs the item table")
    n_items = int(items.numeric.shape[0])
    user_ids = inputs.n_users if model.user_id_embedding else None
    width, hidden = model.embedding_dim, model.active_hidden
    return ActiveBottom(
        user_tower=Tower(user_ids, users.n_numeric, users.cardinalities, hidden, width),
        item_tower=Tower(n_items, items.n_numeric, items.cardinalities, hidden, width),
        dim=width,
    )


KIND = PartyKind(
    name="ecommerce",
    role=Role.ACTIVE,
    about="e-commerce platform: behaviour counters, browsing shares, catalogue, purchase log",
    users=TableSchema(
        id_column="user_id",
        numeric=(
            "sessions_30d",
            "views_30d",
            "carts_30d",
            "orders_90d",
            "days_since_last_visit",
            "browse_share_electronics",
            "browse_share_fashion",
            "browse_share_home",
            "browse_share_beauty",
        ),
        categorical=("device", "membership_tier"),
    ),
    items=TableSchema(
        id_column="item_id", numeric=("price", "rating"), categorical=("category", "brand_tier")
    ),
    numeric=standardise,
    bottom=bottom,
)
