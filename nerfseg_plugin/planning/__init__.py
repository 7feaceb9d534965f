"""Capture planning: which photos to label (rsseg-suggest-views)."""
