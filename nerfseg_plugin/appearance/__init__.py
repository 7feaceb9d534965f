"""2D appearance model: per-view class predictions from image content, fused by the 3D semantic field."""
