"""Evaluation: ranking and classification metrics shared by every model."""
