"""Generating a pseudo-label set for a scene: load it, pick the geometry, run the method, write the cache."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
import yaml
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from rich.progress import track

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.geometry import PinholeView, views_from_cameras
from nerfseg_plugin.core.keys import SEMANTICS_METADATA_KEY
from nerfseg_plugin.core.pseudo_label_files import save_pseudo_label
from nerfseg_plugin.core.scene_io import read_label_map
from nerfseg_plugin.data.dataparser import RssegDataParserConfig, SemanticFrames
from nerfseg_plugin.data.pseudo_label_cache import (
    cache_dir,
    cache_problem,
    file_sha256,
    scene_input_hashes,
    staged_directory,
    write_manifest,
)
from nerfseg_plugin.pseudolabels.assignment import propagate_labels
from nerfseg_plugin.pseudolabels.boundary import boundary_mask, resolve_boundary_kind
from nerfseg_plugin.pseudolabels.depth_sources import DepthSource, ModelDepth, SparsePointDepth, load_model_depth
from nerfseg_plugin.pseudolabels.superpixels import region_vote, regions_from_masks, superpixel_regions
from nerfseg_plugin.pseudolabels.vote import SourceView, vote_view

if TYPE_CHECKING:
    from nerfseg_plugin.pseudolabels.cli import PseudoLabelConfig

T = TypeVar("T")


@dataclass
class SceneData:
    """A scene's frames in capture order (nerfstudio's order: sorted image file names, which is the capture order
    of sequentially named drone images and of rsseg-make-scene scenes)."""

    image_paths: list[Path]
    stems: list[str]
    labeled: dict[int, Path]
    semantics: SemanticFrames
    views: list[PinholeView]
    points: torch.Tensor | None

    def rgb(self, index: int) -> np.ndarray:
        with Image.open(self.image_paths[index]) as image:
            return np.asarray(image.convert("RGB"))

    def labels(self, index: int) -> np.ndarray:
        """The labeled view's label map at its image's resolution (nerfstudio may train on downscaled copies)."""
        labels = read_label_map(self.labeled[index])
        size = (self.views[index].width, self.views[index].height)
        if labels.shape[::-1] != size:
            labels = np.asarray(Image.fromarray(labels).resize(size, resample=Image.Resampling.NEAREST))
        return labels


def load_scene(data: Path) -> SceneData:
    outputs = RssegDataParserConfig(data=data).setup().get_dataparser_outputs("train")
    semantics: SemanticFrames = outputs.metadata[SEMANTICS_METADATA_KEY]
    distortion = outputs.cameras.distortion_params
    if distortion is not None and torch.any(distortion != 0):
        raise SceneFormatError(data, "cameras have lens distortion; pseudo-labels need an undistorted scene")
    image_paths = [Path(name) for name in outputs.image_filenames]
    stems = [path.stem for path in image_paths]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise SceneFormatError(data, f"image file stems {duplicates[:5]} repeat; pseudo-labels are named by stem")
    labeled = {i: path for i, path in enumerate(semantics.supervision_paths) if path is not None}
    return SceneData(
        image_paths=image_paths,
        stems=stems,
        labeled=labeled,
        semantics=semantics,
        views=views_from_cameras(outputs.cameras),
        points=outputs.metadata.get("points3D_xyz"),
    )


def prepare_pseudo_labels(datamanager_config) -> Path | None:
    """The step before training that ``--pipeline.datamanager.generate-pseudo-labels`` asks for: generate that set
    with default settings unless a valid cache exists (the datamanager then reads it from the cache). None when
    nothing is to be generated (no method asked, or an explicit folder)."""
    method = getattr(datamanager_config, "generate_pseudo_labels", None)
    if method is None or datamanager_config.pseudo_label_dir is not None:
        return None
    from nerfseg_plugin.pseudolabels.cli import PseudoLabelConfig

    return generate_pseudo_labels(
        PseudoLabelConfig(data=datamanager_config.dataparser.data, method=method, score=False)
    )


def make_geometry(config: PseudoLabelConfig, scene: SceneData) -> tuple[DepthSource | None, list[PinholeView], dict]:
    """The depth source, the views in its frame, and its manifest record."""
    if config.load_config is not None:
        names = [path.name for path in scene.image_paths]
        depth, views = load_model_depth(config.load_config, scene.semantics.scene_dir, names, config.depth_convention)
        return depth, views, {"source": "model", **_model_record(config.load_config)}
    if scene.points is not None and len(scene.points) >= 3:
        return SparsePointDepth(scene.points, scene.views, config.sparse_depth), scene.views, {"source": "points"}
    return None, scene.views, {"source": "none"}


def _model_record(load_config: Path) -> dict:
    """Hashes of the trained model's config and of the checkpoint eval_setup loads (the latest), so a retrained
    model invalidates the cache. Refuses rather than writing a manifest without the checkpoint's hash."""
    try:
        checkpoint_dir = yaml.load(load_config.read_text(), Loader=yaml.Loader).get_checkpoint_dir()
    except (OSError, yaml.YAMLError, AttributeError) as err:
        raise SceneFormatError(load_config, f"not a loadable nerfstudio config (no checkpoint folder): {err}") from err
    checkpoints = sorted(Path(checkpoint_dir).glob("*.ckpt"))  # step-%09d.ckpt: name order is step order
    if not checkpoints:
        raise SceneFormatError(load_config, f"no checkpoint (*.ckpt) in {checkpoint_dir} to record in the manifest")
    return {"config_sha256": file_sha256(load_config), "checkpoint_sha256": file_sha256(checkpoints[-1])}


