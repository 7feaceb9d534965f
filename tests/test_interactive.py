"""Click-to-correct: simulated clicks and metrics, region growing, the corrections store, live application and
restart, and the viewer panel of both models."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from training_utils import setup_pipeline

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.keys import NO_CORRECTION, PSEUDO_WEIGHTS, SEMANTIC_LABELS
from nerfseg_plugin.core.label_space import LabelSpace, SemanticClass
from nerfseg_plugin.data.corrections import CorrectionStore
from nerfseg_plugin.interactive.regions import RegionConfig, derive_region, grow_region
from nerfseg_plugin.interactive.session import CorrectionSession
from nerfseg_plugin.interactive.simulation import (
    next_click,
    number_of_clicks,
    simulate_overlay,
    summarize,
)
from nerfseg_plugin.method_configs.splat_methods import rsseg_splat_lite
from nerfseg_plugin.semantics.outputs import SEMANTIC_COLORMAP, SEMANTIC_LOGITS
from nerfseg_plugin.viewer.display import highlight_colormap, legend_markdown
from nerfseg_plugin.viewer.semantic_panel import SemanticViewerMixin

SMALL = {"num_random": 400, "warmup_length": 2, "refine_every": 3, "stop_split_at": 50, "num_downscales": 0}


# --- simulation -------------------------------------------------------------------------------------------------
def test_click_goes_to_the_interior_of_the_largest_error_region() -> None:
    gt = np.zeros((40, 40), np.int64)
    gt[5:25, 5:25] = 2  # 20x20 error (predicted 0)
    gt[30:34, 30:34] = 1  # 4x4 error
    gt[0, :] = 255  # ignored pixels never count as errors
    prediction = np.zeros_like(gt)
    prediction[0, :] = 1
    click = next_click(prediction, gt, ignore_index=255)
    assert click is not None and click.class_index == 2
    assert 13 <= click.y <= 16 and 13 <= click.x <= 16, "centre of the large square, not its edge"
    assert next_click(gt.copy(), gt, ignore_index=255) is None


def test_click_keeps_away_from_the_image_border() -> None:
    gt = np.zeros((20, 20), np.int64)
    gt[:, :6] = 1  # error touching the left border: its interior is 3 px in, not at x = 0
    click = next_click(np.zeros_like(gt), gt, 255)
    assert click is not None and click.x in (2, 3)


def test_noc_counts_clicks_until_the_threshold_and_caps_at_max() -> None:
    ious = [0.5, 0.8, 0.86, 0.91] + [0.91] * 17
    assert number_of_clicks(ious, 0.85) == 2
    assert number_of_clicks(ious, 0.90) == 3
    assert number_of_clicks(ious, 0.95) == 20
    assert number_of_clicks([0.9] * 21, 0.85) == 0
    summary = summarize({"a": ious, "b": [0.2] * 21})
    assert summary["noc@85"] == pytest.approx(11.0) and summary["noc@90"] == pytest.approx(11.5)
    assert summary["failed@90"] == pytest.approx(0.5)
    assert summary["miou_after_clicks"]["1"] == pytest.approx(0.5)
    assert summary["miou_after_clicks"]["0"] == pytest.approx(0.35)


def test_oracle_regions_reach_a_perfect_view() -> None:
    gt = np.zeros((32, 32), np.int64)
    gt[4:12, 4:12], gt[20:30, 18:30] = 1, 2
    prediction = np.zeros_like(gt)

    def error_component(click, current):
        from scipy import ndimage

        components, _ = ndimage.label(current != gt)
        return components == components[click.y, click.x]

    ious, clicks = simulate_overlay(prediction, gt, error_component, num_classes=3, ignore_index=255, max_clicks=5)
    assert len(ious) == 6 and ious[0] < 0.8
    assert ious[2] == pytest.approx(1.0) and len(clicks) == 2
    assert all(later >= earlier for earlier, later in zip(ious, ious[1:], strict=False))


# --- regions ----------------------------------------------------------------------------------------------------
def test_flood_fill_stops_at_colour_edges_and_respects_the_area_cap() -> None:
    rgb = np.zeros((20, 20, 3), np.float32)
    rgb[:, 10:] = 1.0
    region = grow_region(rgb, None, (5, 3), RegionConfig(max_area_fraction=1.0))
    assert region[:, :10].all() and not region[:, 10:].any()
    rgb[:, :10, 0] = np.linspace(0, 0.1, 10)  # a gentle ramp: still within tolerance
    capped = grow_region(rgb, None, (5, 3), RegionConfig(max_area_fraction=0.2))
    assert 0 < capped.sum() <= 0.2 * 400 and capped[5, 3]


def test_probabilities_split_regions_of_equal_colour() -> None:
    rgb = np.full((10, 10, 3), 0.5, np.float32)
    probabilities = np.zeros((10, 10, 2), np.float32)
    probabilities[:, :5, 0] = probabilities[:, 5:, 1] = 1.0
    config = RegionConfig(max_area_fraction=1.0, probability_weight=1.0)
    region = grow_region(rgb, probabilities, (2, 2), config)
    assert region[:, :5].all() and not region[:, 5:].any()


def test_sam2_prompter_mask_is_used_when_it_holds_the_click() -> None:
    rgb = np.zeros((10, 10, 3), np.float32)
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    prompter = lambda image, seed: mask  # noqa: E731 - stands in for Sam2PointPrompter
    config = RegionConfig(max_area_fraction=1.0, min_radius=0)
    assert (derive_region(rgb, None, (3, 3), config, prompter) == mask).all()
    assert derive_region(rgb, None, (8, 8), config, prompter).all(), "falls back to the flood fill"


# --- corrections store ------------------------------------------------------------------------------------------
def _region(y0: int, y1: int) -> np.ndarray:
    region = np.zeros((8, 8), bool)
    region[y0:y1] = True
    return region


def test_store_merges_reloads_and_undoes(tmp_path: Path) -> None:
    store = CorrectionStore(tmp_path / "corrections", num_classes=3)
    camera = {"camera_to_world": np.eye(4)[:3].tolist(), "fx": 1.0, "fy": 1.0, "cx": 4.0, "cy": 4.0}
    store.add("view", _region(0, 4), 1, "b", (1, 1), camera, "flood", "viewer")
    store.add("view", _region(2, 6), 2, "c", (1, 3), camera, "flood", "viewer")
    merged = CorrectionStore(tmp_path / "corrections").merged()["view"]  # a fresh store: as after a restart
    assert (merged[:2] == 1).all() and (merged[2:6] == 2).all() and (merged[6:] == NO_CORRECTION).all()
    manifest = json.loads((tmp_path / "corrections" / "manifest.json").read_text())
    assert [c["class_index"] for c in manifest["corrections"]] == [1, 2] and manifest["corrections"][0]["timestamp"]
    undone = store.undo_last()
    assert undone is not None and not (tmp_path / "corrections" / undone.file_name).exists()
    assert (CorrectionStore(tmp_path / "corrections").merged()["view"][2:4] == 1).all()
    assert not list((tmp_path / "corrections").glob(".*")), "no temporary files left"
    with pytest.raises(ValueError, match="not a class"):
        store.add("view", _region(0, 1), 3, "d", (0, 0), camera, "flood", "viewer")


def test_corrupt_corrections_name_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "corrections"
    store = CorrectionStore(directory, num_classes=3)
    correction = store.add("view", _region(0, 4), 1, "b", (1, 1), {}, "flood", "viewer")
    png = directory / correction.file_name
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    with pytest.raises(SceneFormatError, match=correction.file_name):
        CorrectionStore(directory).merged()
    Image.fromarray(np.full((4, 8), 1, np.uint8), mode="L").save(png)
    with pytest.raises(SceneFormatError, match="manifest says 8x8"):
        CorrectionStore(directory).merged()
    (directory / "manifest.json").write_text("{not json")
    with pytest.raises(SceneFormatError, match="manifest.json"):
        CorrectionStore(directory)


# --- viewer display -----------------------------------------------------------------------------------------------
LABELS = LabelSpace((SemanticClass("road", (128, 64, 128)), SemanticClass("tree", (0, 200, 0))))


def test_legend_lists_every_class_with_its_colour() -> None:
    legend = legend_markdown(LABELS)
    assert "**road**" in legend and "**tree**" in legend and legend.count("data:image/png;base64,") == 2


class PanelOnly(SemanticViewerMixin):
    """The mixin on a stand-in model: outputs come from a dict, as a model's get_outputs_for_camera would."""

    def __init__(self, outputs: dict) -> None:
        self.label_space, self._outputs = LABELS, outputs
        self.setup_semantic_viewer()

    def get_outputs_for_camera(self, camera=None, obb_box=None):
        return self.decorate_semantic_outputs(dict(self._outputs))


