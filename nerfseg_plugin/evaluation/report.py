"""The evaluation report every method shares: metrics.json, a per-class table, a confusion-matrix figure and a
per-class bar chart, all from one :class:`~nerfseg_plugin.semantics.metrics.SegmentationMetrics`.

The 3D methods (``rsseg-eval``) and the 2D baselines (``rsseg-baseline``) write the same files with the same keys,
so the benchmark harness and a user comparing runs read one format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from nerfseg_plugin.core.atomic import write_text_atomic
from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.evaluation.consistency import ConsistencyResult, plot_consistency
from nerfseg_plugin.semantics.metrics import SegmentationMetrics

METRICS_FILE = "metrics.json"
TABLE_FILE = "per_class.md"
CONFUSION_FIGURE = "confusion_matrix.png"
PER_CLASS_FIGURE = "per_class.png"
CONSISTENCY_FIGURE = "view_consistency.png"


def timing_summary(seconds_per_view: Mapping[str, float]) -> dict:
    """Mean / median / max render (or inference) time per view, plus the per-view values."""
    values = np.asarray(list(seconds_per_view.values()), dtype=np.float64)
    if values.size == 0:
        return {"mean_s": None, "median_s": None, "max_s": None, "per_view_s": {}}
    return {
        "mean_s": float(values.mean()),
        "median_s": float(np.median(values)),
        "max_s": float(values.max()),
        "per_view_s": {name: float(t) for name, t in seconds_per_view.items()},
    }


def plot_confusion(metrics: SegmentationMetrics, class_names: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (each ground-truth row sums to 100%) with the percentages written in."""
    from matplotlib.figure import Figure

    confusion = metrics.confusion.astype(np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.where(rows > 0, 100.0 * confusion / rows, np.nan)
    size = 2.0 + 0.55 * len(class_names)
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(np.nan_to_num(normalised, nan=0.0), cmap="Blues", vmin=0, vmax=100)
    for (row, col), value in np.ndenumerate(normalised):
        if not math.isnan(value) and value >= 0.5:
            colour = "white" if value > 60 else "black"
            axes.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=7, color=colour)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, [name if metrics.class_present[i] else f"({name})" for i, name in enumerate(class_names)])
    axes.set_xlabel("predicted")
    axes.set_ylabel("ground truth (absent classes in parentheses)")
    axes.set_title(title or "Confusion matrix (% of each ground-truth class)")
    figure.colorbar(image, ax=axes, shrink=0.8, label="%")
    figure.savefig(path, dpi=110)


def plot_per_class(metrics: SegmentationMetrics, class_names: Sequence[str], path: Path, title: str = "") -> None:
    """Per-class IoU and accuracy bars; classes absent from the ground truth are left empty and marked n/a."""
    from matplotlib.figure import Figure

    positions = np.arange(len(class_names))
    iou = 100.0 * np.nan_to_num(metrics.per_class_iou, nan=0.0)
    accuracy = 100.0 * np.nan_to_num(metrics.per_class_accuracy, nan=0.0)
    figure = Figure(figsize=(2.0 + 0.7 * len(class_names), 4.2), layout="constrained")
    axes = figure.subplots()
    axes.bar(positions - 0.2, iou, width=0.4, label="IoU", color="tab:blue")
    axes.bar(positions + 0.2, accuracy, width=0.4, label="accuracy", color="tab:orange")
    for i, present in enumerate(metrics.class_present):
        if not present:
            axes.text(i, 2, "n/a", ha="center", fontsize=8, color="grey")
    axes.axhline(100.0 * metrics.miou, color="tab:blue", linestyle="--", linewidth=1, label="mIoU")
    axes.set_xticks(positions, class_names, rotation=45, ha="right")
    axes.set_ylim(0, 100)
    axes.set_ylabel("%")
    axes.legend(loc="upper right", fontsize=8)
    axes.set_title(
        title
        or f"mIoU {100 * metrics.miou:.2f}  total acc {100 * metrics.total_accuracy:.2f}  "
        f"avg acc {100 * metrics.average_accuracy:.2f}"
    )
    figure.savefig(path, dpi=110)


def write_report(
    output_dir: Path,
    metrics: SegmentationMetrics,
    label_space: LabelSpace,
    seconds_per_view: Mapping[str, float],
    consistency: ConsistencyResult | None = None,
    consistency_reference: ConsistencyResult | None = None,
    extra: Mapping[str, object] | None = None,
    title: str = "",
) -> dict:
    """Write metrics.json, per_class.md and the figures into ``output_dir``; returns the metrics.json content.

    ``seconds_per_view`` is the render (3D methods) or inference (baselines) time of each evaluated view;
    ``consistency_reference`` is the consistency score of the ground-truth label maps of the same views and points
    (stored under ``view_consistency.ground_truth``); ``extra`` adds run facts (method, config, training time, ...)
    at the top level of metrics.json.
    """
    if metrics.num_pixels == 0:
        raise ValueError("no evaluated pixel: the evaluation views carry no ground truth outside the ignore label")
    output_dir.mkdir(parents=True, exist_ok=True)
    names = label_space.names
    report: dict = dict(extra or {})
    report.update(metrics.to_dict(names))
    report["class_names"] = names
    report["num_views"] = len(seconds_per_view)
    report["render_time_per_view"] = timing_summary(seconds_per_view)
    report["view_consistency"] = None
    if consistency is not None:
        report["view_consistency"] = consistency.to_dict(names)
        if consistency_reference is not None:
            report["view_consistency"]["ground_truth"] = consistency_reference.to_dict(names)
    (output_dir / TABLE_FILE).write_text(metrics.per_class_table(names) + "\n", encoding="utf-8")
    plot_confusion(metrics, names, output_dir / CONFUSION_FIGURE, title)
    plot_per_class(metrics, names, output_dir / PER_CLASS_FIGURE, title)
    if consistency is not None and consistency.num_evaluated > 0:
        plot_consistency(consistency, names, output_dir / CONSISTENCY_FIGURE, consistency_reference)
    # Last and atomic: run_matrix --resume takes an existing metrics.json for a finished report.
    write_text_atomic(output_dir / METRICS_FILE, json.dumps(report, indent=2) + "\n")
    return report


def summary_line(report: Mapping) -> str:
    """One line for the console: the three headline scores (and the view consistency when measured)."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    line = (
        f"mIoU {pct(report['miou'])}  total acc {pct(report['total_accuracy'])}  "
        f"avg acc {pct(report['average_accuracy'])}"
    )
    consistency = report.get("view_consistency")
    if consistency:
        line += f"  view consistency {pct(consistency['consistent_share'])}"
        if consistency.get("ground_truth"):
            line += f" (ground truth {pct(consistency['ground_truth']['consistent_share'])})"
    return line
