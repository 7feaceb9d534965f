"""Dataset-level segmentation metrics: mIoU, total (pixel) accuracy and average (per-class) accuracy.

Both papers report mIoU, "Total Acc" (pixel accuracy) and "Avg Acc" (class-average accuracy). They are computed
here from ONE confusion matrix accumulated over every evaluated pixel of every evaluated view, not as a mean of
per-image scores: a per-image mIoU over-weights small views and classes that happen to be tiny in one image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor


def _as_label_tensor(array: Tensor | np.ndarray, what: str) -> Int[Tensor, " n"]:
    tensor = torch.as_tensor(array)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{what} must be an integer label map, got dtype {tensor.dtype}")
    # int64 before any arithmetic: uint8 maps would overflow in gt * K + pred.
    return tensor.reshape(-1).long()


@dataclass(frozen=True)
class SegmentationMetrics:
    """Scores derived from one confusion matrix (rows: ground truth, columns: prediction).

    Means run over the classes present in the evaluated ground truth only: a class no evaluated pixel belongs to
    has no defined IoU or recall, and scoring it 0 (or 1) would make the mean depend on which classes a scene's
    label space happens to list. Predictions of an absent class still lower the IoU of the true class.
    """

    miou: float
    total_accuracy: float
    average_accuracy: float
    per_class_iou: np.ndarray  # [K] float64, NaN for classes absent from the ground truth
    per_class_accuracy: np.ndarray  # [K] float64 recall, NaN for classes absent from the ground truth
    class_present: np.ndarray  # [K] bool
    num_pixels: int
    confusion: np.ndarray  # [K, K] int64

    def to_dict(self, class_names: list[str] | tuple[str, ...]) -> dict:
        """JSON-safe summary (NaN becomes None, numpy scalars become Python numbers)."""
        if len(class_names) != len(self.class_present):
            raise ValueError(f"{len(class_names)} class names for {len(self.class_present)} classes")

        def num(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        gt_pixels = self.confusion.sum(axis=1)
        return {
            "miou": num(self.miou),
            "total_accuracy": num(self.total_accuracy),
            "average_accuracy": num(self.average_accuracy),
            "num_pixels": int(self.num_pixels),
            "per_class": {
                name: {
                    "iou": num(self.per_class_iou[i]),
                    "accuracy": num(self.per_class_accuracy[i]),
                    "present": bool(self.class_present[i]),
                    "gt_pixels": int(gt_pixels[i]),
                }
                for i, name in enumerate(class_names)
            },
            "confusion": self.confusion.tolist(),
        }

    def per_class_table(self, class_names: list[str] | tuple[str, ...]) -> str:
        """Markdown table of per-class IoU and accuracy in percent, with the means as the last row."""
        if len(class_names) != len(self.class_present):
            raise ValueError(f"{len(class_names)} class names for {len(self.class_present)} classes")

        def pct(value: float) -> str:
            return "n/a" if math.isnan(value) else f"{100.0 * value:.2f}"

        gt_pixels = self.confusion.sum(axis=1)
        lines = ["| class | IoU (%) | accuracy (%) | GT pixels |", "|---|---:|---:|---:|"]
        for i, name in enumerate(class_names):
            lines.append(
                f"| {name} | {pct(self.per_class_iou[i])} | {pct(self.per_class_accuracy[i])} | {int(gt_pixels[i])} |"
            )
        lines.append(f"| **mean** | {pct(self.miou)} | {pct(self.average_accuracy)} | {self.num_pixels} |")
        return "\n".join(lines)


class ConfusionMatrix:
    """Accumulates a ``[K, K]`` int64 confusion matrix (rows: ground truth, columns: prediction) over label maps."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def update(self, pred: Tensor | np.ndarray, gt: Tensor | np.ndarray) -> ConfusionMatrix:
        """Add one (or a batch of) label maps of equal shape; pixels whose ground truth is ``ignore_index`` are
        skipped. Ground truth or predictions outside ``[0, K)`` (other than an ignored pixel) raise ValueError:
        they mean a label map from another label space, which must not be scored silently."""
        if tuple(pred.shape) != tuple(gt.shape):
            raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
        pred_t = _as_label_tensor(pred, "pred")
        gt_t = _as_label_tensor(gt, "gt")
        pred_t = pred_t.to(gt_t.device)
        keep = gt_t != self.ignore_index
        gt_t, pred_t = gt_t[keep], pred_t[keep]
        k = self.num_classes
        bad_gt = (gt_t < 0) | (gt_t >= k)
        if bool(bad_gt.any()):
            values = torch.unique(gt_t[bad_gt]).tolist()
            raise ValueError(
                f"ground-truth labels {values} are outside [0, {k}) and are not ignore {self.ignore_index}"
            )
        bad_pred = (pred_t < 0) | (pred_t >= k)
        if bool(bad_pred.any()):
            values = torch.unique(pred_t[bad_pred]).tolist()
            raise ValueError(f"predicted labels {values} are outside [0, {k})")
        counts = torch.bincount(gt_t * k + pred_t, minlength=k * k).reshape(k, k)
        self.matrix += counts.cpu()
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix accumulated over the same label space (e.g. from another worker or scene split)."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge a confusion matrix over {other.num_classes} classes (ignore {other.ignore_index}) "
                f"into one over {self.num_classes} classes (ignore {self.ignore_index})"
            )
        self.matrix += other.matrix
        return self

    def reset(self) -> None:
        self.matrix.zero_()

    def compute(self) -> SegmentationMetrics:
        """mIoU / accuracies over everything accumulated so far. With no pixel at all every score is NaN."""
        conf = self.matrix.numpy().astype(np.int64, copy=True)
        true_positive = np.diag(conf).astype(np.float64)
        gt_count = conf.sum(axis=1).astype(np.float64)
        pred_count = conf.sum(axis=0).astype(np.float64)
        present = gt_count > 0
        num_pixels = int(conf.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(present, true_positive / (gt_count + pred_count - true_positive), np.nan)
            recall = np.where(present, true_positive / gt_count, np.nan)
        any_present = bool(present.any())
        return SegmentationMetrics(
            miou=float(iou[present].mean()) if any_present else math.nan,
            total_accuracy=float(true_positive.sum() / num_pixels) if num_pixels else math.nan,
            average_accuracy=float(recall[present].mean()) if any_present else math.nan,
            per_class_iou=iou,
            per_class_accuracy=recall,
            class_present=present,
            num_pixels=num_pixels,
            confusion=conf,
        )
