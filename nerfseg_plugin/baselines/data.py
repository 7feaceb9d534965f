"""A scene as the 2D baselines see it: images, the supervision label maps (``semantic_path``) to train on, the
evaluation ground truth (``semantic_eval_path``) to score on, and the cameras and sparse points for the
view-consistency score. Scene checks are the dataparser's (``validate_scene``), so a scene that trains a 3D method
also runs the baselines, and evaluation ground truth can never reach training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.geometry import PinholeView
from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.core.scene_io import load_transforms, read_label_map, read_points
from nerfseg_plugin.data.scene_validation import FrameLabels, validate_scene

INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


@dataclass(frozen=True)
class LabeledView:
    """An image and a label map of the same size (class indices, ignore index where unlabeled)."""

    stem: str
    image: np.ndarray
    """``[H, W, 3]`` uint8 RGB."""
    labels: np.ndarray
    """``[H, W]`` uint8."""


@dataclass(frozen=True)
class BaselineScene:
    """A validated scene; ``frames``, ``views`` and ``stems`` follow transforms.json's frame order."""

    scene_dir: Path
    label_space: LabelSpace
    frames: list[FrameLabels]
    views: list[PinholeView]
    points: np.ndarray | None
    """Sparse points ``[N, 3]`` in the transforms.json frame (from ply_file_path), or None."""

    @property
    def stems(self) -> list[str]:
        return [frame.image_path.stem for frame in self.frames]


def read_image(path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB (alpha dropped, grey expanded)."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy (torch warns on read-only)
    except OSError as err:
        raise SceneFormatError(path, f"unreadable image: {err}") from None


def _view(meta: dict, frame: dict, transforms_path: Path, index: int) -> PinholeView:
    values = {key: frame.get(key, meta.get(key)) for key in INTRINSIC_KEYS}
    missing = [key for key, value in values.items() if value is None]
    if missing:
        raise SceneFormatError(transforms_path, f"frame {index} has no intrinsics {missing} (frame or file level)")
    return PinholeView(
        c2w=torch.tensor(frame["transform_matrix"], dtype=torch.float64)[:3, :4],
        fx=float(values["fl_x"]),
        fy=float(values["fl_y"]),
        cx=float(values["cx"]),
        cy=float(values["cy"]),
        width=int(values["w"]),
        height=int(values["h"]),
    )


def load_scene(data: Path) -> BaselineScene:
    """Read and validate transforms.json, classes.json, the label maps and the optional point cloud."""
    meta, scene_dir = load_transforms(data)
    transforms_path = data if data.suffix == ".json" else scene_dir / "transforms.json"
    label_space = LabelSpace.load(scene_dir / "classes.json")
    frames = validate_scene(meta, scene_dir, transforms_path, label_space)
    views = [_view(meta, frame, transforms_path, i) for i, frame in enumerate(meta["frames"])]
    ply = meta.get("ply_file_path")
    points = read_points(scene_dir / ply)[0] if ply else None
    return BaselineScene(scene_dir, label_space, frames, views, points)


def _labels(path: Path) -> np.ndarray:
    # read_label_map returns PIL's read-only buffer; torch warns on (and must not write to) those
    return read_label_map(path).copy()


def _labels_folder(folder: Path) -> Path:
    """``rsseg-export-labels`` writes DIR/labels/<stem>.png; accept DIR or DIR/labels."""
    if not folder.is_dir():
        raise SceneFormatError(folder, "extra-labels folder does not exist")
    return folder / "labels" if (folder / "labels").is_dir() else folder


def training_views(scene: BaselineScene, extra_labels: Path | None = None) -> list[LabeledView]:
    """The ``semantic_path`` views, plus (data augmentation) ``extra_labels/<stem>.png`` for every other frame
    that has one there. Real labels win where both exist."""
    views = [
        LabeledView(frame.image_path.stem, read_image(frame.image_path), _labels(frame.supervision_path))
        for frame in scene.frames
        if frame.supervision_path is not None
    ]
    if extra_labels is None:
        return views
    folder = _labels_folder(extra_labels)
    added = 0
    for frame in scene.frames:
        path = folder / f"{frame.image_path.stem}.png"
        if frame.supervision_path is not None or not path.is_file():
            continue
        image, labels = read_image(frame.image_path), _labels(path)
        if labels.shape != image.shape[:2]:
            raise SceneFormatError(path, f"label map is {labels.shape[::-1]} but its image is {image.shape[1::-1]}")
        bad = np.setdiff1d(np.unique(labels), [*range(scene.label_space.num_classes), scene.label_space.ignore_index])
        if bad.size:
            raise SceneFormatError(path, f"label values {bad[:10].tolist()} are not classes of {scene.scene_dir}")
        views.append(LabeledView(frame.image_path.stem, image, labels))
        added += 1
    if added == 0:
        raise SceneFormatError(folder, "no <image stem>.png label map matches an unlabeled frame of the scene")
    return views


def evaluation_views(scene: BaselineScene) -> list[tuple[int, LabeledView]]:
    """``(frame index, view)`` for every ``semantic_eval_path`` frame."""
    return [
        (i, LabeledView(frame.image_path.stem, read_image(frame.image_path), _labels(frame.evaluation_path)))
        for i, frame in enumerate(scene.frames)
        if frame.evaluation_path is not None
    ]
