"""Checks a scene folder against the scene-format contract before any training starts.

Every problem raises :class:`SceneFormatError` naming the offending file, so a user can fix the scene instead of
reading a stack trace from deep inside a datamanager.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.core.scene_io import read_label_map


@dataclass(frozen=True)
class FrameLabels:
    """The label files a frame of transforms.json declares (paths absolute, or None)."""

    image_path: Path
    supervision_path: Path | None
    evaluation_path: Path | None


def _image_size(path: Path) -> tuple[int, int]:
    if not path.is_file():
        raise SceneFormatError(path, "image file is missing")
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as err:
        raise SceneFormatError(path, f"unreadable image: {err}") from None


def check_label_map(
    path: Path, image_path: Path, label_space: LabelSpace, image_size: tuple[int, int] | None = None
) -> None:
    """Size must match the image (``image_size`` when given, e.g. the upright size of an EXIF-rotated photo);
    values must be class indices or the ignore index."""
    labels = read_label_map(path)
    width, height = image_size or _image_size(image_path)
    if labels.shape != (height, width):
        stored = _image_size(image_path) if image_size is not None else (width, height)
        rotated = f" as displayed (stored {stored[0]}x{stored[1]}, rotated by its EXIF orientation)"
        raise SceneFormatError(
            path,
            f"label map is {labels.shape[1]}x{labels.shape[0]} but its image {image_path.name} is {width}x{height}"
            + (rotated if stored != (width, height) else ""),
        )
    values = np.unique(labels)
    bad = [int(v) for v in values if v >= label_space.num_classes and v != label_space.ignore_index]
    if bad:
        raise SceneFormatError(
            path,
            f"label values {bad[:10]} are not class indices: classes.json has {label_space.num_classes} classes "
            f"(0..{label_space.num_classes - 1}) and ignore_index {label_space.ignore_index}",
        )


def collect_frame_labels(meta: dict, scene_dir: Path, transforms_path: Path) -> list[FrameLabels]:
    """Per frame of transforms.json (file order): its image and label paths, with structural checks."""
    frames: list[FrameLabels] = []
    seen_images: dict[Path, int] = {}
    supervision_files: dict[Path, int] = {}
    evaluation_files: dict[Path, int] = {}
    for index, frame in enumerate(meta["frames"]):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise SceneFormatError(transforms_path, f"frame {index} needs 'file_path' and 'transform_matrix'")
        matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise SceneFormatError(transforms_path, f"frame {index} ('{frame['file_path']}'): bad transform_matrix")
        image_path = (scene_dir / frame["file_path"]).resolve()
        if image_path in seen_images:
            raise SceneFormatError(
                transforms_path, f"frames {seen_images[image_path]} and {index} both use image {frame['file_path']}"
            )
        seen_images[image_path] = index
        supervision = frame.get("semantic_path")
        evaluation = frame.get("semantic_eval_path")
        if supervision and evaluation:
            raise SceneFormatError(
                transforms_path,
                f"frame {index} ('{frame['file_path']}') has both semantic_path and semantic_eval_path: evaluation "
                "ground truth must never be used as supervision",
            )
        supervision_path = (scene_dir / supervision).resolve() if supervision else None
        evaluation_path = (scene_dir / evaluation).resolve() if evaluation else None
        if supervision_path is not None:
            supervision_files[supervision_path] = index
        if evaluation_path is not None:
            evaluation_files[evaluation_path] = index
        frames.append(FrameLabels(image_path, supervision_path, evaluation_path))
    shared = sorted(set(supervision_files) & set(evaluation_files))
    if shared:
        raise SceneFormatError(
            shared[0], "is used both as semantic_path (supervision) and as semantic_eval_path (evaluation)"
        )
    if not supervision_files:
        raise SceneFormatError(transforms_path, "no frame has a 'semantic_path': at least one labeled view is needed")
    return frames


def validate_scene(meta: dict, scene_dir: Path, transforms_path: Path, label_space: LabelSpace) -> list[FrameLabels]:
    """Run every check of the scene contract; returns the frames' label paths (transforms.json order)."""
    frames = collect_frame_labels(meta, scene_dir, transforms_path)
    for frame in frames:
        _image_size(frame.image_path)
        for label_path in (frame.supervision_path, frame.evaluation_path):
            if label_path is not None:
                check_label_map(label_path, frame.image_path, label_space)
    return frames
