"""Settings of ``rsseg-process-data``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CameraModelName = Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "OPENCV"]
CAMERA_MODEL_NUM_PARAMS: dict[str, int] = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "OPENCV": 8}
"""Parameter count of each supported COLMAP camera model (focal lengths, principal point, distortion)."""


@dataclass
class ProcessDataConfig:
    """Pose a folder of aerial photos with pycolmap and write an undistorted rsseg scene with their label maps."""

    images: Path
    """Folder of RGB photos (jpg, png, tif, bmp; top level only). Each photo that registers becomes a frame."""
    labels: Path
    """Training labels (semantic_path): a folder of label maps matched to photos by file stem (IMG_0042.png labels
    IMG_0042.JPG; single-channel 8-bit PNGs of class indices, 255 = ignore), a folder of LabelMe JSON files, or a
    COCO / CVAT-for-COCO JSON export (polygons mapped to classes.json by class name)."""
    classes: Path
    """classes.json: {"ignore_index": 255, "classes": [{"name": ..., "color": [r, g, b]}, ...]}."""
    output: Path
    """Scene folder to write. Must be missing or empty unless --overwrite."""
    eval_labels: Path | None = None
    """Optional folder of evaluation label maps (semantic_eval_path), matched by stem like --labels.
    They never supervise training; a photo cannot have both kinds."""
    camera_model: CameraModelName = "SIMPLE_RADIAL"
    """Camera model for SfM; the written scene is undistorted PINHOLE whichever model is used.
    SIMPLE_RADIAL (one focal length, one radial term) suits drone cameras: rectilinear, mild barrel distortion.
    It stays well-constrained with tens of photos; OPENCV (radial + tangential) is for stronger distortion;
    SIMPLE_PINHOLE/PINHOLE are for photos that are already undistorted."""
    known_intrinsics: tuple[float, float, float, float] | None = None
    """Known fx fy cx cy in pixels of the original photos, kept fixed in bundle adjustment.
    Distortion, if the camera model has any, is still estimated. The SIMPLE_* models need fx == fy."""
    single_camera: bool = True
    """All photos come from one camera at one zoom (a typical survey) and share one set of intrinsics.
    Turn off for mixed cameras or sizes: photos are then grouped by size and EXIF."""
    matching: Literal["auto", "exhaustive", "sequential", "spatial"] = "auto"
    """Which photo pairs to match. exhaustive: every pair (robust, quadratic cost).
    sequential: each photo with its successors in EXIF capture-time order (file-name order when a photo has no
    capture time; video-like captures; no vocabulary tree).
    spatial: each photo with its nearest neighbours by EXIF GPS (surveys of any size).
    auto: spatial when every photo has GPS, else exhaustive up to --exhaustive-max-images photos, sequential beyond."""
    spatial_max_neighbors: int = 50
    """Spatial matching: how many GPS neighbours each photo is matched with."""
    exhaustive_max_images: int = 150
    """Largest photo count that --matching auto still matches exhaustively."""
    sequential_overlap: int = 20
    """Sequential matching: how many successors each photo is matched with (plus quadratic steps 2, 4, 8, ...)."""
    max_num_features: int = 8192
    """SIFT features kept per photo; fewer make matching faster but registration less reliable."""
    min_registered_share: float = 0.8
    """Fail unless at least this share of the photos registers in the reconstruction."""
    downscale: int = 1
    """Write images and label maps downscaled by this integer factor (labels with nearest neighbour)."""
    max_image_size: int | None = None
    """Write images and label maps with their longer side at most this many pixels (any factor, aspect kept,
    labels with nearest neighbour); overrides --downscale for photos larger than that."""
    sift_max_image_size: int = 2048
    """SIFT runs on photos shrunk to at most this longer side (bounds time and memory on 20 MP photos). 2048 rather
    than COLMAP's 3200: on Seneca's 10 MP originals SIFT's peak memory drops from 5.0 to 2.4 GB and its time by 2.3x
    with the same photos registered (ODM's default feature quality also halves such photos)."""
    georeference: Literal["auto", "off"] = "auto"
    """auto: when at least 3 registered photos carry EXIF GPS (or --gcp is given), write the scene in metres with z
    up in a projected CRS and record transforms.json "georeference". off: keep the arbitrary SfM frame."""
    crs: str | None = None
    """Projected CRS in metres for the georeferenced scene (e.g. EPSG:32614); default: the GPS's UTM zone."""
    gps_max_error_m: float = 10.0
    """A camera whose fitted centre lies further than this from its GPS position is an outlier of the fit."""
    gcp: Path | None = None
    """Ground control points (OpenDroneMap gcp_list.txt: a CRS line, then "x y z pixel_x pixel_y image [name]");
    they override the GPS for georeferencing."""
    distortion_tolerance_px: float = 0.1
    """Lens distortion that moves no pixel by more than this is dropped instead of resampling every photo."""
    use_gpu: Literal["auto", "on", "off"] = "auto"
    """SIFT extraction and matching on the GPU: auto uses it when pycolmap was built with CUDA."""
    num_threads: int = -1
    """CPU threads for pycolmap (-1: all cores)."""
    seed: int = 0
    """Random seed of pycolmap's RANSAC and mapper (multi-threaded runs can still differ slightly)."""
    overwrite: bool = False
    """Replace a scene already in --output (only the scene's own files and folders are removed)."""
    verbose: bool = False
    """Show pycolmap's own log."""

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        checks = [
            (
                0.0 < self.min_registered_share <= 1.0,
                f"min_registered_share must be in (0, 1], got {self.min_registered_share}",
            ),
            (self.downscale >= 1, f"downscale must be a positive integer, got {self.downscale}"),
            (
                self.max_image_size is None or self.max_image_size >= 16,
                f"max_image_size must be at least 16 pixels, got {self.max_image_size}",
            ),
            (
                self.sift_max_image_size >= 64,
                f"sift_max_image_size must be at least 64, got {self.sift_max_image_size}",
            ),
            (self.gps_max_error_m > 0, f"gps_max_error_m must be positive, got {self.gps_max_error_m}"),
            (self.spatial_max_neighbors >= 1, "spatial_max_neighbors must be at least 1"),
            (
                self.exhaustive_max_images >= 2,
                f"exhaustive_max_images must be at least 2, got {self.exhaustive_max_images}",
            ),
            (self.sequential_overlap >= 1, f"sequential_overlap must be at least 1, got {self.sequential_overlap}"),
            (self.max_num_features >= 64, f"max_num_features must be at least 64, got {self.max_num_features}"),
            (self.distortion_tolerance_px >= 0.0, "distortion_tolerance_px must be non-negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.known_intrinsics is not None:
            fx, fy, _, _ = self.known_intrinsics
            if fx <= 0 or fy <= 0:
                raise ValueError(f"known_intrinsics focal lengths must be positive, got fx={fx}, fy={fy}")
            if self.camera_model.startswith("SIMPLE_") and abs(fx - fy) > 1e-6 * max(fx, fy):
                raise ValueError(
                    f"{self.camera_model} has one focal length but known_intrinsics give fx={fx} != fy={fy}; "
                    "use --camera-model PINHOLE or OPENCV"
                )
