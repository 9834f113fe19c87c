"""vfl.coordinator."""
