"""The store layer: job records, dead letters, delivery counts, heartbeats and counters in Redis."""
