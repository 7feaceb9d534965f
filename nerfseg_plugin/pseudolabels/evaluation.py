"""Scoring a pseudo-label set against the scene's evaluation label maps (``semantic_eval_path``).

Evaluation maps are read here only to measure; nothing in the generation path reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.core.pseudo_label_files import pseudo_label_paths
from nerfseg_plugin.core.scene_io import load_transforms, read_label_map
from nerfseg_plugin.data.pseudo_label_cache import CLASSES_FILE
from nerfseg_plugin.data.scene_validation import collect_frame_labels
from nerfseg_plugin.semantics.metrics import ConfusionMatrix


@dataclass(frozen=True)
class PseudoLabelScore:
    """Coverage (labeled fraction of ground-truth pixels) and accuracy (of the labeled ones), overall and inside B."""

    views: int
    coverage: float
    accuracy: float
    miou: float
    boundary_fraction: float
    coverage_in_boundary: float
    accuracy_in_boundary: float

    def as_row(self, name: str) -> str:
        values = (self.coverage, self.accuracy, self.miou, self.boundary_fraction)
        values += (self.coverage_in_boundary, self.accuracy_in_boundary)
        return f"| {name} | {self.views} | " + " | ".join(f"{100 * v:.1f}" for v in values) + " |"

    @staticmethod
    def table_header() -> str:
        return (
            "| set | views | coverage % | accuracy % | mIoU % | B % of pixels | coverage in B % | accuracy in B % |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|"
        )


def score_pseudo_labels(data: Path, directory: Path) -> PseudoLabelScore:
    """Score every frame that has both an evaluation label map and a pseudo-label in ``directory``."""
    meta, scene_dir = load_transforms(data)
    transforms_path = data if data.suffix == ".json" else scene_dir / "transforms.json"
    label_space = LabelSpace.load(scene_dir / CLASSES_FILE)
    num_classes, ignore = label_space.num_classes, label_space.ignore_index
    confusion = ConfusionMatrix(num_classes, ignore)
    totals = np.zeros(6, dtype=np.int64)  # gt, labeled, correct, gt in B, labeled in B, correct in B
    views = 0
    for frame in collect_frame_labels(meta, scene_dir, transforms_path):
        labels_path, _, boundary_path = pseudo_label_paths(directory, frame.image_path.stem)
        if frame.evaluation_path is None or not labels_path.is_file():
            continue
        views += 1
        truth = read_label_map(frame.evaluation_path)
        labels = read_label_map(labels_path)
        boundary = read_label_map(boundary_path) > 0
        valid = truth != ignore
        labeled = valid & (labels != ignore)
        correct = labeled & (labels == truth)
        totals += [m.sum() for m in (valid, labeled, correct, valid & boundary, labeled & boundary, correct & boundary)]
        confusion.update(labels[labeled], truth[labeled])

    def ratio(a: int, b: int) -> float:
        return float(a / b) if b else float("nan")

    return PseudoLabelScore(
        views=views,
        coverage=ratio(totals[1], totals[0]),
        accuracy=ratio(totals[2], totals[1]),
        miou=confusion.compute().miou if totals[1] else float("nan"),
        boundary_fraction=ratio(totals[3], totals[0]),
        coverage_in_boundary=ratio(totals[4], totals[3]),
        accuracy_in_boundary=ratio(totals[5], totals[4]),
    )
