"""A payment provider (passive): per-customer card-spend features, no labels, no catalogue.

Its table in the embedded data (:func:`vfl.data.synthetic.p_user_features`): offline
card-spend shares for categories 4-7 (sports, books, grocery, toys), spend level, transaction
rate, average ticket, instalment use (both driven by price affinity), account age, card type
and region. Numeric
features are z-scored on its own rows; the bottom model is an MLP over them and the
categorical embeddings with a tanh output, so every entry of ``b`` lies in ``(-1, 1)``.
"""

from __future__ import annotations

from vfl.config.job import ModelConfig
from vfl.config.party import Role
from vfl.data.loading import standardise
from vfl.kinds import BottomInputs, PartyKind, TableSchema
from vfl.models.bottom import PassiveBottom


def bottom(inputs: BottomInputs, model: ModelConfig) -> PassiveBottom:
    """``b = tanh(MLP([numeric, embeddings]))`` of width ``model.passive_out``."""
    users = inputs.users
    hidden, width = model.passive_hidden, model.passive_out
    return PassiveBottom(users.n_numeric, users.cardinalities, hidden, width)


KIND = PartyKind(
    name="payments",
    role=Role.PASSIVE,
    about="payment provider: card-spend shares, spend level, ticket, instalments, card, region",
    users=TableSchema(
        id_column="user_id",
        numeric=(
            "monthly_spend_level",
            "txn_per_month",
            "avg_ticket",
            "instalment_rate",
            "account_age_days",
            "spend_share_sports",
            "spend_share_books",
            "spend_share_grocery",
            "spend_share_toys",
        ),
        categorical=("card_type", "region"),
    ),
    numeric=standardise,
    bottom=bottom,
)
