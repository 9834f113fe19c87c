"""vfl.transport."""
