"""Data layer: schemas, loading and validation, synthetic generator, MovieLens, evaluation splits."""
