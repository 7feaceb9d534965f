"""``rsseg-data``: nerfstudio's dataparser plus sparse semantic labels, label-space checks and aerial orientation.

Splits (the papers' protocol): ``val`` and ``test`` are exactly the frames with ``semantic_eval_path``. ``train``
is every frame in the ``transductive`` setting (every view's RGB trains the geometry; only ``semantic_path``
frames give labels), and the frames without ``semantic_eval_path`` in the ``holdout`` setting (true novel views).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.utils.rich_utils import CONSOLE

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.keys import SEMANTICS_METADATA_KEY
from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.core.scene_io import load_transforms, read_points
from nerfseg_plugin.data.georeference import GeoDataparserOutputs, SceneGeoreference, nerfstudio_applied_transform
from nerfseg_plugin.data.orientation import aerial_orient_and_center
from nerfseg_plugin.data.scene_validation import FrameLabels, validate_scene


@dataclass(frozen=True)
class SemanticFrames:
    """Semantic side of a split, stored in ``DataparserOutputs.metadata["semantics"]`` (aligned with its images).

    ``supervision_paths`` is filled only on the train split and ``evaluation_paths`` only on val/test, so a training
    dataset cannot read evaluation ground truth even by accident.
    """

    label_space: LabelSpace
    scene_dir: Path
    supervision_paths: list[Path | None]
    evaluation_paths: list[Path | None]

    @property
    def labeled_indices(self) -> list[int]:
        return [i for i, path in enumerate(self.supervision_paths) if path is not None]


@dataclass
class RssegDataParserConfig(NerfstudioDataParserConfig):
    """A nerfstudio scene with sparse label maps (see the README's scene format)."""

    _target: type = field(default_factory=lambda: RssegDataParser)
    """target class to instantiate"""
    orientation_method: Literal["aerial", "pca", "up", "vertical", "none"] = "aerial"
    """How to orient the world. "aerial" (default) puts the vertical of roll-free, downward-looking flights on +z
    (georeferenced scenes are z-up already and are only centred and scaled); nerfstudio's "up" tilts such captures
    badly. Whatever the method, a scene's georeference stays valid: the run's dataparser_transforms.json gets the
    composed model-to-CRS transform (nerfseg_plugin.data.georeference.model_to_crs)."""
    evaluation_setting: Literal["transductive", "holdout"] = "transductive"
    """transductive: all frames' RGB trains the geometry, semantic metrics on semantic_eval_path frames (the papers'
    setting). holdout: semantic_eval_path frames are removed from training entirely (true novel views)."""
    classes_file: Path = Path("classes.json")
    """Label space file, relative to the scene folder."""
    load_3D_points: bool = True
    """Load the scene's sparse point cloud (ply_file_path) to initialise Gaussians."""


@dataclass
class RssegDataParser(Nerfstudio):
    """Parses the scene through nerfstudio's own parser, then applies the semantic split and labels."""

    config: RssegDataParserConfig
    _frames: list[FrameLabels] | None = None
    _label_space: LabelSpace | None = None

    def _validated_scene(self) -> tuple[dict, Path, list[FrameLabels], LabelSpace]:
        meta, scene_dir = load_transforms(self.config.data)
        transforms_path = self.config.data if self.config.data.suffix == ".json" else scene_dir / "transforms.json"
        if self._frames is None or self._label_space is None:
            self._label_space = LabelSpace.load(scene_dir / self.config.classes_file)
            split_lists = [k for k in ("train_filenames", "val_filenames", "test_filenames") if k in meta]
            if split_lists and "train_filenames" not in split_lists:
                raise SceneFormatError(
                    transforms_path,
                    f"has {split_lists} but no train_filenames; rsseg-data takes val/test from semantic_eval_path, "
                    "so give train_filenames (the frames whose RGB trains) or remove the split lists",
                )
            self._frames = validate_scene(meta, scene_dir, transforms_path, self._label_space)
        return meta, scene_dir, self._frames, self._label_space

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        meta, scene_dir, frames, label_space = self._validated_scene()
        aerial = self.config.orientation_method == "aerial"
        # nerfstudio's parser does images, intrinsics, distortion, masks and the point cloud; we ask it for every
        # frame ("all") and, for aerial scenes, in the file's own frame, then select and transform here.
        parent_config = replace(self.config, eval_mode="all")
        if aerial:
            parent_config = replace(
                parent_config, orientation_method="none", center_method="none", auto_scale_poses=False, scale_factor=1.0
            )
        own_config, self.config = self.config, parent_config
        try:
            with _without_split_lists():
                outputs = super()._generate_dataparser_outputs("train")
        finally:
            self.config = own_config

        by_image = {frame.image_path: frame for frame in frames}
        parsed = [
            by_image[Path(name).resolve()] if Path(name).resolve() in by_image else None
            for name in outputs.image_filenames
        ]
        if any(frame is None for frame in parsed):  # downscaled copies (images_2/…): match by file name instead
            by_name = {frame.image_path.name: frame for frame in frames}
            parsed = [by_name[Path(name).name] for name in outputs.image_filenames]
        trained = _listed_frames(meta, scene_dir, parsed)
        keep = self._split_indices(split, parsed, trained)
        transforms_path = self.config.data if self.config.data.suffix == ".json" else scene_dir / "transforms.json"
        georeference = SceneGeoreference.from_meta(meta, transforms_path)
        if aerial:
            outputs = self._apply_aerial_transform(outputs, meta, keep_rotation=georeference is not None)
        if georeference is not None:
            values = {f.name: getattr(outputs, f.name) for f in fields(outputs) if f.init}
            applied = nerfstudio_applied_transform(meta, scene_dir)
            outputs = GeoDataparserOutputs(**values, georeference=georeference, applied_transform=applied)
        outputs = _select_frames(outputs, keep)
        selected = [parsed[i] for i in keep]
        is_train = split == "train"
        has_evaluation_frames = any(frame.evaluation_path is not None for frame in frames)
        outputs.metadata[SEMANTICS_METADATA_KEY] = SemanticFrames(
            label_space=label_space,
            scene_dir=scene_dir,
            supervision_paths=[f.supervision_path if is_train else None for f in selected],
            # Without evaluation frames, val/test fall back to the labeled views, scored on their own labels.
            evaluation_paths=[
                None if is_train else (f.evaluation_path if has_evaluation_frames else f.supervision_path)
                for f in selected
            ],
        )
        return outputs

    def _load_3D_points(self, ply_file_path: Path, transform_matrix: torch.Tensor, scale_factor: float):
        """Read x y z red green blue with plyfile. nerfstudio uses open3d here, which needs system libraries
        (libusb) that headless machines often lack, and reports nothing useful on a malformed file."""
        xyz, colours = read_points(ply_file_path)
        xyz = xyz.astype(np.float32)
        rgb = np.full((len(xyz), 3), 128, np.uint8) if colours is None else colours
        if len(xyz) == 0:
            return None
        points = torch.from_numpy(xyz)
        points = torch.cat([points, torch.ones_like(points[:, :1])], -1) @ transform_matrix.T * scale_factor
        return {"points3D_xyz": points, "points3D_rgb": torch.from_numpy(rgb)}

    def _split_indices(self, split: str, parsed: list[FrameLabels], trained: set[int] | None = None) -> list[int]:
        """``trained``: the frames train_filenames lists (None: no list, every frame may train)."""
        evaluation = [i for i, f in enumerate(parsed) if f.evaluation_path is not None]
        if split == "train":
            candidates = [i for i in range(len(parsed)) if trained is None or i in trained]
            if self.config.evaluation_setting == "holdout":
                return [i for i in candidates if parsed[i].evaluation_path is None]
            return candidates
        if split not in ("val", "test"):
            raise ValueError(f"unknown split {split!r}")
        if evaluation:
            return evaluation
        CONSOLE.print(
            "[bold yellow]No frame has semantic_eval_path: evaluating on the labeled views, so semantic metrics "
            "there measure the fit to the training labels, not generalisation."
        )
        labeled = [i for i, f in enumerate(parsed) if f.supervision_path is not None]
        if self.config.evaluation_setting == "holdout":
            raise SceneFormatError(self.config.data, "the holdout setting needs frames with semantic_eval_path")
        return labeled

    def _apply_aerial_transform(
        self, outputs: DataparserOutputs, meta: dict, keep_rotation: bool = False
    ) -> DataparserOutputs:
        """Orient/centre/scale with the transform computed from *all* frames, so every split shares it.
        ``keep_rotation``: the scene is z-up already (georeferenced), so it is only centred and scaled."""
        all_poses = torch.tensor([frame["transform_matrix"] for frame in meta["frames"]], dtype=torch.float32)
        transform = aerial_orient_and_center(all_poses[:, :3, :4], self.config.center_method)
        if keep_rotation:  # same centre, no rotation: t = -R c  ->  -c = R^T t
            transform = torch.cat([torch.eye(3), transform[:, :3].T @ transform[:, 3:]], 1)
        oriented_origins = all_poses[:, :3, 3] @ transform[:, :3].T + transform[:, 3]
        scale = self.config.scale_factor
        if self.config.auto_scale_poses:
            scale /= float(oriented_origins.abs().max())
        homogeneous = torch.tensor([[0.0, 0, 0, 1]])
        transform_4x4 = torch.cat([transform, homogeneous], 0)
        c2w = outputs.cameras.camera_to_worlds
        new_c2w = transform_4x4[:3] @ torch.cat([c2w, homogeneous.expand(len(c2w), 1, 4)], 1)
        new_c2w[:, :3, 3] *= scale
        outputs.cameras.camera_to_worlds = new_c2w
        if "points3D_xyz" in outputs.metadata:
            points = outputs.metadata["points3D_xyz"]
            outputs.metadata["points3D_xyz"] = (points @ transform[:, :3].T + transform[:, 3]) * scale
        outputs.dataparser_transform = transform_4x4[:3] @ torch.cat([outputs.dataparser_transform, homogeneous], 0)
        outputs.dataparser_scale = outputs.dataparser_scale * scale
        return outputs


SPLIT_LISTS = ("train_filenames", "val_filenames", "test_filenames")


@contextlib.contextmanager
def _without_split_lists() -> Iterator[None]:
    """Hide transforms.json's split lists from nerfstudio's parser while it runs: with train_filenames it returns
    only those frames for every split, which silently dropped the evaluation frames outside the list."""
    import nerfstudio.data.dataparsers.nerfstudio_dataparser as parent_module

    load = parent_module.load_from_json
    parent_module.load_from_json = lambda path: {k: v for k, v in load(path).items() if k not in SPLIT_LISTS}
    try:
        yield
    finally:
        parent_module.load_from_json = load


def _listed_frames(meta: dict, scene_dir: Path, parsed: list[FrameLabels]) -> set[int] | None:
    """Indices into ``parsed`` of the frames train_filenames names, or None without a list. Entries match by path,
    else by file name (downscaled copies); one that matches no frame is an error, as in nerfstudio's parser."""
    if "train_filenames" not in meta:
        return None
    by_path = {f.image_path: i for i, f in enumerate(parsed)}
    by_name = {f.image_path.name: i for i, f in enumerate(parsed)}
    listed: set[int] = set()
    for name in meta["train_filenames"]:
        index = by_path.get((scene_dir / name).resolve(), by_name.get(Path(name).name))
        if index is None:
            raise SceneFormatError(scene_dir / "transforms.json", f"train_filenames names {name}, which is no frame")
        listed.add(index)
    return listed


def _select_frames(outputs: DataparserOutputs, indices: list[int]) -> DataparserOutputs:
    """A DataparserOutputs holding only ``indices`` (cameras, images, masks and per-frame metadata lists)."""
    index_tensor = torch.tensor(indices, dtype=torch.long)
    cameras: Cameras = outputs.cameras[index_tensor]
    metadata = dict(outputs.metadata)
    if metadata.get("depth_filenames") is not None:
        metadata["depth_filenames"] = [metadata["depth_filenames"][i] for i in indices]
    return replace(
        outputs,
        image_filenames=[outputs.image_filenames[i] for i in indices],
        cameras=cameras,
        mask_filenames=[outputs.mask_filenames[i] for i in indices] if outputs.mask_filenames else None,
        metadata=metadata,
    )
