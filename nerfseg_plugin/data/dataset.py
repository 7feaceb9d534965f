"""Dataset that adds per-pixel semantic labels (and optional pseudo-labels) to nerfstudio's image data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from PIL import Image

from nerfseg_plugin.core.keys import (
    NO_CORRECTION,
    PSEUDO_LABELS,
    PSEUDO_WEIGHTS,
    SEMANTIC_GT,
    SEMANTIC_LABELS,
    SEMANTICS_METADATA_KEY,
)
from nerfseg_plugin.core.pseudo_label_files import load_pseudo_label
from nerfseg_plugin.core.scene_io import read_label_map
from nerfseg_plugin.data.dataparser import SemanticFrames

LABEL_DTYPE = torch.uint8
"""Label maps are cached as 8-bit class indices (1 byte per pixel; ignore = 255)."""


def constant_map(value: float, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """An ``[H, W]`` map of one value that costs one element of memory (a zero-stride view, read-only): the
    label keys of frames without labels, so every item of a split has the same keys at almost no memory."""
    return torch.full((1, 1), value, dtype=dtype).expand(height, width)


def is_constant_map(tensor: torch.Tensor) -> bool:
    return tensor.ndim > 0 and tensor.numel() > 1 and all(stride == 0 for stride in tensor.stride())


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor.to(device)`` that keeps a constant map a zero-stride view (``.to`` would materialise it)."""
    if is_constant_map(tensor):
        return tensor[(0,) * tensor.ndim].reshape((1,) * tensor.ndim).to(device).expand(tensor.shape)
    return tensor.to(device)


def _resize_nearest(labels: np.ndarray, scale_factor: float) -> np.ndarray:
    if scale_factor == 1.0:
        return labels
    height, width = labels.shape
    size = (int(width * scale_factor), int(height * scale_factor))
    return np.asarray(Image.fromarray(labels).resize(size, resample=Image.Resampling.NEAREST))


class RssegDataset(InputDataset):
    """InputDataset whose items carry the semantic keys above; every frame of a split has them, so batches of
    labeled and unlabeled frames look alike (unlabeled = all ignore)."""

    def __init__(
        self, dataparser_outputs: DataparserOutputs, scale_factor: float = 1.0, pseudo_label_dir: Path | None = None
    ) -> None:
        super().__init__(dataparser_outputs, scale_factor)
        self.semantics: SemanticFrames = dataparser_outputs.metadata[SEMANTICS_METADATA_KEY]
        self.pseudo_label_dir = pseudo_label_dir
        self.corrections: dict[int, np.ndarray] = {}
        """Clicked corrections per frame index, ``[H, W]`` uint8 (NO_CORRECTION outside the corrected regions)."""

    def set_corrections(self, by_stem: dict[str, np.ndarray]) -> list[int]:
        """Replace the corrections (keyed by image stem, as the store keeps them); returns the frame indices whose
        supervision changed. Corrections of frames outside this split are left out."""
        index_of = {Path(name).stem: i for i, name in enumerate(self.image_filenames)}
        new = {index_of[stem]: labels for stem, labels in by_stem.items() if stem in index_of}
        changed = sorted(set(new) | set(self.corrections))
        self.corrections = new
        return changed

    @property
    def supervised_indices(self) -> list[int]:
        """Frames with labels: labeled views plus views that received corrections."""
        return sorted(set(self.semantics.labeled_indices) | set(self.corrections))

    @property
    def ignore_index(self) -> int:
        return self.semantics.label_space.ignore_index

    def _label_tensor(self, path: Path | None, height: int, width: int) -> torch.Tensor:
        if path is None:
            return constant_map(self.ignore_index, height, width, LABEL_DTYPE)
        return torch.from_numpy(_resize_nearest(read_label_map(path), self.scale_factor))

    def get_metadata(self, data: dict) -> dict:
        index = data["image_idx"]
        height, width = data["image"].shape[:2]
        supervision_path = self.semantics.supervision_paths[index]
        evaluation_path = self.semantics.evaluation_paths[index]
        metadata: dict[str, torch.Tensor] = {}
        if evaluation_path is not None:
            metadata[SEMANTIC_GT] = self._label_tensor(evaluation_path, height, width)
        labels = self._label_tensor(supervision_path, height, width)
        corrected = self._corrected_pixels(index, height, width)
        if corrected is not None:  # a user's correction overrides the label map and any pseudo-label there
            labels = torch.where(corrected != NO_CORRECTION, corrected, labels)
        metadata[SEMANTIC_LABELS] = labels
        pseudo = None
        if self.pseudo_label_dir is not None and supervision_path is None:
            pseudo = load_pseudo_label(self.pseudo_label_dir, self.image_filenames[index].stem, self.ignore_index)
        if pseudo is not None:
            pseudo_labels, pseudo_weights = (_resize_nearest(array, self.scale_factor) for array in pseudo)
            metadata[PSEUDO_LABELS] = torch.from_numpy(pseudo_labels.astype(np.uint8))
            metadata[PSEUDO_WEIGHTS] = torch.from_numpy(pseudo_weights)
        else:  # no pseudo-label: constant views, no memory
            metadata[PSEUDO_LABELS] = constant_map(self.ignore_index, height, width, LABEL_DTYPE)
            metadata[PSEUDO_WEIGHTS] = constant_map(0.0, height, width, torch.float32)
        if corrected is not None:
            metadata[PSEUDO_WEIGHTS] = torch.where(corrected != NO_CORRECTION, 0.0, metadata[PSEUDO_WEIGHTS])
        return metadata

    def _corrected_pixels(self, index: int, height: int, width: int) -> torch.Tensor | None:
        if index not in self.corrections:
            return None
        labels = self.corrections[index]
        if labels.shape != (height, width):  # made at another resolution (e.g. another camera scale factor)
            labels = np.asarray(Image.fromarray(labels).resize((width, height), resample=Image.Resampling.NEAREST))
        return torch.from_numpy(labels.astype(np.uint8))

    def has_pseudo_label(self, index: int) -> bool:
        if self.pseudo_label_dir is None or self.semantics.supervision_paths[index] is not None:
            return False
        return (self.pseudo_label_dir / f"{self.image_filenames[index].stem}.png").is_file()
