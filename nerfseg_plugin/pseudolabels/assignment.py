"""Paper 002, section III-C: instances of a labeled view take a class, are propagated through the capture, and the
propagated masks are merged into per-pixel pseudo-labels.

Merge (conflict) rule. Every propagated instance ``i`` gives each pixel it covers (mask probability ``p > 0.5``) the
evidence ``p * purity_i * temporal_decay ** |frame - labeled frame|`` for its class, where ``purity_i`` is the
fraction of the instance's labeled pixels that have its class. A class's evidence at a pixel is the largest any of
its instances gives (overlapping instances of one class do not add up). The pixel takes the class with the most
evidence; its confidence is that evidence minus the best evidence of any other class, so a pixel two instances of
different classes claim equally strongly gets confidence ~0 (and no pseudo-label below ``min_confidence``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from jaxtyping import Bool, Float, UInt8


@dataclass
class AssignmentConfig:
    """Instance -> class assignment and the merge of propagated instances."""

    min_labeled_fraction: float = 0.1
    """An instance needs at least this fraction of its pixels labeled in its labeled view to take a class."""
    min_purity: float = 0.5
    """An instance whose majority class holds less than this fraction of its labeled pixels is dropped."""
    min_area: int = 16
    """Instances smaller than this many pixels are dropped."""
    max_instances: int = 96
    """At most this many instances per labeled view (largest first): each costs one SAM2 propagation track."""
    temporal_decay: float = 0.97
    """Evidence factor per frame of distance from the labeled frame: tracking drifts with distance."""
    min_confidence: float = 0.3
    """Pixels whose confidence (evidence margin over the runner-up class) is below this get no pseudo-label."""


@dataclass(frozen=True)
class Instance:
    """A mask of a labeled view with the class its labeled pixels vote for."""

    mask: Bool[np.ndarray, "h w"]
    label: int
    purity: float
    frame: int


def assign_instance_classes(
    masks: Sequence[Bool[np.ndarray, "h w"]],
    labels: UInt8[np.ndarray, "h w"],
    num_classes: int,
    frame: int,
    config: AssignmentConfig,
) -> list[Instance]:
    """Each mask takes the class with the most labeled pixels inside it (pixels outside [0, num_classes) are
    unlabeled). Masks that are too small, too sparsely labeled or too mixed are dropped; the largest
    ``max_instances`` of the rest are kept, in order of decreasing area."""
    instances: list[tuple[int, Instance]] = []
    for mask in masks:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != labels.shape:
            raise ValueError(f"instance mask {mask.shape} and label map {labels.shape} differ in shape")
        area = int(mask.sum())
        if area < config.min_area:
            continue
        inside = labels[mask]
        inside = inside[inside < num_classes]
        if inside.size < config.min_labeled_fraction * area:
            continue
        counts = np.bincount(inside, minlength=num_classes)
        label = int(counts.argmax())
        purity = float(counts[label] / inside.size)
        if purity < config.min_purity:
            continue
        instances.append((area, Instance(mask=mask, label=label, purity=purity, frame=frame)))
    instances.sort(key=lambda pair: -pair[0])
    return [instance for _, instance in instances[: config.max_instances]]


class EvidenceMerge:
    """Per-pixel running (best class, best evidence, best evidence of any other class) for one frame: the merge
    rule of the module docstring in O(pixels) memory however many instances arrive."""

    def __init__(self, height: int, width: int) -> None:
        self.label = np.full((height, width), -1, dtype=np.int32)
        self.best = np.zeros((height, width), dtype=np.float32)
        self.runner_up = np.zeros((height, width), dtype=np.float32)

    def add(self, label: int, evidence: Float[np.ndarray, "h w"]) -> None:
        same = self.label == label
        # Same class as the leader: only its own evidence can rise.
        np.maximum(self.best, np.where(same, evidence, 0), out=self.best)
        overtakes = ~same & (evidence > self.best)
        # A new leader demotes the old one to runner-up (which was already the best of the other classes).
        others = np.where(same, self.runner_up, np.maximum(self.runner_up, evidence))
        self.runner_up = np.where(overtakes, self.best, others)
        self.best = np.where(overtakes, evidence, self.best)
        self.label = np.where(overtakes, label, self.label)

    def result(
        self, ignore_index: int, min_confidence: float
    ) -> tuple[UInt8[np.ndarray, "h w"], Float[np.ndarray, "h w"]]:
        confidence = np.clip(self.best - self.runner_up, 0.0, 1.0)
        keep = (self.label >= 0) & (confidence >= min_confidence)
        return np.where(keep, self.label, ignore_index).astype(np.uint8), np.where(keep, confidence, 0.0)


class MaskGenerator(Protocol):
    """Class-agnostic instance masks of one RGB image ``[H, W, 3]`` uint8 (SAM2's automatic mask generator)."""

    def __call__(self, image: UInt8[np.ndarray, "h w 3"]) -> list[Bool[np.ndarray, "h w"]]: ...


class MaskPropagator(Protocol):
    """Tracks masks given on frame ``start`` through ``frames`` (capture order) in both directions, yielding
    ``(frame index, per-mask probabilities [N, H, W])`` for every frame reached, ``start`` included."""

    def __call__(
        self, frames: Sequence[UInt8[np.ndarray, "h w 3"]], start: int, masks: Sequence[Bool[np.ndarray, "h w"]]
    ) -> Iterator[tuple[int, Float[np.ndarray, "n h w"]]]: ...


@dataclass(frozen=True)
class PropagationStats:
    """What the propagation did, for the log and the tests."""

    instances_per_labeled_view: dict[int, int]
    frames_reached: int


def propagate_labels(
    frames: Sequence[UInt8[np.ndarray, "h w 3"]],
    labeled: dict[int, UInt8[np.ndarray, "h w"]],
    num_classes: int,
    ignore_index: int,
    generator: MaskGenerator,
    propagator: MaskPropagator,
    config: AssignmentConfig,
    progress: Callable[[Sequence[int]], Sequence[int]] = lambda items: items,
) -> tuple[dict[int, tuple[UInt8[np.ndarray, "h w"], Float[np.ndarray, "h w"]]], PropagationStats]:
    """Pseudo-labels ``(labels, confidence)`` for every frame that is not labeled, from the instances of every
    labeled frame (frames are in capture order). ``progress`` wraps the loop over labeled frames."""
    merges: dict[int, EvidenceMerge] = {}
    counts: dict[int, int] = {}
    for start in progress(sorted(labeled)):
        instances = assign_instance_classes(generator(frames[start]), labeled[start], num_classes, start, config)
        counts[start] = len(instances)
        if not instances:
            continue
        for frame, probabilities in propagator(frames, start, [instance.mask for instance in instances]):
            if frame in labeled:
                continue
            merge = merges.setdefault(frame, EvidenceMerge(*probabilities.shape[1:]))
            decay = config.temporal_decay ** abs(frame - start)
            for instance, probability in zip(instances, probabilities, strict=True):
                evidence = np.where(probability > 0.5, probability * instance.purity * decay, 0.0)
                merge.add(instance.label, evidence.astype(np.float32))
    results = {
        frame: merges[frame].result(ignore_index, config.min_confidence)
        if frame in merges
        else (
            np.full(frames[frame].shape[:2], ignore_index, np.uint8),
            np.zeros(frames[frame].shape[:2], np.float32),
        )
        for frame in range(len(frames))
        if frame not in labeled
    }
    return results, PropagationStats(instances_per_labeled_view=counts, frames_reached=len(merges))
