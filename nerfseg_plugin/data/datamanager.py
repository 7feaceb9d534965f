"""Datamanagers: full images for splatting (labeled : other views at a fixed ratio) and ray batches for NeRF."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.keys import SEMANTIC_BATCH_KEYS
from nerfseg_plugin.data.corrections import CorrectionStore, RegionConfig
from nerfseg_plugin.data.dataparser import RssegDataParserConfig
from nerfseg_plugin.data.dataset import RssegDataset, to_device
from nerfseg_plugin.data.pseudo_label_cache import resolve_pseudo_label_dir


def pseudo_label_folder(config: SemanticSupervisionConfig) -> Path | None:
    """The explicit folder if given, else the valid cached set that ``config.pseudo_labels`` selects; with
    ``generate_pseudo_labels``, that method's set, which the pipeline's setup step (``prepare_pseudo_labels``)
    generated before the datamanager was built."""
    if config.pseudo_label_dir is not None:
        return config.pseudo_label_dir
    if config.generate_pseudo_labels is not None:  # asking for a set to be generated means training with it
        return resolve_pseudo_label_dir(config.dataparser.data, config.generate_pseudo_labels)
    return resolve_pseudo_label_dir(config.dataparser.data, config.pseudo_labels)


def with_corrections(dataset: RssegDataset, enabled: bool) -> RssegDataset:
    """Merge the scene's stored click corrections (SCENE/corrections/) into the training dataset's labels."""
    if enabled:
        semantics = dataset.semantics
        store = CorrectionStore.for_scene(semantics.scene_dir, semantics.label_space.num_classes)
        changed = dataset.set_corrections(store.merged())
        if changed:
            CONSOLE.print(f"Using {len(store.corrections)} corrections of {len(changed)} views from {store.directory}")
    return dataset


def ratio_epoch(labeled: list[int], others: list[int], ratio: tuple[int, int], rng: random.Random) -> list[int]:
    """One pass over the non-labeled views, interleaved with labeled views at ``ratio`` (labeled : others).

    Paper 002 trains with labeled : pseudo-labeled views at 1:8 because the few labeled views would otherwise be
    drawn ~3% of the time. Each block of ``sum(ratio)`` draws takes ``ratio[0]`` labeled views (cycled) and
    ``ratio[1]`` other views (each other view once per epoch, in random order).
    """
    if not others:
        return rng.sample(labeled, len(labeled))
    labeled_count, other_count = ratio
    shuffled_others = rng.sample(others, len(others))
    labeled_cycle: list[int] = []
    epoch: list[int] = []
    for start in range(0, len(shuffled_others), other_count):
        block = shuffled_others[start : start + other_count]
        for _ in range(labeled_count):
            if not labeled_cycle:
                labeled_cycle = rng.sample(labeled, len(labeled))
            block.append(labeled_cycle.pop())
        rng.shuffle(block)
        epoch.extend(block)
    return epoch


@dataclass
class SemanticSupervisionConfig:
    """What both datamanagers supervise the semantic field with (listed first in their bases, so these fields win)."""

    dataparser: RssegDataParserConfig = field(default_factory=RssegDataParserConfig)
    """the scene parser"""
    pseudo_labels: str = "off"
    """Pseudo-labels to train with: "off" (the default), "auto" (a valid cached set under SCENE/pseudo_labels/,
    preferring sam2+vote, then sam2, then vote; none if there is none), or a method name (sam2 | vote | sam2+vote),
    whose set must be valid. Generate sets with rsseg-pseudo-labels. Off by default: the vote sets lowered mIoU
    (85.4 -> 76.9 on a 64-view orbit) and, with the 2D appearance model filling in where no labeled view looked,
    they are not yet shown to help (README: "Pseudo-labels")."""
    pseudo_label_dir: Path | None = None
    """An explicit pseudo-label folder; overrides pseudo_labels."""
    generate_pseudo_labels: Literal["vote", "sam2+vote"] | None = None
    """Before training, generate this pseudo-label set (default settings; sam2+vote with superpixel regions) unless
    a valid cache exists, and train with it. The SAM2 path needs a checkpoint: run rsseg-pseudo-labels for it."""
    corrections: bool = True
    """Train with the click corrections stored in SCENE/corrections/ (made in the viewer; see the README)."""
    correction_region: RegionConfig = field(default_factory=RegionConfig)
    """How a viewer click becomes a labeled region (flood fill, or SAM2 with a local checkpoint)."""


class SemanticSupervisionMixin:
    """The datasets of both datamanagers: training views with labels, pseudo-labels and corrections, evaluation
    views with their ground truth. Listed before the nerfstudio parent in the bases."""

    config: SemanticSupervisionConfig

    def semantic_train_dataset(self, outputs) -> RssegDataset:
        dataset = RssegDataset(outputs, self.config.camera_res_scale_factor, pseudo_label_folder(self.config))
        return with_corrections(dataset, self.config.corrections)

    def create_eval_dataset(self) -> RssegDataset:
        outputs = self.dataparser.get_dataparser_outputs(split=self.test_split)
        return RssegDataset(outputs, self.config.camera_res_scale_factor)


@dataclass
class RssegFullImageDatamanagerConfig(SemanticSupervisionConfig, FullImageDatamanagerConfig):
    """Full-image datamanager for semantic splatting."""

    _target: type = field(default_factory=lambda: RssegFullImageDatamanager)
    """target class to instantiate"""
    labeled_view_ratio: tuple[int, int] = (1, 8)
    """Training views drawn as labeled : other (pseudo-labeled or RGB-only) views, paper 002's 1:8."""
    cache_images: Literal["cpu", "gpu"] = "gpu"
    """Where cached images live. "gpu" means the model's device (the CPU on CPU-only machines); "cpu" pins host
    memory, which needs CUDA."""