def test_highlight_dims_other_classes() -> None:
    logits = torch.zeros(4, 4, 2)
    logits[:, :2, 1] = 5.0  # left half "tree"
    colormap = torch.ones(4, 4, 3)
    panel = PanelOnly({SEMANTIC_LOGITS: logits, SEMANTIC_COLORMAP: colormap})
    plain = panel.get_outputs_for_camera()
    assert torch.equal(plain[SEMANTIC_COLORMAP], colormap), "no highlight by default"
    panel.semantic_viewer_2_highlight.value = "tree"
    lit = panel.get_outputs_for_camera()[SEMANTIC_COLORMAP]
    assert lit.is_floating_point() and torch.equal(lit[:, :2], colormap[:, :2])
    assert torch.allclose(lit[:, 2:], colormap[:, 2:] * 0.2)
    assert torch.equal(highlight_colormap({SEMANTIC_COLORMAP: colormap}, 0, 0.5)[SEMANTIC_COLORMAP], colormap)


# --- live corrections on a pipeline -------------------------------------------------------------------------------
@pytest.fixture
def own_scene(tiny_scene: Path, tmp_path: Path) -> Path:
    """A private copy: corrections are written into the scene folder."""
    return Path(shutil.copytree(tiny_scene, tmp_path / "scene"))


