"""Segment 5B arrival realisation: the pure core (no Dagster, I/O only in contracts, store, pipeline)."""
