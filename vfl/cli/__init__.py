"""vfl.cli."""
