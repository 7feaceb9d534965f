"""The shared camera model: undistorted pinhole views, projection and depth conventions.

Conventions: cameras are nerfstudio's (camera-to-world, OpenGL axes: x right, y up, looking down -z), depth maps hold
z-depth (distance along the viewing axis, ``inf`` where unknown) and pixel ``(row, col)`` has its centre at
``(u, v) = (col + 0.5, row + 0.5)``, as in nerfstudio's ray generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

DepthConvention = Literal["z", "ray"]


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (pixel-corner origin, COLMAP's and nerfstudio's convention)."""

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

    def to_json(self) -> dict:
        """transforms.json's intrinsics keys."""
        return {"fl_x": self.fx, "fl_y": self.fy, "cx": self.cx, "cy": self.cy, "w": self.width, "h": self.height}


@dataclass(frozen=True)
class PinholeView(Intrinsics):
    """One undistorted pinhole camera: intrinsics plus its camera-to-world pose."""

    c2w: Float[Tensor, "3 4"]

    @property
    def origin(self) -> Float[Tensor, "3"]:
        return self.c2w[:, 3]


def views_from_cameras(cameras: Cameras) -> list[PinholeView]:
    """Per-camera pinhole views (callers reject lens distortion beforehand)."""
    c2w = cameras.camera_to_worlds.float()
    return [
        PinholeView(
            c2w=c2w[i],
            fx=float(cameras.fx[i]),
            fy=float(cameras.fy[i]),
            cx=float(cameras.cx[i]),
            cy=float(cameras.cy[i]),
            width=int(cameras.width[i]),
            height=int(cameras.height[i]),
        )
        for i in range(len(cameras))
    ]


def pixel_centres(view: PinholeView, device: torch.device | None = None) -> Float[Tensor, "hw 2"]:
    """``(u, v)`` of every pixel centre, row-major."""
    rows, cols = torch.meshgrid(
        torch.arange(view.height, device=device), torch.arange(view.width, device=device), indexing="ij"
    )
    return torch.stack([cols.reshape(-1) + 0.5, rows.reshape(-1) + 0.5], -1).float()


def backproject(view: PinholeView, depth: Float[Tensor, "h w"]) -> Float[Tensor, "hw 3"]:
    """World points of every pixel at its z-depth (non-finite where the depth is unknown)."""
    uv = pixel_centres(view, depth.device)
    z = depth.reshape(-1)
    camera = torch.stack([(uv[:, 0] - view.cx) / view.fx * z, -(uv[:, 1] - view.cy) / view.fy * z, -z], -1)
    c2w = view.c2w.to(depth.device)
    return camera @ c2w[:, :3].T + c2w[:, 3]


def project(view: PinholeView, points: Float[Tensor, "n 3"]) -> tuple[Float[Tensor, "n 2"], Float[Tensor, " n"]]:
    """Pixel coordinates ``(u, v)`` and z-depth of world points (z <= 0: behind the camera)."""
    c2w = view.c2w.to(points.device)
    camera = (points - c2w[:, 3]) @ torch.linalg.inv(c2w[:, :3]).T
    z = -camera[:, 2]
    safe_z = torch.where(z.abs() > 1e-9, z, torch.full_like(z, 1e-9))
    uv = torch.stack([view.cx + view.fx * camera[:, 0] / safe_z, view.cy - view.fy * camera[:, 1] / safe_z], -1)
    return uv, z


def inside_image(view: PinholeView, uv: Float[Tensor, "n 2"], z: Float[Tensor, " n"]) -> Bool[Tensor, " n"]:
    return (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < view.width) & (uv[:, 1] >= 0) & (uv[:, 1] < view.height)


def sample_nearest(image: Float[Tensor, "h w"], uv: Float[Tensor, "n 2"]) -> Float[Tensor, " n"]:
    """Value of the pixel containing each ``uv`` (callers mask coordinates outside the image)."""
    height, width = image.shape
    cols = uv[:, 0].floor().long().clamp(0, width - 1)
    rows = uv[:, 1].floor().long().clamp(0, height - 1)
    return image[rows, cols]


def visible_in(
    view: PinholeView,
    depth: Float[Tensor, "h w"],
    points: Float[Tensor, "n 3"],
    candidates: Bool[Tensor, " n"],
    depth_tolerance: float,
) -> tuple[Int[Tensor, " m"], Float[Tensor, "m 2"]]:
    """Depth-tested visibility: which of the ``candidates`` points ``view`` sees (inside the image, in front, and
    within ``depth_tolerance`` (a fraction) of the view's z-depth map at the projected pixel). Returns the indices
    of the visible points and their pixel coordinates in ``view``."""
    safe_points = torch.where(candidates[:, None], points, torch.zeros_like(points))
    uv, z = project(view, safe_points)
    index = (candidates & inside_image(view, uv, z)).nonzero().squeeze(-1)
    uv, z = uv[index], z[index]
    surface = sample_nearest(depth.to(points.device), uv)
    visible = torch.isfinite(surface) & ((z - surface).abs() <= depth_tolerance * surface)
    return index[visible], uv[visible]


def view_from_cameras(cameras: Cameras, index: int = 0) -> PinholeView:
    """The ``index``-th camera of a nerfstudio ``Cameras`` batch as the shared pinhole model."""
    return views_from_cameras(cameras[index : index + 1].to("cpu"))[0]


def project_points(points: np.ndarray, view: PinholeView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy :func:`project`: pixel ``u``, ``v`` (continuous, column/row) and z-depth of ``[N, 3]`` points."""
    uv, z = project(view, torch.as_tensor(np.asarray(points), dtype=view.c2w.dtype))
    return uv[:, 0].double().numpy(), uv[:, 1].double().numpy(), z.double().numpy()


def ray_distance_to_z(depth: Float[Tensor, "h w"] | np.ndarray, view: PinholeView) -> Float[Tensor, "h w"] | np.ndarray:
    """Distance along unit-length pixel rays (nerfstudio's ray-based renderers) to z-depth, in ``depth``'s dtype
    (a NumPy map is converted in float64 and returned as NumPy)."""
    if isinstance(depth, np.ndarray):
        return ray_distance_to_z(torch.from_numpy(np.asarray(depth, dtype=np.float64)), view).numpy()
    uv = pixel_centres(view, depth.device).to(depth.dtype)
    x, y = (uv[:, 0] - view.cx) / view.fx, (uv[:, 1] - view.cy) / view.fy
    return depth / torch.sqrt(1 + x**2 + y**2).view(view.height, view.width)


def depth_convention(model: torch.nn.Module) -> DepthConvention:
    """Splatting renders z-depth; nerfacto-style models render the distance along unit-length rays."""
    from nerfstudio.models.splatfacto import SplatfactoModel

    return "z" if isinstance(model, SplatfactoModel) else "ray"


def pixel_ray(camera: Cameras, x: float, y: float) -> tuple[Tensor, Tensor, Tensor]:
    """World origin, unit direction and camera forward axis through pixel coordinates (x, y) of one camera."""
    c2w = camera.camera_to_worlds[0].float().cpu()
    local = torch.tensor(
        [(x - float(camera.cx[0])) / float(camera.fx[0]), -(y - float(camera.cy[0])) / float(camera.fy[0]), -1.0]
    )
    direction = c2w[:, :3] @ local
    return c2w[:, 3], direction / direction.norm(), -c2w[:, 2]
