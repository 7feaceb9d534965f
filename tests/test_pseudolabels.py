"""Pseudo-labels: instance classes, propagation and merge (fake SAM2), geometry and voting, regions, B, the cache,
the CLI end to end, and one real SAM2 model (random weights, packaged config, local checkpoint) through the pipeline.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from nerfseg_plugin.core.geometry import PinholeView, backproject, pixel_centres, project
from nerfseg_plugin.core.pseudo_label_files import load_pseudo_label
from nerfseg_plugin.data.pseudo_label_cache import (
    cache_dir,
    find_valid_cache,
    read_manifest,
    resolve_pseudo_label_dir,
    staged_directory,
)
from nerfseg_plugin.pseudolabels.assignment import (
    AssignmentConfig,
    EvidenceMerge,
    assign_instance_classes,
    propagate_labels,
)
from nerfseg_plugin.pseudolabels.boundary import BoundaryConfig, boundary_mask, resolve_boundary_kind
from nerfseg_plugin.pseudolabels.cli import PseudoLabelConfig, main
from nerfseg_plugin.pseudolabels.depth_sources import SparseDepthConfig, densify_depth
from nerfseg_plugin.pseudolabels.superpixels import RegionConfig, region_vote
from nerfseg_plugin.pseudolabels.vote import SourceView, VoteConfig, vote_view

IGNORE = 255


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Two shared cores: torch's intra-op threads only contend with each other here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def depth_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 views, 2 labeled, with true depth (depth/<stem>.npy) to check the projection maths against."""
    from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene

    output = tmp_path_factory.mktemp("pl") / "scene"
    config = SceneGenConfig(
        output=output,
        seed=5,
        num_views=8,
        width=64,
        height=64,
        num_labeled=2,
        save_depth=True,
        num_points=3000,
        show_progress=False,
    )
    return generate_scene(config)


def _copy_scene(scene: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(scene, tmp_path / "scene", ignore=shutil.ignore_patterns("pseudo_labels")))


# --- instance classes, merge rule, propagation (fake SAM2) -------------------------------------------------------


def test_instances_take_the_majority_class_and_weak_ones_are_dropped() -> None:
    labels = np.full((8, 8), IGNORE, np.uint8)
    labels[:, :4] = 1
    labels[:, 4:] = 2
    labels[0, 4:] = 1  # 4 of the right half's 32 pixels disagree
    right = np.zeros((8, 8), bool)
    right[:, 4:] = True
    straddling = np.zeros((8, 8), bool)
    straddling[:, 2:6] = True  # 16 pixels of class 1, 16 of class 2 (minus the disagreeing row)
    unlabeled = np.zeros((8, 8), bool)
    unlabeled[0, 0] = True
    config = AssignmentConfig(min_area=2, min_purity=0.6)
    instances = assign_instance_classes([right, straddling, unlabeled], labels, 3, frame=4, config=config)
    assert len(instances) == 1
    assert instances[0].label == 2 and instances[0].frame == 4
    assert instances[0].purity == pytest.approx(28 / 32)
    labels[:] = IGNORE  # no labeled pixel at all: nothing can take a class
    assert assign_instance_classes([right], labels, 3, 0, config) == []


def test_merge_takes_the_strongest_class_and_reports_the_margin() -> None:
    merge = EvidenceMerge(1, 3)
    merge.add(0, np.array([[0.9, 0.5, 0.0]], np.float32))
    merge.add(1, np.array([[0.4, 0.6, 0.0]], np.float32))  # overtakes pixel 1
    merge.add(0, np.array([[0.2, 0.55, 0.0]], np.float32))  # same class as pixel 0's leader: no change
    labels, confidence = merge.result(IGNORE, min_confidence=0.02)
    assert labels.tolist() == [[0, 1, IGNORE]]
    np.testing.assert_allclose(confidence[0, :2], [0.5, 0.05], atol=1e-6)
    labels, _ = merge.result(IGNORE, min_confidence=0.1)  # a near tie is a conflict: no pseudo-label
    assert labels.tolist() == [[0, IGNORE, IGNORE]]


