"""Benchmarks that run jobrunner on a private Redis and real workers, reported as ratios."""
