"""World orientation for aerial captures.

nerfstudio's default ``orientation_method="up"`` aligns the mean *image-up* vector with +z. For cameras that look
down, image-up is nearly horizontal, so the whole scene ends up tilted by up to 90 degrees. Aerial flights have a
better cue: cameras are flown without roll, so their x axes are horizontal. The vertical is then the direction
most orthogonal to every camera x axis (nerfstudio's "vertical" idea), and its sign is fixed so that the cameras
look *down* on average (nerfstudio disambiguates with image-up, which is unreliable for nadir views).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from nerfstudio.cameras import camera_utils
from torch import Tensor


def aerial_up_direction(camera_to_worlds: Float[Tensor, "N 3 4"]) -> Float[Tensor, "3"]:
    """Estimate the world's up direction from roll-free, downward-looking cameras."""
    x_axes = camera_to_worlds[:, :3, 0]
    mean_view = -camera_to_worlds[:, :3, 2].mean(dim=0)
    _, singular_values, vh = torch.linalg.svd(x_axes, full_matrices=False)
    if len(x_axes) >= 3 and singular_values[1] > 0.17 * math.sqrt(len(x_axes)):
        up = vh[2]
    else:
        # All x axes (nearly) parallel, e.g. a single straight strip: only the plane orthogonal to them is known;
        # within it, take the direction opposite to the mean viewing direction.
        up = -(mean_view - vh[0] * torch.dot(mean_view, vh[0]))
        if torch.linalg.norm(up) < 1e-6:
            up = camera_to_worlds[:, :3, 1].mean(dim=0)
    up = up / torch.linalg.norm(up)
    if torch.dot(up, mean_view) > 0:  # cameras must look down (against up) on average
        up = -up
    return up


def aerial_orient_and_center(camera_to_worlds: Float[Tensor, "N 3 4"], center_method: str) -> Float[Tensor, "3 4"]:
    """Transform (rotation + translation) that puts up on +z and the scene centre at the origin."""
    rotation = camera_utils.rotation_matrix_between(aerial_up_direction(camera_to_worlds), torch.tensor([0.0, 0, 1]))
    origins = camera_to_worlds[:, :3, 3]
    if center_method == "poses":
        center = origins.mean(dim=0)
    elif center_method == "focus":
        homogeneous = torch.cat([camera_to_worlds, torch.tensor([[[0.0, 0, 0, 1]]]).expand(len(origins), 1, 4)], 1)
        center = camera_utils.focus_of_attention(homogeneous, origins.mean(dim=0))
    elif center_method == "none":
        center = torch.zeros(3)
    else:
        raise ValueError(f"unknown center_method {center_method!r}")
    return torch.cat([rotation, -rotation @ center[:, None]], dim=1)
