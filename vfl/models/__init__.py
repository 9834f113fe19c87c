"""vfl.models."""