def settings_record(config: PseudoLabelConfig) -> dict:
    """The settings that shape this method's output (for the manifest), JSON-normalised: changing a setting the
    method does not use leaves its cache valid."""
    skip = {"data", "overwrite", "score", "sam2_checkpoint", "load_config", "device"}
    if config.method != "sam2":
        skip.add("assignment")
    if config.method != "sam2+vote":
        skip.add("regions")
    if config.sam2_checkpoint is None:
        skip |= {"sam2", "sam2_config"}
    if config.load_config is not None:
        skip.add("sparse_depth")
    else:
        skip.add("depth_convention")
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}
    return json.loads(json.dumps(settings, default=str))


def _progress(items: Sequence[T] | Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    return track(items, description=description, console=CONSOLE, total=total, transient=True)


def generate_pseudo_labels(config: PseudoLabelConfig) -> Path:
    """Write (or reuse) ``SCENE/pseudo_labels/<method>/`` and return it."""
    if config.method == "sam2" and config.sam2_checkpoint is None:
        raise ValueError("--method sam2 needs --sam2-checkpoint (a local SAM2 checkpoint file)")
    scene = load_scene(config.data)
    if not scene.labeled:
        raise SceneFormatError(config.data, "no frame has a semantic_path: nothing to propagate")
    if config.method == "vote" and config.sam2_checkpoint is not None:
        CONSOLE.print("[yellow]--sam2-checkpoint is not used by --method vote")
        config = dataclasses.replace(config, sam2_checkpoint=None)
    checkpoint = None
    if config.sam2_checkpoint is not None:
        from nerfseg_plugin.pseudolabels.sam2_backend import load_state_dict, resolve_config_name

        load_state_dict(config.sam2_checkpoint)  # fail early, before any geometry work
        checkpoint = {
            "sha256": file_sha256(config.sam2_checkpoint),
            "config": resolve_config_name(config.sam2_config, config.sam2_checkpoint),
        }
    depth, views, geometry = make_geometry(config, scene)
    if depth is None and config.method != "sam2":
        raise SceneFormatError(
            config.data, f"--method {config.method} needs geometry: give the scene a point cloud or pass --load-config"
        )
    record = {"method": config.method, "config": settings_record(config), "checkpoint": checkpoint}
    record["geometry"] = geometry
    inputs = scene_input_hashes(config.data)
    final = cache_dir(config.data, config.method)
    if final.is_dir() and not config.overwrite:
        problem = cache_problem(final, inputs, expected=record)
        if problem is None:
            CONSOLE.print(f"[bold green]{final} is up to date; nothing to do (--overwrite regenerates it)")
            return final
        CONSOLE.print(f"Regenerating {final}: {problem}")
    with staged_directory(final) as staging:
        outputs = _write_views(config, scene, depth, views, checkpoint, staging)
        extra = {"checkpoint_path": str(config.sam2_checkpoint) if checkpoint else None}
        write_manifest(staging, {**record, **extra, "inputs": inputs, "outputs": outputs})
    CONSOLE.print(f"[bold green]Wrote {len(outputs)} pseudo-labeled views to {final}")
    return final


def _sam2_propagation(config: PseudoLabelConfig, scene: SceneData, model: torch.nn.Module) -> dict:
    """Paper 002's SAM2 path: per non-labeled frame, (labels, confidence) from propagated instances."""
    from nerfseg_plugin.pseudolabels.sam2_backend import Sam2MaskGenerator, Sam2Propagator

    label_space = scene.semantics.label_space
    propagated, stats = propagate_labels(
        [scene.rgb(i) for i in range(len(scene.stems))],
        {i: scene.labels(i) for i in scene.labeled},
        label_space.num_classes,
        label_space.ignore_index,
        Sam2MaskGenerator(model, config.sam2),
        Sam2Propagator(model, config.sam2),
        config.assignment,
        progress=lambda items: _progress(items, "SAM2: instances of labeled views, propagated"),
    )
    CONSOLE.print(f"SAM2 instances per labeled view: {stats.instances_per_labeled_view}")
    return propagated


def _write_views(
    config: PseudoLabelConfig,
    scene: SceneData,
    depth: DepthSource | None,
    views: list[PinholeView],
    checkpoint: dict | None,
    directory: Path,
) -> list[str]:
    label_space = scene.semantics.label_space
    num_classes, ignore = label_space.num_classes, label_space.ignore_index
    model = None
    if checkpoint is not None:
        from nerfseg_plugin.pseudolabels.sam2_backend import build_sam2_predictor

        CONSOLE.print(f"Building SAM2 ({checkpoint['config']}) from {config.sam2_checkpoint}")
        device = config.device or (depth.model.device if isinstance(depth, ModelDepth) else None)
        model = build_sam2_predictor(checkpoint["config"], config.sam2_checkpoint, config.sam2.image_size, device)
    propagated = _sam2_propagation(config, scene, model) if config.method == "sam2" else {}
    sources = []
    if depth is not None:
        sources = [
            SourceView(views[i], depth(i), torch.tensor(scene.labels(i), dtype=torch.long)) for i in scene.labeled
        ]
    region_generator = None
    if config.method == "sam2+vote" and model is not None:
        from nerfseg_plugin.pseudolabels.sam2_backend import Sam2MaskGenerator

        region_generator = Sam2MaskGenerator(model, config.sam2)
    kind = resolve_boundary_kind(config.boundary.kind, config.method)
    targets = [i for i in range(len(scene.stems)) if i not in scene.labeled]
    for index in _progress(targets, f"{config.method}: pseudo-labels per view"):
        view = views[index]
        shape = (view.height, view.width)
        observed = None
        if sources:
            vote = vote_view(view, depth(index), sources, num_classes, config.vote)
            observed = vote.observed.numpy()
            vote_labels, vote_confidence = vote.labels_and_confidence(config.vote, ignore)
        if config.method == "sam2":
            labels, confidence = propagated[index]
        elif config.method == "vote":
            labels, confidence = vote_labels.numpy(), vote_confidence.numpy()
        else:
            image = scene.rgb(index)
            if region_generator is not None:
                regions = regions_from_masks(region_generator(image), shape)
            else:
                regions = superpixel_regions(image, config.regions)
            region_labels, region_confidence = region_vote(
                regions, vote.probabilities, vote_confidence, vote.evidence > 0, config.regions
            )
            decided = region_labels >= 0
            labels = torch.where(decided, region_labels, vote_labels).numpy()
            confidence = torch.where(decided, region_confidence, vote_confidence).numpy()
        confidence = np.where(labels != ignore, confidence, 0.0)
        boundary = boundary_mask(observed, shape, kind, config.boundary)
        save_pseudo_label(directory, scene.stems[index], labels.astype(np.uint8), confidence, boundary)
    return [scene.stems[i] for i in targets]