class RssegFullImageDatamanager(SemanticSupervisionMixin, FullImageDatamanager[RssegDataset]):
    """FullImageDatamanager whose view order follows the labeled-view ratio and whose images carry labels."""

    config: RssegFullImageDatamanagerConfig

    def create_train_dataset(self) -> RssegDataset:
        return self.semantic_train_dataset(self.train_dataparser_outputs)

    def sample_train_cameras(self) -> list[int]:
        dataset = self.train_dataset
        if not hasattr(self, "_ratio_rng"):
            self._ratio_rng = random.Random(self.config.train_cameras_sampling_seed)
        labeled = dataset.supervised_indices
        others = [i for i in range(len(dataset)) if i not in set(labeled)]
        return ratio_epoch(labeled, others, self.config.labeled_view_ratio, self._ratio_rng)

    def _load_images(self, split, cache_images_device):
        dataset = self.train_dataset if split == "train" else self.eval_dataset
        distortion = dataset.cameras.distortion_params
        if distortion is not None and torch.any(distortion != 0):
            raise SceneFormatError(
                self.config.dataparser.data,
                "cameras have lens distortion; label maps cannot follow nerfstudio's image undistortion here. "
                "Undistort the scene first (rsseg-process-data writes undistorted PINHOLE scenes).",
            )
        if cache_images_device == "cpu" and not torch.cuda.is_available():
            # nerfstudio switches surveys of over 500 views to pinned host memory, which needs CUDA; without it the
            # model's device is the CPU anyway.
            cache_images_device = "gpu"
        cached = super()._load_images(split, cache_images_device)
        if cache_images_device == "gpu":  # the parent moves only image/mask/depth to the device
            for data in cached:
                for key in SEMANTIC_BATCH_KEYS:
                    if key in data:
                        data[key] = to_device(data[key], self.device)
        return cached

    @property
    def labeled_train_indices(self) -> list[int]:
        return self.train_dataset.supervised_indices

    def refresh_semantic_supervision(self, indices: list[int]) -> None:
        """Re-read the semantic keys of cached training views after their corrections changed, and draw those
        views next, so training uses a new correction right away."""
        for index in indices:
            cached = self.cached_train[index]
            fresh = self.train_dataset.get_metadata({"image_idx": index, "image": cached["image"]})
            for key in SEMANTIC_BATCH_KEYS:
                if key in fresh:
                    cached[key] = to_device(fresh[key], cached[key].device if key in cached else "cpu")
        self.train_unseen_cameras = [*indices, *(i for i in self.train_unseen_cameras if i not in indices)]


@dataclass
class RssegRayDatamanagerConfig(SemanticSupervisionConfig, VanillaDataManagerConfig):
    """Ray-batch datamanager for NeRF: every ray carries its pixel's semantic keys."""

    _target: type = field(default_factory=lambda: RssegRayDatamanager)
    """target class to instantiate"""


class RssegRayDatamanager(SemanticSupervisionMixin, VanillaDataManager[RssegDataset]):
    """VanillaDataManager over RssegDataset: nerfstudio's pixel sampler gathers the label keys per ray."""

    config: RssegRayDatamanagerConfig

    def create_train_dataset(self) -> RssegDataset:
        return self.semantic_train_dataset(self.dataparser.get_dataparser_outputs(split="train"))

    def refresh_semantic_supervision(self, indices: list[int]) -> None:
        """Re-read the semantic keys of the cached image batch after the corrections of ``indices`` changed."""
        batch = getattr(getattr(self, "train_image_dataloader", None), "cached_collated_batch", None)
        if batch is None:  # not cached (images are re-read from the dataset on each resample)
            return
        for row, index in enumerate(batch["image_idx"].tolist()):
            if index in indices:
                fresh = self.train_dataset.get_metadata({"image_idx": index, "image": batch["image"][row]})
                for key in SEMANTIC_BATCH_KEYS:
                    if key in fresh and key in batch:
                        batch[key][row] = fresh[key].to(batch[key].device)
