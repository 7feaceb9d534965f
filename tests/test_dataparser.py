"""rsseg-data: splits, labels, aerial orientation, datamanagers, and a clear error for every kind of bad scene."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.keys import PSEUDO_WEIGHTS, SEMANTIC_GT, SEMANTIC_LABELS
from nerfseg_plugin.data.datamanager import RssegFullImageDatamanagerConfig, RssegRayDatamanagerConfig, ratio_epoch
from nerfseg_plugin.data.dataparser import RssegDataParserConfig
from nerfseg_plugin.data.dataset import RssegDataset


def parse(scene: Path, split: str = "train", **kwargs):
    return RssegDataParserConfig(data=scene, **kwargs).setup().get_dataparser_outputs(split)


def edit_transforms(scene: Path, edit) -> None:
    path = scene / "transforms.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_transductive_and_holdout_splits(minimal_scene: Path) -> None:
    train = parse(minimal_scene, "train")
    val = parse(minimal_scene, "val")
    test = parse(minimal_scene, "test")
    assert len(train.image_filenames) == 6
    assert [p.name for p in val.image_filenames] == ["frame_001.png", "frame_004.png"]
    assert val.image_filenames == test.image_filenames
    semantics = train.metadata["semantics"]
    assert semantics.labeled_indices == [0, 3]
    assert all(path is None for path in semantics.evaluation_paths), "train split must not see eval ground truth"
    assert all(path is not None for path in val.metadata["semantics"].evaluation_paths)
    holdout = parse(minimal_scene, "train", evaluation_setting="holdout")
    assert [p.name for p in holdout.image_filenames] == [
        "frame_000.png",
        "frame_002.png",
        "frame_003.png",
        "frame_005.png",
    ]


def test_train_filenames_limit_training_but_not_evaluation(minimal_scene: Path) -> None:
    """Evaluation frames outside train_filenames stay in val/test (nerfstudio's parser alone drops them)."""
    edit_transforms(
        minimal_scene, lambda meta: meta.update(train_filenames=["images/frame_000.png", "images/frame_002.png"])
    )
    assert [p.name for p in parse(minimal_scene, "train").image_filenames] == ["frame_000.png", "frame_002.png"]
    for split in ("val", "test"):
        evaluated = parse(minimal_scene, split)
        assert [p.name for p in evaluated.image_filenames] == ["frame_001.png", "frame_004.png"]
        assert all(path is not None for path in evaluated.metadata["semantics"].evaluation_paths)
    holdout = parse(minimal_scene, "train", evaluation_setting="holdout")
    assert [p.name for p in holdout.image_filenames] == ["frame_000.png", "frame_002.png"]


def test_dataset_items_carry_uint8_labels_and_no_mask(minimal_scene: Path) -> None:
    train = RssegDataset(parse(minimal_scene, "train"))
    labeled, unlabeled = train[0], train[1]
    expected = np.asarray(Image.open(minimal_scene / "semantics" / "frame_000.png"))
    assert labeled[SEMANTIC_LABELS].dtype == torch.uint8
    assert torch.equal(labeled[SEMANTIC_LABELS], torch.from_numpy(expected))
    assert "semantic_mask" not in labeled
    assert (unlabeled[SEMANTIC_LABELS] == 255).all() and SEMANTIC_GT not in unlabeled
    # Frames without labels (or pseudo-labels) cost one element per key, not one per pixel.
    for key in (SEMANTIC_LABELS, PSEUDO_WEIGHTS):
        assert unlabeled[key].shape == unlabeled["image"].shape[:2] and unlabeled[key].stride() == (0, 0)
    evaluation = RssegDataset(parse(minimal_scene, "val"))
    assert SEMANTIC_GT in evaluation[0] and (evaluation[0][SEMANTIC_LABELS] == 255).all()


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def lawnmower_pose(index: int) -> list[list[float]]:
    """Near-nadir camera (10 degrees forward tilt) on parallel strips flown in one direction (a survey block)."""
    heading = 1.0
    tilt = np.deg2rad(10.0)
    forward = np.array([0.0, heading * np.sin(tilt), -np.cos(tilt)])
    right = np.array([heading, 0.0, 0.0])
    up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = right, up, -forward
    pose[:3, 3] = [(index // 3) * 2.0, (index % 3) * 2.0 * heading, 10.0]
    return pose.tolist()


@pytest.mark.parametrize("flight", ["orbit", "lawnmower"])
@pytest.mark.parametrize("orientation", ["aerial", "up"])
def test_aerial_orientation_recovers_the_vertical(minimal_scene: Path, orientation: str, flight: str) -> None:
    tilt = np.eye(4)
    tilt[:3, :3] = _rotation(np.array([1.0, 0.3, 0.0]), 1.1)  # an arbitrary SfM world frame

    def retilt(meta: dict) -> None:
        for index, frame in enumerate(meta["frames"]):
            pose = np.array(frame["transform_matrix"] if flight == "orbit" else lawnmower_pose(index))
            frame["transform_matrix"] = (tilt @ pose).tolist()

    edit_transforms(minimal_scene, retilt)
    c2w = parse(minimal_scene, orientation_method=orientation).cameras.camera_to_worlds
    x_axes_vertical = c2w[:, 2, 0].abs().max().item()  # roll-free cameras: x axes horizontal
    mean_view_z = (-c2w[:, :3, 2]).mean(0)[2].item()
    recovered = x_axes_vertical < 1e-3 and mean_view_z < -0.7
    if orientation == "aerial" or flight == "orbit":
        # An orbit's image-up vectors average to the vertical, so nerfstudio's "up" recovers it too.
        assert recovered, f"the capture's vertical must become +z (x axes {x_axes_vertical}, view z {mean_view_z})"
    else:  # why "aerial" is the default: "up" turns a nadir survey on its side
        assert not recovered and mean_view_z > -0.7, "up must tilt a one-direction survey"


def test_ratio_epoch_interleaves_labeled_views() -> None:
    epoch = ratio_epoch([0, 1], list(range(2, 34)), (1, 8), random.Random(0))
    assert sorted(i for i in epoch if i >= 2) == list(range(2, 34)), "every other view once per epoch"
    assert sum(i < 2 for i in epoch) == 4
    for start in range(0, len(epoch), 9):
        assert sum(i < 2 for i in epoch[start : start + 9]) == 1


def test_full_image_datamanager_samples_at_ratio(minimal_scene: Path) -> None:
    config = RssegFullImageDatamanagerConfig(
        dataparser=RssegDataParserConfig(data=minimal_scene), labeled_view_ratio=(1, 2)
    )
    manager = config.setup(device="cpu")
    drawn = []
    for step in range(12):
        camera, batch = manager.next_train(step)
        drawn.append(bool((batch[SEMANTIC_LABELS] != 255).any()))
        assert batch[SEMANTIC_LABELS].shape == batch["image"].shape[:2]
    assert sum(drawn) == 4, "labeled views are a third of the draws at ratio 1:2"


def test_ray_datamanager_gathers_labels_per_ray(minimal_scene: Path) -> None:
    config = RssegRayDatamanagerConfig(
        dataparser=RssegDataParserConfig(data=minimal_scene), train_num_rays_per_batch=256, eval_num_rays_per_batch=64
    )
    manager = config.setup(device="cpu")
    ray_bundle, batch = manager.next_train(0)
    assert batch[SEMANTIC_LABELS].shape == (256,) and batch[SEMANTIC_LABELS].dtype == torch.uint8
    labeled = batch[SEMANTIC_LABELS] != 255
    assert labeled.any() and (batch[SEMANTIC_LABELS][labeled] < 3).all()
    assert (batch[SEMANTIC_LABELS][~labeled] == 255).all()


# ---- bad input: one clear error per problem, naming the file --------------------------------------------------


def _write_labels(path: Path, array: np.ndarray, mode: str = "L") -> None:
    Image.fromarray(array, mode=mode).save(path)


BAD_SCENES = {
    "missing image": (lambda s: (s / "images" / "frame_002.png").unlink(), "frame_002.png", "image file is missing"),
    "missing label": (lambda s: (s / "semantics" / "frame_003.png").unlink(), "frame_003.png", "label map is missing"),
    "label size": (
        lambda s: _write_labels(s / "semantics" / "frame_000.png", np.zeros((10, 12), np.uint8)),
        "frame_000.png",
        "label map is 12x10 but its image",
    ),
    "label values": (
        lambda s: _write_labels(s / "semantics" / "frame_004.png", np.full((24, 24), 7, np.uint8)),
        "frame_004.png",
        r"label values \[7\]",
    ),
    "rgb labels": (
        lambda s: _write_labels(s / "semantics" / "frame_000.png", np.zeros((24, 24, 3), np.uint8), "RGB"),
        "frame_000.png",
        "mode RGB",
    ),
    "malformed classes": (lambda s: (s / "classes.json").write_text("{not json"), "classes.json", "malformed JSON"),
    "empty classes": (lambda s: (s / "classes.json").write_text('{"classes": []}'), "classes.json", "non-empty"),
    "duplicate classes": (
        lambda s: (s / "classes.json").write_text(
            json.dumps({"classes": [{"name": "road", "color": [1, 2, 3]}, {"name": "road", "color": [4, 5, 6]}]})
        ),
        "classes.json",
        "duplicate class names",
    ),
    "missing classes": (lambda s: (s / "classes.json").unlink(), "classes.json", "missing"),
    "no labeled frame": (
        lambda s: edit_transforms(s, lambda m: [f.pop("semantic_path", None) for f in m["frames"]]),
        "transforms.json",
        "no frame has a 'semantic_path'",
    ),
    "eval frame used as supervision": (
        lambda s: edit_transforms(s, lambda m: m["frames"][1].update(semantic_path="semantics/frame_001.png")),
        "transforms.json",
        "both semantic_path and semantic_eval_path",
    ),
    "eval label reused as supervision": (
        lambda s: edit_transforms(s, lambda m: m["frames"][0].update(semantic_path="semantics/frame_001.png")),
        "frame_001.png",
        "used both as semantic_path",
    ),
    "malformed transforms": (lambda s: (s / "transforms.json").write_text("[1, 2"), "transforms.json", "malformed"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCENES))
def test_bad_scene_gives_clear_error(minimal_scene: Path, case: str) -> None:
    break_scene, file_name, message = BAD_SCENES[case]
    break_scene(minimal_scene)
    with pytest.raises(SceneFormatError, match=message) as error:
        parse(minimal_scene)
    assert file_name in str(error.value)


def test_without_evaluation_frames_the_labeled_views_are_scored(tmp_path: Path) -> None:
    from conftest import make_minimal_scene

    scene = make_minimal_scene(tmp_path / "scene", evaluated=())
    val = parse(scene, "val")
    assert [p.name for p in val.image_filenames] == ["frame_000.png", "frame_003.png"]
    semantics = val.metadata["semantics"]
    assert [p.name for p in semantics.evaluation_paths] == ["frame_000.png", "frame_003.png"]
    assert SEMANTIC_GT in RssegDataset(val)[0]


# ---- georeference: rsseg-data re-orients and re-scales, model_to_crs still reaches the CRS -----------------------


@pytest.mark.parametrize("orientation", ["aerial", "up", "none"])
def test_georeference_survives_orientation_and_scaling(minimal_scene: Path, tmp_path: Path, orientation: str) -> None:
    from nerfseg_plugin.data.georeference import model_to_crs

    scene_to_crs = np.eye(4)
    scene_to_crs[:3, :3] = _rotation(np.array([0.0, 0.0, 1.0]), 0.3) * 2.0  # any similarity, not just a shift
    scene_to_crs[:3, 3] = [500123.0, 4649876.0, 250.0]
    edit_transforms(
        minimal_scene,
        lambda meta: meta.update(georeference={"crs": "EPSG:32617", "scene_to_crs": scene_to_crs.tolist()}),
    )
    outputs = parse(minimal_scene, orientation_method=orientation)
    assert outputs.dataparser_scale != 1.0 or orientation == "none"
    scene_point = np.array([1.5, -2.0, 0.25])  # a point in transforms.json's frame ...
    forward = np.eye(4)
    forward[:3] = outputs.dataparser_transform.double().numpy()
    model_point = float(outputs.dataparser_scale) * (forward @ np.append(scene_point, 1.0))[:3]  # ... in the model
    expected = scene_to_crs[:3, :3] @ scene_point + scene_to_crs[:3, 3]
    run_dir = tmp_path / "run"
    outputs.save_dataparser_transform(run_dir / "dataparser_transforms.json")
    saved = json.loads((run_dir / "dataparser_transforms.json").read_text())
    assert set(saved) == {"transform", "scale", "georeference"}  # nerfstudio's keys keep their meaning
    for source in (outputs, run_dir):
        crs, matrix = model_to_crs(source)
        assert crs == "EPSG:32617"
        np.testing.assert_allclose(matrix[:3, :3] @ model_point + matrix[:3, 3], expected, atol=1e-3)
    # Camera centres too: the model's cameras map to the CRS position of the file's cameras.
    meta = json.loads((minimal_scene / "transforms.json").read_text())
    file_centres = np.array([frame["transform_matrix"] for frame in meta["frames"]])[:, :3, 3]
    model_centres = outputs.cameras.camera_to_worlds[:, :3, 3].double().numpy()
    np.testing.assert_allclose(
        model_centres @ matrix[:3, :3].T + matrix[:3, 3],
        file_centres @ scene_to_crs[:3, :3].T + scene_to_crs[:3, 3],
        atol=1e-3,
    )


def test_georeferenced_aerial_scene_keeps_its_vertical(minimal_scene: Path) -> None:
    """A georeferenced scene is z-up already: rsseg-data centres and scales it but does not rotate it."""
    edit_transforms(
        minimal_scene, lambda meta: meta.update(georeference={"crs": "EPSG:32617", "scene_to_crs": np.eye(4).tolist()})
    )
    rotation = parse(minimal_scene).dataparser_transform[:3, :3]
    assert torch.allclose(rotation, torch.eye(3), atol=1e-6)


@pytest.mark.parametrize(
    "block, problem",
    [({"scene_to_crs": np.eye(4).tolist()}, "crs"), ({"crs": "EPSG:32617", "scene_to_crs": [[1, 0], [0, 1]]}, "4x4")],
)
def test_bad_georeference_block_is_refused(minimal_scene: Path, block: dict, problem: str) -> None:
    edit_transforms(minimal_scene, lambda meta: meta.update(georeference=block))
    with pytest.raises(SceneFormatError, match=problem):
        parse(minimal_scene)
