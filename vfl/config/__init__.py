"""Typed party and job configs read from TOML, with errors that name the file, key and fix."""