class ShiftingPropagator:
    """Fake tracker: the scene moves one pixel right per frame; records the frames it was asked to reach."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int]]] = []

    def __call__(self, frames, start, masks):
        order = list(range(start, len(frames))) + list(range(start - 1, -1, -1))
        self.calls.append((start, order))
        for frame in order:
            yield frame, np.stack([np.roll(mask, frame - start, axis=1) * 0.9 for mask in masks]).astype(np.float32)


def test_propagation_reaches_both_directions_and_the_nearer_labeled_view_wins() -> None:
    frames = [np.full((6, 12, 3), index, np.uint8) for index in range(6)]  # pixel value = frame index
    block = np.zeros((6, 12), bool)
    block[:, 2:5] = True  # where the moving block is on frame 1

    def generator(image):
        return [np.roll(block, int(image[0, 0, 0]) - 1, axis=1)]

    # Two labeled views disagree about the block: class 0 on frame 1, class 2 on frame 4.
    labeled = {1: np.where(block, 0, IGNORE), 4: np.where(np.roll(block, 3, axis=1), 2, IGNORE)}
    labeled = {frame: labels.astype(np.uint8) for frame, labels in labeled.items()}
    propagator = ShiftingPropagator()
    results, stats = propagate_labels(
        frames, labeled, 3, IGNORE, generator, propagator, AssignmentConfig(min_area=1, min_confidence=0.0)
    )
    assert sorted(results) == [0, 2, 3, 5]
    assert stats.instances_per_labeled_view == {1: 1, 4: 1}
    assert [order for _, order in propagator.calls] == [[1, 2, 3, 4, 5, 0], [4, 5, 3, 2, 1, 0]]
    # Both labeled views claim the same moving block; each frame takes the class of the nearer one.
    for frame, expected in ((0, 0), (2, 0), (3, 2), (5, 2)):
        labels, confidence = results[frame]
        cols = np.flatnonzero(np.roll(block, frame - 1, axis=1)[0])
        assert (labels[:, cols] == expected).all(), frame
        assert (labels[:, np.setdiff1d(np.arange(12), cols)] == IGNORE).all()
    # Confidence is the evidence margin: frame 0 (1 and 4 frames from the two claims) is surer than frame 3 (2 and 1).
    assert results[0][1].max() > results[3][1].max() > 0


# --- geometry and voting ----------------------------------------------------------------------------------------


def _look_down_view(width: int = 20, height: int = 16) -> PinholeView:
    angle = math.radians(30)
    rotation = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, math.cos(angle), -math.sin(angle)], [0.0, math.sin(angle), math.cos(angle)]]
    )
    c2w = torch.cat([rotation, torch.tensor([[0.5], [-2.0], [6.0]])], 1)
    return PinholeView(c2w=c2w, fx=18.0, fy=17.0, cx=9.5, cy=8.25, width=width, height=height)


def test_backprojection_and_projection_are_inverse() -> None:
    view = _look_down_view()
    depth = torch.rand(view.height, view.width) * 5 + 1
    uv, z = project(view, backproject(view, depth))
    torch.testing.assert_close(uv, pixel_centres(view), atol=1e-4, rtol=0)
    torch.testing.assert_close(z, depth.reshape(-1), atol=1e-4, rtol=1e-5)


def _true_depth(scene: Path):
    from nerfseg_plugin.data.dataparser import RssegDataParserConfig

    outputs = RssegDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    scale = float(outputs.dataparser_scale)  # depth/*.npy is in the scene's units, cameras are normalised
    stems = [Path(name).stem for name in outputs.image_filenames]
    return outputs, lambda i: torch.from_numpy(np.load(scene / "depth" / f"{stems[i]}.npy")).float() * scale


def test_vote_with_true_depth_reproduces_the_hidden_labels(depth_scene: Path) -> None:
    from nerfseg_plugin.core.geometry import views_from_cameras
    from nerfseg_plugin.core.scene_io import read_label_map

    outputs, depth = _true_depth(depth_scene)
    semantics = outputs.metadata["semantics"]
    views = views_from_cameras(outputs.cameras)
    sources = [
        SourceView(views[i], depth(i), torch.tensor(read_label_map(semantics.supervision_paths[i]), dtype=torch.long))
        for i in semantics.labeled_indices
    ]
    # A labeled view voting into itself gives back its labels exactly (pixel-centre conventions agree).
    itself = vote_view(sources[0].view, sources[0].depth, sources[:1], semantics.label_space.num_classes, VoteConfig())
    torch.testing.assert_close(itself.labels_and_confidence(VoteConfig(), IGNORE)[0], sources[0].labels)
    labeled_total = correct_total = 0
    for index in range(len(views)):
        if index in semantics.labeled_indices:
            continue
        vote = vote_view(views[index], depth(index), sources, semantics.label_space.num_classes, VoteConfig())
        labels, _ = vote.labels_and_confidence(VoteConfig(), IGNORE)
        truth = read_label_map(depth_scene / "semantics" / f"{Path(outputs.image_filenames[index]).stem}.png")
        has = (labels.numpy() != IGNORE) & (truth != IGNORE)
        assert not (labels.numpy() != IGNORE)[~vote.observed.numpy()].any()  # no label without a visible source
        labeled_total += has.sum()
        correct_total += (has & (labels.numpy() == truth)).sum()
    assert labeled_total > 0.3 * 6 * 64 * 64
    assert correct_total / labeled_total > 0.9  # the misses are label edges, 1-2 px wide at 64x64


def test_densified_sparse_depth_is_close_to_the_true_depth(depth_scene: Path) -> None:
    from nerfseg_plugin.core.geometry import views_from_cameras

    outputs, depth = _true_depth(depth_scene)
    views = views_from_cameras(outputs.cameras)
    for index in (0, 5):
        dense, truth = densify_depth(outputs.metadata["points3D_xyz"], views[index], SparseDepthConfig()), depth(index)
        known = torch.isfinite(dense) & torch.isfinite(truth)
        assert known.float().mean() > 0.9
        assert ((dense - truth).abs() / truth)[known].median() < 0.02


class FakeRayModel(torch.nn.Module):
    """Stands in for a trained NeRF (--load-config): renders the true depth as nerfstudio's ray-based models do,
    as distance along unit-length rays (nerfstudio's own ray generation gives the conversion)."""

    def __init__(self, depth, cameras) -> None:
        super().__init__()
        self.depth, self.cameras = depth, cameras
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def get_outputs_for_camera(self, camera) -> dict[str, torch.Tensor]:
        index = next(
            i
            for i in range(len(self.cameras))
            if torch.allclose(self.cameras.camera_to_worlds[i], camera.camera_to_worlds[0].cpu())
        )
        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        return {"depth": self.depth(index)[..., None] * rays.metadata["directions_norm"]}


def test_pipeline_with_depth_rendered_by_a_model(depth_scene: Path, tmp_path: Path, monkeypatch) -> None:
    from nerfseg_plugin.core.geometry import views_from_cameras
    from nerfseg_plugin.pseudolabels import pipeline
    from nerfseg_plugin.pseudolabels.depth_sources import ModelDepth
    from nerfseg_plugin.pseudolabels.evaluation import score_pseudo_labels

    scene = _copy_scene(depth_scene, tmp_path)
    outputs, depth = _true_depth(scene)
    views = views_from_cameras(outputs.cameras)
    model_depth = ModelDepth(FakeRayModel(depth, outputs.cameras), outputs.cameras, views)
    assert model_depth.convention == "ray"
    torch.testing.assert_close(model_depth(3), depth(3), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(pipeline, "make_geometry", lambda config, scene: (model_depth, views, {"source": "model"}))
    score = score_pseudo_labels(scene, main(PseudoLabelConfig(data=scene, method="vote", score=False)))
    assert score.views == 6 and score.coverage > 0.5 and score.accuracy > 0.9


def test_regions_extend_agreeing_votes_and_reject_mixed_ones() -> None:
    regions = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    probabilities = torch.zeros(3, 1, 8)
    probabilities[2, 0, :3] = 1.0  # region 0: three votes for class 2, one pixel unvoted
    probabilities[0, 0, 4:6] = 1.0  # region 1: two votes each for classes 0 and 1
    probabilities[1, 0, 6:] = 1.0
    voted = probabilities.sum(0) > 0
    labels, confidence = region_vote(regions, probabilities, torch.ones(1, 8), voted, RegionConfig(full_support=0.5))
    assert labels.tolist() == [[2, 2, 2, 2, -1, -1, -1, -1]]
    assert confidence[0, 3] == pytest.approx(1.0)


def test_boundary_is_the_unobserved_area_without_specks_plus_a_margin() -> None:
    observed = np.ones((12, 12), bool)
    observed[:, 8:] = False  # a large unobserved strip
    observed[3, 3] = False  # a one-pixel speck of depth noise
    mask = boundary_mask(observed, (12, 12), "unobserved", BoundaryConfig(min_region=4, margin=1))
    assert mask[:, 7:].all() and not mask[:, :7].any()
    assert boundary_mask(observed, (12, 12), "all", BoundaryConfig()).all()
    assert boundary_mask(None, (12, 12), "unobserved", BoundaryConfig()).all()  # no geometry: everywhere
    assert resolve_boundary_kind("auto", "vote") == "all" and resolve_boundary_kind("auto", "sam2") == "unobserved"


# --- the cache and the command ------------------------------------------------------------------------------------


def test_vote_and_superpixel_sets_are_cached_and_invalidated(depth_scene: Path, tmp_path: Path) -> None:
    scene = _copy_scene(depth_scene, tmp_path)
    directory = main(PseudoLabelConfig(data=scene, method="vote"))
    assert directory == scene / "pseudo_labels" / "vote"
    manifest = read_manifest(directory)
    assert manifest["method"] == "vote" and len(manifest["outputs"]) == 6
    assert "semantics/frame_00002.png" in manifest["inputs"]  # a labeled view's label map
    assert not any(key.startswith("semantics/frame_00000") for key in manifest["inputs"])  # eval map: not an input
    labels, weights = load_pseudo_label(directory, "frame_00000", IGNORE)
    assert labels.shape == (64, 64) and labels.dtype == np.uint8 and ((labels != IGNORE) == (weights > 0)).all()
    before = (directory / "manifest.json").stat().st_mtime_ns
    assert main(PseudoLabelConfig(data=scene, method="vote")) == directory  # valid: reused, not rewritten
    assert (directory / "manifest.json").stat().st_mtime_ns == before

    superpixels = main(PseudoLabelConfig(data=scene, method="sam2+vote"))
    assert resolve_pseudo_label_dir(scene, "auto") == superpixels  # sam2+vote is preferred over vote
    assert resolve_pseudo_label_dir(scene, "vote") == directory
    assert resolve_pseudo_label_dir(scene, "off") is None

    label_path = scene / "semantics" / "frame_00002.png"
    changed = np.asarray(Image.open(label_path)).copy()
    changed[:4] = 0
    Image.fromarray(changed).save(label_path)
    assert find_valid_cache(scene, "vote") is None and find_valid_cache(scene, "sam2+vote") is None
    assert resolve_pseudo_label_dir(scene, "auto") is None
    with pytest.raises(ValueError, match="scene inputs changed"):
        resolve_pseudo_label_dir(scene, "vote")
    main(PseudoLabelConfig(data=scene, method="vote"))  # regenerated for the new labels
    assert find_valid_cache(scene, "vote") == directory


def test_pipeline_step_generates_the_set_before_the_datamanager_reads_it(depth_scene: Path, tmp_path: Path) -> None:
    from nerfseg_plugin.data.datamanager import RssegFullImageDatamanagerConfig, pseudo_label_folder
    from nerfseg_plugin.data.dataparser import RssegDataParserConfig
    from nerfseg_plugin.pseudolabels.pipeline import prepare_pseudo_labels

    scene = _copy_scene(depth_scene, tmp_path)
    config = RssegFullImageDatamanagerConfig(dataparser=RssegDataParserConfig(data=scene))
    assert prepare_pseudo_labels(config) is None and pseudo_label_folder(config) is None  # off by default
    config.pseudo_labels = "auto"
    assert pseudo_label_folder(config) is None  # auto, nothing cached
    config.generate_pseudo_labels = "vote"
    with pytest.raises(ValueError, match="no valid 'vote' pseudo-labels"):
        pseudo_label_folder(config)  # the datamanager itself never generates
    directory = prepare_pseudo_labels(config)
    assert directory == scene / "pseudo_labels" / "vote" and find_valid_cache(scene, "vote") == directory
    assert pseudo_label_folder(config) == directory
    config.generate_pseudo_labels = None
    assert pseudo_label_folder(config) == directory  # auto now finds the generated set
    config.pseudo_labels = "off"
    assert pseudo_label_folder(config) is None  # off (the default) ignores a cached set
    config.generate_pseudo_labels = "vote"
    assert prepare_pseudo_labels(config) == directory and pseudo_label_folder(config) == directory  # asked: used


def test_generation_never_reads_the_evaluation_labels(depth_scene: Path, tmp_path: Path) -> None:
    scene = _copy_scene(depth_scene, tmp_path)
    first = main(PseudoLabelConfig(data=scene, method="sam2+vote", score=False))
    outputs = {path.name: path.read_bytes() for path in first.glob("*.png")}
    transforms = json.loads((scene / "transforms.json").read_text())
    rng = np.random.default_rng(0)
    for frame in transforms["frames"]:
        if "semantic_eval_path" in frame:
            Image.fromarray(rng.integers(0, 3, (64, 64), dtype=np.uint8)).save(scene / frame["semantic_eval_path"])
    second = main(PseudoLabelConfig(data=scene, method="sam2+vote", score=False, overwrite=True))
    assert {path.name: path.read_bytes() for path in second.glob("*.png")} == outputs


def test_an_interrupted_write_leaves_the_previous_set(depth_scene: Path, tmp_path: Path) -> None:
    scene = _copy_scene(depth_scene, tmp_path)
    directory = main(PseudoLabelConfig(data=scene, method="vote", score=False))
    manifest = (directory / "manifest.json").read_text()
    with pytest.raises(KeyboardInterrupt), staged_directory(directory) as staging:
        (staging / "frame_00000.png").write_bytes(b"half")
        raise KeyboardInterrupt
    assert (directory / "manifest.json").read_text() == manifest
    assert find_valid_cache(scene, "vote") == directory
    assert [p.name for p in directory.parent.iterdir()] == ["vote"]  # no staging folder left behind
    # A killed run (no cleanup at all) leaves a hidden staging folder without a manifest: never trusted.
    leftover = directory.parent / ".vote.staging-killed"
    shutil.copytree(directory, leftover)
    (leftover / "frame_00000.png").write_bytes(b"half")
    (directory / "manifest.json").unlink()  # as if killed between moving the old set aside and the new one in
    assert find_valid_cache(scene, "vote") is None
    main(PseudoLabelConfig(data=scene, method="vote", score=False))
    assert find_valid_cache(scene, "vote") == directory and not leftover.exists()


def test_sam2_needs_a_local_checkpoint(depth_scene: Path, tmp_path: Path) -> None:
    from nerfseg_plugin.pseudolabels.sam2_backend import Sam2CheckpointError, load_state_dict, resolve_config_name

    with pytest.raises(ValueError, match="--sam2-checkpoint"):
        main(PseudoLabelConfig(data=depth_scene, method="sam2"))
    with pytest.raises(Sam2CheckpointError, match="not found"):
        main(PseudoLabelConfig(data=depth_scene, method="sam2", sam2_checkpoint=tmp_path / "missing.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Sam2CheckpointError, match="not a loadable"):
        load_state_dict(tmp_path / "garbage.pt")
    assert resolve_config_name(None, Path("sam2.1_hiera_tiny.pt")) == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert resolve_config_name("sam2_hiera_s", Path("x.pt")) == "configs/sam2/sam2_hiera_s.yaml"
    with pytest.raises(Sam2CheckpointError, match="--sam2-config"):
        resolve_config_name(None, Path("my_finetune.pt"))


# --- a real SAM2 model (random weights) ----------------------------------------------------------------------------


def test_real_sam2_model_runs_the_pipeline_end_to_end(tmp_path: Path) -> None:
    """hiera-t from sam2's packaged config, random weights saved to a local checkpoint and loaded back through our
    loader; automatic masks on the labeled middle frame, propagation forward and backward, files written."""
    from sam2.build_sam import build_sam2_video_predictor

    from nerfseg_plugin.pseudolabels.assignment import AssignmentConfig
    from nerfseg_plugin.pseudolabels.sam2_backend import Sam2CheckpointError, Sam2Config, build_sam2_predictor
    from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene

    scene = generate_scene(
        SceneGenConfig(
            output=tmp_path / "scene", seed=1, num_views=3, width=64, height=64, num_labeled=1, show_progress=False
        )
    )
    model = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        device="cpu",
        apply_postprocessing=False,
        hydra_overrides_extra=["++model.image_size=256"],  # CPU-sized; otherwise sam2's packaged config as is
    )
    state = model.state_dict()
    torch.save({"model": state}, tmp_path / "random_hiera_t.pt")
    state.pop(next(iter(state)))
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(Sam2CheckpointError, match="1 missing keys"):
        build_sam2_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", tmp_path / "broken.pt", image_size=256)

    config = PseudoLabelConfig(
        data=scene,
        method="sam2",
        sam2_checkpoint=tmp_path / "random_hiera_t.pt",
        sam2_config="sam2.1_hiera_t",
        # Random weights score their masks arbitrarily: accept every mask and every instance.
        sam2=Sam2Config(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, image_size=256),
        assignment=AssignmentConfig(min_labeled_fraction=0.0, min_purity=0.0, min_area=1, min_confidence=0.0),
    )
    directory = main(config)
    manifest = read_manifest(directory)
    assert manifest["checkpoint"]["config"] == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert sorted(manifest["outputs"]) == ["frame_00000", "frame_00002"]  # both sides of labeled frame 1
    for stem in manifest["outputs"]:
        labels, _ = load_pseudo_label(directory, stem, IGNORE)
        assert labels.shape == (64, 64)
        assert (labels != IGNORE).any(), f"nothing propagated to {stem}"
    assert cache_dir(scene, "sam2") == directory and find_valid_cache(scene, "sam2") == directory


def test_model_record_hashes_the_checkpoint_or_refuses(tmp_path: Path) -> None:
    """The manifest of a model-depth set must hold the checkpoint's hash (a retrained model invalidates the cache);
    a config whose checkpoint cannot be found is an error, never a manifest without the hash."""
    import yaml
    from nerfstudio.engine.trainer import TrainerConfig

    from nerfseg_plugin.core.errors import SceneFormatError
    from nerfseg_plugin.data.pseudo_label_cache import file_sha256
    from nerfseg_plugin.pseudolabels.pipeline import _model_record

    config = TrainerConfig(method_name="m", output_dir=tmp_path, experiment_name="e", timestamp="t")
    config_path = tmp_path / "config.yml"
    config_path.write_text(yaml.dump(config))
    with pytest.raises(SceneFormatError, match="checkpoint"):
        _model_record(config_path)  # no checkpoint yet
    checkpoints = config.get_checkpoint_dir()
    checkpoints.mkdir(parents=True)
    (checkpoints / "step-000000001.ckpt").write_bytes(b"old")
    (checkpoints / "step-000000002.ckpt").write_bytes(b"new")
    record = _model_record(config_path)
    assert record == {
        "config_sha256": file_sha256(config_path),
        "checkpoint_sha256": file_sha256(checkpoints / "step-000000002.ckpt"),
    }
    config_path.write_text("just: a mapping\n")  # loads, but is no nerfstudio config
    with pytest.raises(SceneFormatError, match="config"):
        _model_record(config_path)


def test_sam2_runs_on_the_callers_device_even_when_cuda_is_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """SAM2 follows the pipeline's device (pseudo-labels: --device or the depth model's; viewer: the pipeline's)
    instead of always taking CUDA when the machine has it."""
    import sam2.build_sam
    import sam2.sam2_image_predictor

    from nerfseg_plugin.data.corrections import RegionConfig
    from nerfseg_plugin.interactive.regions import load_prompter
    from nerfseg_plugin.pseudolabels import sam2_backend

    moved: list[torch.device] = []

    class FakeSam2(torch.nn.Module):
        image_size = 256

        def load_state_dict(self, state, strict=True):
            return [], []

        def to(self, device):
            moved.append(torch.device(device))
            return self

    monkeypatch.setattr(sam2.build_sam, "build_sam2_video_predictor", lambda *args, **kwargs: FakeSam2())
    monkeypatch.setattr(sam2.sam2_image_predictor, "SAM2ImagePredictor", lambda model: SimpleNamespace())
    monkeypatch.setattr(sam2_backend, "load_state_dict", lambda checkpoint: {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    sam2_backend.build_sam2_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", Path("x.pt"), device="cpu")
    config = RegionConfig(sam2_checkpoint=Path("x.pt"), sam2_config="sam2.1_hiera_t")
    assert load_prompter(config, torch.device("cpu")) is not None
    assert moved == [torch.device("cpu")] * 2
    sam2_backend.build_sam2_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", Path("x.pt"))
    assert moved[-1] == torch.device("cuda")  # no device given: CUDA when present, as before
