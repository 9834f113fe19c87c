"""One organisation's process: load its own data, run PSI, then its side of the training."""
