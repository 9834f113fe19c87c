"""Data layer: schemas, loading and validation, synthetic data, MovieLens, evaluation splits."""
