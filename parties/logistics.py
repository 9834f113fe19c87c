"""A logistics partner (passive): per-customer delivery features, no labels, no catalogue.

Its table in the embedded data (:func:`vfl.data.synthetic.l_user_features`, written by
``vfl data synthetic --parties 3``): parcel shares for categories 2-5 (home, beauty,
sports, books: what its parcels reveal), deliveries a month (activity), express-delivery rate
and declared parcel value (both driven by price affinity), returns rate, account age, and the
customer's delivery preference and locker use. Numeric features are z-scored on its own rows;
the bottom model is the payment provider's: an MLP over them and the categorical embeddings
with a tanh output, so every entry of ``b`` lies in ``(-1, 1)``.
"""

from __future__ import annotations

from parties.payments import bottom  # the same bottom model: an MLP with a tanh output
from vfl.config.party import Role
from vfl.data.loading import standardise
from vfl.kinds import PartyKind, TableSchema

KIND = PartyKind(
    name="logistics",
    role=Role.PASSIVE,
    about="logistics partner: parcel shares, deliveries, express rate, parcel value, returns",
    users=TableSchema(
        id_column="user_id",
        numeric=(
            "deliveries_per_month",
            "express_rate",
            "avg_parcel_value",
            "returns_rate",
            "account_age_days",
            "parcel_share_home",
            "parcel_share_beauty",
            "parcel_share_sports",
            "parcel_share_books",
        ),
        categorical=("delivery_slot", "locker_user"),
    ),
    numeric=standardise,
    bottom=bottom,
)
