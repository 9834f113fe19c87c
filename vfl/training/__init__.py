"""vfl.training."""
