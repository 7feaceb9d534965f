"""Pinhole drone cameras along a flight path, as camera-to-world matrices in nerfstudio's OpenGL convention.

A camera looks along its -z axis with +y up in the image; pixel (row i, column j) has its centre at
``(j + 0.5, i + 0.5)`` like nerfstudio's ray generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial.transform import Rotation

from nerfseg_plugin.core.geometry import Intrinsics

FlightPattern = Literal["orbit", "lawnmower", "grid"]

GRID_MIN_ALTITUDE_OVER_TALLEST = 1.5
"""A grid flies at least this many times as high as the town's tallest surface (and 5 m above it): lower, a
tower's roof fills the frame and the overlap at roof level, smaller than on the ground, collapses."""


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


@dataclass(frozen=True)
class GridPlan:
    """Survey lines of a nadir ``grid`` flight. Lines run along world x and are stacked along y; distances are in
    metres, overlaps are those of the image footprints on the ground plane (z = 0)."""

    num_lines: int
    views_per_line: int
    """Views on every line but the last, which holds the remainder (fewer when num_views is no such product)."""
    line_spacing: float
    """Across-track distance between neighbouring lines."""
    view_spacing: float
    """Along-track distance between neighbouring views of a line."""
    altitude: float
    forward_overlap: float
    """Overlap of consecutive views along a line."""
    side_overlap: float
    """Overlap of neighbouring lines."""

    @classmethod
    def for_town(
        cls, num_views: int, extent: float, intrinsics: Intrinsics, overlap: float, tallest: float = 0.0
    ) -> GridPlan:
        """Lines and views for ``num_views`` cameras whose footprints, overlapping by ``overlap``, span the
        ``extent`` square; the altitude follows (footprint = spacing / (1 - overlap)) unless that is below
        :data:`GRID_MIN_ALTITUDE_OVER_TALLEST` x ``tallest``, in which case the grid flies at that floor and the
        overlap grows."""
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        # Ground footprint per metre of altitude: image x (width) along the line, image y across it.
        along, across = intrinsics.width / intrinsics.fx, intrinsics.height / intrinsics.fy
        # Covering a square with both overlaps equal needs lines / views-per-line ~ along / across.
        lines = min(num_views, max(1, round(math.sqrt(num_views * along / across))))
        per_line = math.ceil(num_views / lines)
        lines = math.ceil(num_views / per_line)  # no empty last line
        across_footprint = extent / ((lines - 1) * (1.0 - overlap) + 1.0)
        line_spacing = across_footprint * (1.0 - overlap)
        view_spacing = line_spacing * along / across
        altitude = max(across_footprint / across, GRID_MIN_ALTITUDE_OVER_TALLEST * tallest, tallest + 5.0)
        return cls(
            num_lines=lines,
            views_per_line=per_line,
            line_spacing=line_spacing,
            view_spacing=view_spacing,
            altitude=altitude,
            forward_overlap=1.0 - view_spacing / (altitude * along),
            side_overlap=1.0 - line_spacing / (altitude * across),
        )


def nadir_pose(position: np.ndarray, heading: float) -> np.ndarray:
    """Camera-to-world 4x4 of a camera looking straight down with its image x axis along ``heading`` (radians
    from world +x, counter-clockwise)."""
    right = np.array([np.cos(heading), np.sin(heading), 0.0])
    back = np.array([0.0, 0.0, 1.0])  # the camera looks along -z, i.e. down
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(back, right), back, position
    return c2w


def grid_path(num_views: int, plan: GridPlan, jitter: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Serpentine nadir lines: even lines fly towards +x, odd ones back towards -x (image x axis along the flight,
    so alternate lines are rotated 180 degrees). ``jitter`` scales GNSS-like position noise (5% of the view
    spacing, 1% of the altitude, clipped at 3 sigma) and attitude noise (1 degree roll and pitch, 2 degrees yaw)."""
    poses = []
    for index in range(num_views):
        line, slot = divmod(index, plan.views_per_line)
        direction = 1.0 if line % 2 == 0 else -1.0
        x = direction * (slot - (plan.views_per_line - 1) / 2.0) * plan.view_spacing
        y = (line - (plan.num_lines - 1) / 2.0) * plan.line_spacing
        noise = np.clip(rng.standard_normal(3), -3.0, 3.0) * jitter
        position = np.array(
            [x + 0.05 * plan.view_spacing * noise[0], y + 0.05 * plan.view_spacing * noise[1], plan.altitude]
        )
        position[2] *= 1.0 + 0.01 * noise[2]
        c2w = nadir_pose(position, 0.0 if direction > 0 else np.pi)
        # Attitude noise in the camera frame: about x (along the flight: roll), y (pitch) and the optical axis (yaw).
        attitude = np.radians([1.0, 1.0, 2.0]) * jitter * rng.standard_normal(3)
        c2w[:3, :3] = c2w[:3, :3] @ Rotation.from_rotvec(attitude).as_matrix()
        poses.append(c2w)
    return poses


def flight_path(
    pattern: FlightPattern,
    num_views: int,
    extent: float,
    altitude: float,
    tilt_deg: float,
    jitter: float,
    rng: np.random.Generator,
    intrinsics: Intrinsics | None = None,
    overlap: float = 0.7,
    tallest: float = 0.0,
) -> list[np.ndarray]:
    """Camera-to-world matrices ordered along the flight.

    ``orbit`` circles the town, each camera tilted ``tilt_deg`` from nadir towards the centre; ``lawnmower`` flies
    back-and-forth strips with the cameras tilted forward along the strip; ``grid`` flies serpentine nadir survey
    lines (:class:`GridPlan`: ``altitude`` and ``tilt_deg`` are ignored, the altitude follows from ``overlap``, the
    ``intrinsics`` and the height of the ``tallest`` surface).
    """
    if pattern == "grid":
        if intrinsics is None:
            raise ValueError("the grid flight needs the camera intrinsics to size its footprints")
        return grid_path(num_views, GridPlan.for_town(num_views, extent, intrinsics, overlap, tallest), jitter, rng)
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
    raise ValueError(f"unknown flight pattern {pattern!r} (choose 'orbit', 'lawnmower' or 'grid')")


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
