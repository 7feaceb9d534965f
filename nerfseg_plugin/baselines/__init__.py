"""2D baselines trained only on the labeled views: per-colour lookup and a small UNet (``rsseg-baseline``)."""
