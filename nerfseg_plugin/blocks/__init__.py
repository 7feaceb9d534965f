"""Partitioned training of large blocks on Ray, merged into one run (rsseg-train-blocks)."""
