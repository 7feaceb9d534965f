"""``rsseg-process-data``: from raw aerial photos and a few label maps to a posed, undistorted rsseg scene.

pycolmap is imported inside functions only, so that importing this package (or anything nerfstudio loads) stays
cheap and works where pycolmap is missing.
"""
