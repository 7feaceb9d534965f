"""Simulated clicks and the interactive-segmentation metrics of paper 003 (mIoU after n clicks, NoC@t).

Each click goes to the interior of the largest connected error region (the maximum of its distance transform,
as the paper's iterative sampling does), with the ground-truth class there as the click's class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Int
from scipy import ndimage

from nerfseg_plugin.semantics.metrics import ConfusionMatrix

MAX_CLICKS = 20
CLICK_CHECKPOINTS = (1, 5, 10, 20)
NOC_THRESHOLDS = (0.85, 0.90)


@dataclass(frozen=True)
class Click:
    """A (simulated or user) click: pixel row/column and the class the user assigns there."""

    y: int
    x: int
    class_index: int


def next_click(
    prediction: Int[np.ndarray, "H W"], ground_truth: Int[np.ndarray, "H W"], ignore_index: int
) -> Click | None:
    """The interior point of the largest connected error region (None when the prediction has no error).

    The mask is padded with background first, so the image border counts as the region's boundary too: the click
    lands away from every edge of the error, as a user's would.
    """
    errors = (prediction != ground_truth) & (ground_truth != ignore_index)
    if not errors.any():
        return None
    components, count = ndimage.label(errors)
    sizes = ndimage.sum_labels(errors, components, index=np.arange(1, count + 1))
    largest = components == (int(np.argmax(sizes)) + 1)
    distance = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return Click(int(y), int(x), int(ground_truth[y, x]))


def paste_region(
    prediction: Int[np.ndarray, "H W"], region: Bool[np.ndarray, "H W"], class_index: int
) -> Int[np.ndarray, "H W"]:
    corrected = prediction.copy()
    corrected[region] = class_index
    return corrected


def view_miou(
    prediction: Int[np.ndarray, "H W"], ground_truth: Int[np.ndarray, "H W"], num_classes: int, ignore_index: int
) -> float:
    """Mean IoU of one view over the classes present in its ground truth (the project's metric code)."""
    return float(ConfusionMatrix(num_classes, ignore_index).update(prediction, ground_truth).compute().miou)


def number_of_clicks(ious: Sequence[float], threshold: float, max_clicks: int = MAX_CLICKS) -> int:
    """NoC@threshold: the fewest clicks after which the IoU reaches ``threshold`` (``ious[n]`` is the IoU after
    n clicks, ``ious[0]`` before any); ``max_clicks`` when it is never reached, as in the paper's NoC_20."""
    for clicks, iou in enumerate(ious[: max_clicks + 1]):
        if iou >= threshold:
            return clicks
    return max_clicks


RegionFn = Callable[[Click, np.ndarray], np.ndarray]
"""(click, current prediction) -> boolean region to label with the click's class."""


def simulate_overlay(
    prediction: Int[np.ndarray, "H W"],
    ground_truth: Int[np.ndarray, "H W"],
    region_fn: RegionFn,
    num_classes: int,
    ignore_index: int,
    max_clicks: int = MAX_CLICKS,
) -> tuple[list[float], list[Click]]:
    """Clicks on one view, each region pasted into the prediction; IoU before and after every click. Once the
    view is perfect the remaining entries repeat the last IoU (no error left to click on)."""
    current = prediction.copy()
    ious = [view_miou(current, ground_truth, num_classes, ignore_index)]
    clicks: list[Click] = []
    for _ in range(max_clicks):
        click = next_click(current, ground_truth, ignore_index)
        if click is not None:
            clicks.append(click)
            current = paste_region(current, region_fn(click, current), click.class_index)
        ious.append(view_miou(current, ground_truth, num_classes, ignore_index))
    return ious, clicks


def summarize(
    traces: dict[str, Sequence[float]],
    checkpoints: Sequence[int] = CLICK_CHECKPOINTS,
    thresholds: Sequence[float] = NOC_THRESHOLDS,
    max_clicks: int = MAX_CLICKS,
) -> dict:
    """Per-view IoU traces -> mean IoU after 0 and ``checkpoints`` clicks, mean NoC@t, and the share of views
    that never reach t within ``max_clicks`` (the paper's ">=20@t")."""
    if not traces:
        raise ValueError("no views to summarise")
    array = np.asarray([list(trace) for trace in traces.values()], dtype=np.float64)
    summary: dict = {"num_views": len(traces), "max_clicks": max_clicks}
    summary["miou_after_clicks"] = {str(n): float(np.nanmean(array[:, n])) for n in (0, *checkpoints)}
    for threshold in thresholds:
        key = f"{round(threshold * 100)}"
        nocs = [number_of_clicks(trace, threshold, max_clicks) for trace in array]
        summary[f"noc@{key}"] = float(np.mean(nocs))
        summary[f"failed@{key}"] = float(np.mean(array[:, max_clicks] < threshold))
    return summary


def markdown_table(summary: dict) -> str:
    """One-row markdown table of a summary (the benchmark prints and writes it)."""
    clicks = list(summary["miou_after_clicks"])
    thresholds = sorted(k.split("@")[1] for k in summary if k.startswith("noc@"))
    header = [f"mIoU@{n} clicks" for n in clicks] + [f"NoC@{t}" for t in thresholds]
    header += [f">={summary['max_clicks']}@{t}" for t in thresholds]
    row = [f"{100 * summary['miou_after_clicks'][n]:.1f}" for n in clicks]
    row += [f"{summary[f'noc@{t}']:.2f}" for t in thresholds] + [f"{summary[f'failed@{t}']:.2f}" for t in thresholds]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---:|" * len(header), "| " + " | ".join(row) + " |"])
