"""vfl: vertical federated split learning for a two-organisation recommender."""

__version__ = "0.1.0"
