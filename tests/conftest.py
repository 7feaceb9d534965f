"""Shared fixtures: a minimal hand-built scene (for parser/bad-input tests) and a tiny generated scene."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CLASSES = [
    {"name": "road", "color": [128, 64, 128]},
    {"name": "building", "color": [70, 70, 70]},
    {"name": "vegetation", "color": [107, 142, 35]},
]


def look_down_pose(angle: float, radius: float = 4.0, height: float = 5.0) -> list[list[float]]:
    """Camera-to-world (OpenGL) on a circle, looking at the origin from above."""
    eye = np.array([radius * math.cos(angle), radius * math.sin(angle), height])
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, -forward, eye
    return pose.tolist()


def make_minimal_scene(
    root: Path,
    num_frames: int = 6,
    size: int = 24,
    labeled: tuple[int, ...] = (0, 3),
    evaluated: tuple[int, ...] = (1, 4),
) -> Path:
    """A valid scene: random images, 3-class label maps, frames on a circle looking down."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "semantics").mkdir()
    frames = []
    for i in range(num_frames):
        name = f"frame_{i:03d}"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        labels = rng.integers(0, 3, (size, size), dtype=np.uint8)
        labels[:2] = 255
        Image.fromarray(labels, mode="L").save(root / "semantics" / f"{name}.png")
        frame = {"file_path": f"images/{name}.png", "transform_matrix": look_down_pose(2 * math.pi * i / num_frames)}
        if i in labeled:
            frame["semantic_path"] = f"semantics/{name}.png"
        elif i in evaluated:
            frame["semantic_eval_path"] = f"semantics/{name}.png"
        frames.append(frame)
    focal = size * 0.8
    transforms = {
        "camera_model": "OPENCV",
        "fl_x": focal,
        "fl_y": focal,
        "cx": size / 2,
        "cy": size / 2,
        "w": size,
        "h": size,
        "frames": frames,
    }
    (root / "transforms.json").write_text(json.dumps(transforms, indent=2))
    (root / "classes.json").write_text(json.dumps({"ignore_index": 255, "classes": CLASSES}))
    return root


@pytest.fixture
def minimal_scene(tmp_path: Path) -> Path:
    return make_minimal_scene(tmp_path / "scene")


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated aerial scene (shared by the session: generated once)."""
    from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene

    output = tmp_path_factory.mktemp("tiny") / "scene"
    return generate_scene(
        SceneGenConfig(output=output, seed=3, num_views=12, width=64, height=64, num_labeled=2, show_progress=False)
    )


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
