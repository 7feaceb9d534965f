"""Synthetic aerial scenes: procedural towns rendered from a drone's flight path with exact labels and depth."""

from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene

__all__ = ["SceneGenConfig", "generate_scene"]
