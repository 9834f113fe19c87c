"""vfl.protocol."""
