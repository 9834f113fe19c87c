"""Training loops and the models compared by ``vfl compare`` (E alone, split, centralised)."""
