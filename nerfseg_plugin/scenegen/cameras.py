"""Pinhole drone cameras along a flight path, as camera-to-world matrices in nerfstudio's OpenGL convention.

A camera looks along its -z axis with +y up in the image; pixel (row i, column j) has its centre at
``(j + 0.5, i + 0.5)`` like nerfstudio's ray generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

FlightPattern = Literal["orbit", "lawnmower"]


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics (pixels)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, horizontal_fov_deg: float) -> Intrinsics:
        focal = 0.5 * width / np.tan(0.5 * np.radians(horizontal_fov_deg))
        return cls(float(focal), float(focal), width / 2.0, height / 2.0, width, height)


def look_at(position: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world 4x4 for a camera at ``position`` looking at ``target`` with world +z as up."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c, s = np.cos(roll), np.sin(roll)
    right, up = c * right + s * up, -s * right + c * up
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position
    return c2w


def flight_path(
    pattern: FlightPattern,
    num_views: int,
    extent: float,
    altitude: float,
    tilt_deg: float,
    jitter: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Camera-to-world matrices ordered along the flight.

    ``orbit`` circles the town, each camera tilted ``tilt_deg`` from nadir towards the centre; ``lawnmower`` flies
    back-and-forth strips with the cameras tilted forward along the strip.
    """
    tilt = np.radians(tilt_deg)
    poses = []
    if pattern == "orbit":
        radius = altitude * np.tan(tilt)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        for i in range(num_views):
            angle = phase + 2.0 * np.pi * i / num_views
            height = altitude * (1.0 + 0.04 * jitter * rng.standard_normal())
            r = radius * (1.0 + 0.04 * jitter * rng.standard_normal())
            position = np.array([r * np.cos(angle), r * np.sin(angle), height])
            target = np.append(rng.normal(0.0, 0.02 * extent * jitter, 2), 0.0)
            poses.append(look_at(position, target, roll=np.radians(1.0) * jitter * rng.standard_normal()))
        return poses
    if pattern == "lawnmower":
        strips = max(2, int(round(np.sqrt(num_views / 4.0))))
        per_strip = int(np.ceil(num_views / strips))
        reach = altitude * np.tan(tilt)  # ground distance from a camera to the point it looks at
        ys = np.linspace(-0.35 * extent, 0.35 * extent, strips)
        for k, y in enumerate(ys):
            direction = 1.0 if k % 2 == 0 else -1.0
            for x in np.linspace(-0.5 * extent, 0.5 * extent, per_strip)[:: int(direction)]:
                if len(poses) == num_views:
                    break
                height = altitude * (1.0 + 0.04 * jitter * rng.standard_normal())
                position = np.array([x - direction * reach, y, height])
                heading = np.radians(3.0) * jitter * rng.standard_normal()
                look = np.array([np.cos(heading), np.sin(heading)]) * direction * reach
                target = np.array([position[0] + look[0], position[1] + look[1], 0.0])
                poses.append(look_at(position, target, roll=np.radians(1.0) * jitter * rng.standard_normal()))
        return poses
    raise ValueError(f"unknown flight pattern {pattern!r} (choose 'orbit' or 'lawnmower')")


def camera_rays(
    c2w: np.ndarray,
    intrinsics: Intrinsics,
    offsets: tuple[float, float] = (0.5, 0.5),
    pixels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World ray origins, unit directions and camera-axis cosines (for z-depth), row-major over the image.

    ``offsets`` is the sample position inside each pixel ((0.5, 0.5) is its centre); ``pixels`` optionally
    restricts the rays to these flat (row-major) pixel indices.
    """
    if pixels is None:
        pixels = np.arange(intrinsics.width * intrinsics.height)
    rows, cols = np.divmod(pixels, intrinsics.width)
    u = (cols + offsets[0] - intrinsics.cx) / intrinsics.fx
    v = -(rows + offsets[1] - intrinsics.cy) / intrinsics.fy
    camera_dirs = np.stack([u, v, -np.ones_like(u)], -1)
    norm = np.linalg.norm(camera_dirs, axis=-1, keepdims=True)
    directions = (camera_dirs / norm) @ c2w[:3, :3].T
    origins = np.broadcast_to(c2w[:3, 3], directions.shape)
    return origins, directions, (1.0 / norm[:, 0])
