"""Undistorting and downscaling photos and label maps with one pixel mapping per camera.

Photos are resampled bilinearly and label maps with nearest neighbour, through the same pycolmap undistortion,
so a label stays on the pixel that shows its surface. The scene then has PINHOLE intrinsics and no distortion,
which our full-image datamanager requires (nerfstudio's own undistortion cannot carry label maps along).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from nerfseg_plugin.core.geometry import Intrinsics


def max_distortion_px(camera: Any) -> float:
    """Largest shift (pixels) that the camera's distortion causes along the image border."""
    if camera.model_name in ("SIMPLE_PINHOLE", "PINHOLE"):
        return 0.0
    w, h = camera.width, camera.height
    steps = np.linspace(0.0, 1.0, 33)
    border = np.concatenate(
        [
            np.stack([steps * w, np.zeros_like(steps)], -1),
            np.stack([steps * w, np.full_like(steps, h)], -1),
            np.stack([np.zeros_like(steps), steps * h], -1),
            np.stack([np.full_like(steps, w), steps * h], -1),
        ]
    )
    normalized = camera.cam_from_img(border)  # distortion removed
    focal = np.array([camera.focal_length_x, camera.focal_length_y])
    center = np.array([camera.principal_point_x, camera.principal_point_y])
    shift = np.linalg.norm(normalized * focal + center - border, axis=-1)
    return float(shift.max()) if np.isfinite(shift).all() else float("inf")  # not invertible: far from pinhole


class FrameResampler:
    """Maps one camera's photos and label maps to the written (undistorted, downscaled) images."""

    def __init__(
        self,
        camera: Any,
        downscale: int,
        distortion_tolerance_px: float,
        ignore_index: int,
        max_image_size: int | None = None,
    ) -> None:
        import pycolmap

        self.camera = camera
        self.downscale = downscale
        self.ignore_index = ignore_index
        self.undistort = max_distortion_px(camera) > distortion_tolerance_px
        self.options = pycolmap.UndistortCameraOptions()
        pinhole = pycolmap.undistort_camera(self.options, camera) if self.undistort else camera
        if max_image_size is not None and max(pinhole.width, pinhole.height) > max_image_size:
            # Any factor, aspect kept: intrinsics scale by each axis' own ratio of rounded sizes.
            factor = max_image_size / max(pinhole.width, pinhole.height)
            width, height = max(1, round(pinhole.width * factor)), max(1, round(pinhole.height * factor))
            self.crop = (0, 0, pinhole.width, pinhole.height)
        else:
            # Integer downscaling crops the remainder at the right and bottom: intrinsics scale by exactly 1/factor.
            width, height = pinhole.width // downscale, pinhole.height // downscale
            self.crop = (0, 0, width * downscale, height * downscale)
        scale_x, scale_y = width / self.crop[2], height / self.crop[3]
        self.resized = (width, height) != (pinhole.width, pinhole.height)
        self.intrinsics = Intrinsics(
            fx=pinhole.focal_length_x * scale_x,
            fy=pinhole.focal_length_y * scale_y,
            cx=pinhole.principal_point_x * scale_x,
            cy=pinhole.principal_point_y * scale_y,
            width=width,
            height=height,
        )

    @property
    def changes_pixels(self) -> bool:
        return self.undistort or self.resized

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """``[H, W, 3]`` uint8 photo -> written photo (bilinear undistortion, box-filtered downscale)."""
        if self.undistort:
            rgb = self._warp(rgb, nearest=False)
        if self.resized:
            size = (self.intrinsics.width, self.intrinsics.height)
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX, box=self.crop))
        return rgb

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """``[H, W]`` uint8 class indices -> written label map (nearest neighbour; ``ignore_index`` where the
        undistorted image sees beyond the photo)."""
        if self.undistort:
            inside = self._warp(np.ones_like(labels), nearest=True) == 1
            labels = np.where(inside, self._warp(labels, nearest=True), np.uint8(self.ignore_index))
        if self.resized:
            size = (self.intrinsics.width, self.intrinsics.height)
            labels = np.asarray(Image.fromarray(labels).resize(size, Image.Resampling.NEAREST, box=self.crop))
        return labels.astype(np.uint8)

    def _warp(self, array: np.ndarray, nearest: bool) -> np.ndarray:
        import pycolmap

        interpolation = pycolmap.WarpImageOptions.Interpolation
        self.options.warp_options.interpolation = interpolation.NEAREST_NEIGHBOR if nearest else interpolation.BILINEAR
        bitmap, _ = pycolmap.undistort_image(
            self.options, pycolmap.Bitmap.from_array(np.ascontiguousarray(array)), self.camera
        )
        return bitmap.to_array()
