"""Evaluation reports shared by the 3D methods and the 2D baselines (``rsseg-eval``)."""
