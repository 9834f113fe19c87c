"""vfl.party."""
