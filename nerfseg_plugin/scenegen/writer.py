"""Writing a scene folder in the project's format (nerfstudio ``transforms.json`` plus label maps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from nerfseg_plugin.core.geometry import Intrinsics
from nerfseg_plugin.scenegen.materials import SCENE_LABEL_SPACE

IMAGES_DIR, SEMANTICS_DIR, DEPTH_DIR = "images", "semantics", "depth"
TRANSFORMS_FILE, CLASSES_FILE, POINTS_FILE = "transforms.json", "classes.json", "sparse_pc.ply"
_OWN_ENTRIES = (IMAGES_DIR, SEMANTICS_DIR, DEPTH_DIR, TRANSFORMS_FILE, CLASSES_FILE, POINTS_FILE, "geotag_truth.json")


def check_output(folder: Path, overwrite: bool) -> None:
    """Refuse a path that is a file, or a non-empty folder unless ``overwrite``."""
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder} is not empty; pass --overwrite to replace the scene in it")


def prepare_output(folder: Path, overwrite: bool, with_depth: bool) -> None:
    """Create the scene's folders; with ``overwrite``, first remove what an earlier scene wrote there (only that)."""
    check_output(folder, overwrite)
    for name in _OWN_ENTRIES:
        entry = folder / name
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.exists():
            entry.unlink()
    for sub in (IMAGES_DIR, SEMANTICS_DIR) + ((DEPTH_DIR,) if with_depth else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)


def frame_stem(index: int) -> str:
    return f"frame_{index:05d}"


def write_image(path: Path, rgb: np.ndarray, jpeg_quality: int, exif: bytes | None = None) -> None:
    """PNG or JPEG by suffix; ``exif`` (an EXIF block, e.g. geotags) goes into JPEGs."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if path.suffix == ".jpg":
        image.save(path, quality=jpeg_quality, subsampling=0, **({"exif": exif} if exif else {}))
    else:
        image.save(path)


def write_label_map(path: Path, labels: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8)).save(path)


def write_transforms(
    folder: Path, intrinsics: Intrinsics, poses: list[np.ndarray], image_suffix: str, labeled: set[int]
) -> None:
    """``transforms.json``: shared pinhole intrinsics, one frame per pose; ``labeled`` frames get ``semantic_path``."""
    frames = []
    for index, c2w in enumerate(poses):
        stem = frame_stem(index)
        frame = {"file_path": f"{IMAGES_DIR}/{stem}{image_suffix}", "transform_matrix": np.round(c2w, 8).tolist()}
        label_key = "semantic_path" if index in labeled else "semantic_eval_path"
        frame[label_key] = f"{SEMANTICS_DIR}/{stem}.png"
        frames.append(frame)
    meta = {
        "camera_model": "OPENCV",
        "fl_x": intrinsics.fx,
        "fl_y": intrinsics.fy,
        "cx": intrinsics.cx,
        "cy": intrinsics.cy,
        "w": intrinsics.width,
        "h": intrinsics.height,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "ply_file_path": POINTS_FILE,
        "frames": frames,
    }
    (folder / TRANSFORMS_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    SCENE_LABEL_SPACE.save(folder / CLASSES_FILE)


def class_pixel_shares(folder: Path) -> dict[str, float]:
    """Share of labelled pixels per class over all label maps of a scene written by this module."""
    counts = np.zeros(256, dtype=np.int64)
    for path in sorted((folder / SEMANTICS_DIR).glob("*.png")):
        counts += np.bincount(np.asarray(Image.open(path)).reshape(-1), minlength=256)
    valid = counts[: SCENE_LABEL_SPACE.num_classes].sum()
    return {name: float(counts[i]) / max(valid, 1) for i, name in enumerate(SCENE_LABEL_SPACE.names)}