def test_correction_trains_survives_a_restart_and_undoes(own_scene: Path) -> None:
    pipeline, _, _ = setup_pipeline(rsseg_splat_lite.config, own_scene, **SMALL)
    datamanager = pipeline.datamanager
    dataset = datamanager.train_dataset
    view = next(i for i in range(len(dataset)) if i not in dataset.semantics.labeled_indices)
    assert (datamanager.cached_train[view][SEMANTIC_LABELS] == 255).all()
    session = CorrectionSession(pipeline, RegionConfig(max_area_fraction=0.1))
    correction = session.correct_frame(view, (20, 30), 2)
    assert (own_scene / "corrections" / correction.file_name).is_file()
    labels = datamanager.cached_train[view][SEMANTIC_LABELS]
    assert labels[30, 20] == 2 and 0 < int((labels == 2).sum()) <= 0.1 * labels.numel() + 5
    assert set(labels.unique().tolist()) == {2, 255}
    assert view in dataset.supervised_indices and datamanager.train_unseen_cameras[0] == view
    _, batch = datamanager.next_train(0)
    assert batch[SEMANTIC_LABELS][30, 20] == 2, "the next training batch carries the correction"

    restarted, _, _ = setup_pipeline(rsseg_splat_lite.config, own_scene, **SMALL)
    assert restarted.datamanager.cached_train[view][SEMANTIC_LABELS][30, 20] == 2
    assert float(restarted.datamanager.cached_train[view][PSEUDO_WEIGHTS][30, 20]) == 0.0

    assert session.undo_last() == correction
    assert not (own_scene / "corrections" / correction.file_name).exists()
    assert (datamanager.cached_train[view][SEMANTIC_LABELS] == 255).all()
    assert view not in dataset.supervised_indices


def test_a_viewer_click_snaps_to_the_training_camera_it_was_made_from(own_scene: Path) -> None:
    pipeline, _, _ = setup_pipeline(rsseg_splat_lite.config, own_scene, **SMALL)
    session = CorrectionSession(pipeline)
    training = pipeline.datamanager.train_dataset.cameras[5:6]
    # The viewer's camera is training camera 5 moved sideways along its own x axis by ``shift``: a surface point at
    # z-depth z seen at viewer pixel u sits at u + fx * shift / z in camera 5 (same row).
    camera = copy.deepcopy(training)
    pose = camera.camera_to_worlds[0]
    shift = 0.08 * float(pose[:, 3].norm())
    camera.camera_to_worlds[0, :, 3] = pose[:, 3] + shift * pose[:, 0]
    z = float(session.render(camera)["depth"][48, 16, 0])  # splatting renders z-depth
    expected_x = 16.5 + float(training.fx[0]) * shift / z - 0.5
    assert expected_x - 16 > 2, "the perturbation must move the click by a few pixels"
    index, (x, y) = session.snap_click(camera, (0.25, 0.75))
    assert index == 5 and abs(x - expected_x) <= 1.5 and abs(y - 48) <= 1
    correction = session.correct_viewer_click(camera, (0.25, 0.75), 1)
    assert correction.frame == Path(pipeline.datamanager.train_dataset.image_filenames[5]).stem
    assert correction.camera["viewer_screen_xy"] == (0.25, 0.75) and len(correction.camera["camera_to_world"]) == 3


@pytest.mark.parametrize("method", ["splat", "nerf"])
def test_both_models_expose_the_panel_to_nerfstudios_viewer(method: str, minimal_scene: Path) -> None:
    from nerfstudio.viewer.utils import parse_object
    from nerfstudio.viewer.viewer_elements import ViewerControl, ViewerElement

    from nerfseg_plugin.method_configs.nerf_methods import rsseg_nerf_lite

    config = rsseg_splat_lite.config if method == "splat" else rsseg_nerf_lite.config
    pipeline, _, _ = setup_pipeline(config, minimal_scene, **(SMALL if method == "splat" else {}))
    names = [element.name for _, element in parse_object(pipeline, ViewerElement, "Custom Elements")]
    assert names[:2] == ["Classes", "Highlight class"] and "Undo last correction" in names
    assert len(parse_object(pipeline, ViewerControl, "Custom Elements")) == 1
