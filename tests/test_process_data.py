"""rsseg-process-data: recover a generated scene's cameras from its images, write a trainable scene, and refuse bad
input clearly (and before SfM where possible)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pycolmap  # a required dependency: a broken install must fail, not skip
import pytest
import torch
from PIL import Image

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.process import cli, sfm
from nerfseg_plugin.process.cli import main
from nerfseg_plugin.process.config import ProcessDataConfig
from nerfseg_plugin.process.exif import DATETIME_ORIGINAL, EXIF_IFD, PhotoExif
from nerfseg_plugin.process.pairs import capture_order, sequential_pairs, write_pairs
from nerfseg_plugin.process.resample import FrameResampler, max_distortion_px
from nerfseg_plugin.process.scene_writer import opengl_camera_to_world
from nerfseg_plugin.process.sfm import RegistrationError

NUM_VIEWS, SIZE, NUM_LABELED = 20, 256, 3


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated scene with true poses (its transforms.json is the ground truth)."""
    from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene

    output = tmp_path_factory.mktemp("truth") / "scene"
    sizes = {"num_views": NUM_VIEWS, "width": SIZE, "height": SIZE, "num_labeled": NUM_LABELED, "num_points": 200}
    return generate_scene(SceneGenConfig(output=output, seed=0, show_progress=False, **sizes))


def make_raw(truth: Path, root: Path, stems: list[str] | None = None) -> Path:
    """What a user brings: photos, training labels, evaluation labels, classes.json (no poses)."""
    meta = json.loads((truth / "transforms.json").read_text())
    for sub in ("images", "labels", "eval_labels"):
        (root / sub).mkdir(parents=True)
    for frame in meta["frames"]:
        image = truth / frame["file_path"]
        if stems is not None and image.stem not in stems:
            continue
        shutil.copy(image, root / "images")
        if "semantic_path" in frame:
            shutil.copy(truth / frame["semantic_path"], root / "labels")
        else:
            shutil.copy(truth / frame["semantic_eval_path"], root / "eval_labels")
    shutil.copy(truth / "classes.json", root / "classes.json")
    return root


def raw_config(raw: Path, output: Path, **kwargs) -> ProcessDataConfig:
    return ProcessDataConfig(
        images=raw / "images",
        labels=raw / "labels",
        eval_labels=raw / "eval_labels",
        classes=raw / "classes.json",
        output=output,
        max_num_features=1024,
        **kwargs,
    )


@pytest.fixture(scope="module")
def raw(truth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_raw(truth, tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def processed(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("processed") / "scene"
    main(raw_config(raw, output))
    return output


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (scale, rotation, translation) minimising ||target - (s R source + t)||^2."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    cov = (target - mu_t).T @ (source - mu_s) / len(source)
    u, d, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / ((source - mu_s) ** 2).sum(1).mean()
    return scale, rotation, mu_t - scale * rotation @ mu_s


def poses(scene: Path) -> dict[str, np.ndarray]:
    meta = json.loads((scene / "transforms.json").read_text())
    return {Path(frame["file_path"]).name: np.array(frame["transform_matrix"]) for frame in meta["frames"]}


def test_recovers_true_cameras(truth: Path, processed: Path) -> None:
    true, recovered = poses(truth), poses(processed)
    share = len(recovered) / len(true)
    assert share >= 0.9, f"only {share:.0%} of the views registered"
    names = sorted(recovered)
    scale, rotation, translation = umeyama(
        np.stack([recovered[n][:3, 3] for n in names]), np.stack([true[n][:3, 3] for n in names])
    )
    aligned = np.stack([scale * rotation @ recovered[n][:3, 3] + translation for n in names])
    centres = np.stack([true[n][:3, 3] for n in names])
    extent = np.linalg.norm(centres - centres.mean(0), axis=1).max()
    rms = float(np.sqrt(((aligned - centres) ** 2).sum(1).mean()))
    angles = [
        np.degrees(np.arccos(np.clip((np.trace(true[n][:3, :3].T @ rotation @ recovered[n][:3, :3]) - 1) / 2, -1, 1)))
        for n in names
    ]
    report = f"registered {share:.0%}; centre RMS {rms:.3f} m = {rms / extent:.2%} of the extent {extent:.1f} m; "
    print(report + f"rotation error max {max(angles):.2f}°, mean {np.mean(angles):.2f}°")  # shown with pytest -s
    assert rms < 0.01 * extent and max(angles) < 1.0, report + f"max rotation error {max(angles):.2f}°"
    true_focal = json.loads((truth / "transforms.json").read_text())["fl_x"]
    meta = json.loads((processed / "transforms.json").read_text())
    assert meta["camera_model"] == "PINHOLE" and "k1" not in meta
    assert abs(meta["fl_x"] / true_focal - 1) < 0.02


def test_labels_follow_images_and_scene_parses(truth: Path, processed: Path) -> None:
    from nerfseg_plugin.data.dataparser import RssegDataParserConfig

    meta = json.loads((processed / "transforms.json").read_text())
    labeled = [f for f in meta["frames"] if "semantic_path" in f]
    assert len(labeled) == NUM_LABELED and all("semantic_eval_path" not in f for f in labeled)
    assert sum("semantic_eval_path" in f for f in meta["frames"]) == len(meta["frames"]) - NUM_LABELED
    true_meta = json.loads((truth / "transforms.json").read_text())
    # Undistortion keeps the focal length and crops a border: processed pixel (u, v) shows the original at
    # (u + dx, v + dy), up to the small estimated distortion. Nearest neighbour picks one of the 4 pixels around it.
    dx, dy = true_meta["cx"] - meta["cx"], true_meta["cy"] - meta["cy"]
    h, w = meta["h"], meta["w"]

    def shifted(array: np.ndarray, oy: int, ox: int) -> np.ndarray:
        return array[oy : oy + h, ox : ox + w].astype(np.float64)

    offsets = [(oy, ox) for oy in {int(np.floor(dy)), int(np.ceil(dy))} for ox in {int(np.floor(dx)), int(np.ceil(dx))}]
    for frame in meta["frames"][::4]:
        key = "semantic_path" if "semantic_path" in frame else "semantic_eval_path"
        with Image.open(processed / frame[key]) as label_image:
            assert label_image.mode == "L"
            labels = np.asarray(label_image)
        assert labels.shape == (h, w)
        original = np.asarray(Image.open(truth / "semantics" / Path(frame[key]).name))
        near = np.any([shifted(original, oy, ox) == labels for oy, ox in offsets], axis=0)
        assert near.mean() > 0.97, f"{frame[key]}: labels moved against the image ({near.mean():.1%} in place)"
        source = np.asarray(Image.open(truth / frame["file_path"]))
        bilinear = np.mean([shifted(source, oy, ox) for oy, ox in offsets], axis=0)  # half-pixel shifts here
        image = np.asarray(Image.open(processed / frame["file_path"]), dtype=np.float64)
        assert np.abs(image - bilinear).mean() < 6.0, frame["file_path"]
    outputs = RssegDataParserConfig(data=processed).setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == len(meta["frames"])
    assert len(outputs.metadata["semantics"].labeled_indices) == NUM_LABELED
    assert outputs.metadata["points3D_xyz"].shape[0] > 100
    assert (processed / "colmap" / "sparse" / "0").is_dir()


@pytest.mark.slow
def test_splat_lite_trains_on_processed_scene(processed: Path, tmp_path: Path) -> None:
    from nerfseg_plugin.method_configs.splat_methods import rsseg_splat_lite

    config = copy.deepcopy(rsseg_splat_lite.config)
    config.pipeline.datamanager.data = processed
    config.pipeline.final_report = False
    config.output_dir = tmp_path
    config.vis = "tensorboard"
    config.max_num_iterations = 2
    config.steps_per_eval_image = config.steps_per_eval_all_images = config.steps_per_eval_batch = 0
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    trainer.train()
    trained = {
        name for name, value in model.named_parameters() if name in before and not torch.equal(before[name], value)
    }
    assert any("means" in name for name in trained), sorted(trained)
    assert any("semantic" in name for name in trained), sorted(trained)
    assert all(torch.isfinite(value).all() for value in model.parameters())


def test_cli_subprocess_downscales_and_never_overwrites_silently(truth: Path, tmp_path: Path) -> None:
    raw = make_raw(truth, tmp_path / "raw", [f"frame_{i:05d}" for i in range(12)])  # a consecutive stretch
    output = tmp_path / "scene"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    command = [
        sys.executable,
        "-m",
        "nerfseg_plugin.process.cli",
        "--images",
        str(raw / "images"),
        "--labels",
        str(raw / "labels"),
        "--eval-labels",
        str(raw / "eval_labels"),
        "--classes",
        str(raw / "classes.json"),
        "--output",
        str(output),
        "--downscale",
        "2",
        "--camera-model",
        "PINHOLE",
        "--matching",
        "sequential",
        "--sequential-overlap",
        "5",
        "--max-num-features",
        "1024",
    ]
    done = subprocess.run([*command, "--overwrite"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[4/6]" in done.stdout and "Scene ready" in done.stdout
    assert "[5/6] Georeferencing: skipped (no GPS" in done.stdout  # PNGs carry no EXIF GPS: the SfM frame stays
    assert (output / "notes.txt").read_text() == "mine", "--overwrite must only replace the scene's own files"
    meta = json.loads((output / "transforms.json").read_text())
    assert (meta["w"], meta["h"]) == (SIZE // 2, SIZE // 2)  # PINHOLE: no undistortion crop
    frame = next(f for f in meta["frames"] if "semantic_path" in f)
    assert Image.open(output / frame["file_path"]).size == (SIZE // 2, SIZE // 2)
    assert Image.open(output / frame["semantic_path"]).size == (SIZE // 2, SIZE // 2)
    before = (output / "transforms.json").read_bytes()
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "--overwrite" in again.stdout, again.stdout + again.stderr
    assert (output / "transforms.json").read_bytes() == before


def test_unregistered_photos_fail_or_drop_their_labels(truth: Path, tmp_path: Path, capsys) -> None:
    raw = make_raw(truth, tmp_path / "raw", [f"frame_{i:05d}" for i in range(8)])
    rng = np.random.default_rng(0)
    for i in range(2):
        noise = (rng.random((SIZE // 8, SIZE // 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(noise).resize((SIZE, SIZE), Image.Resampling.BICUBIC).save(raw / "images" / f"noise_{i}.png")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(raw / "labels" / "noise_0.png")
    with pytest.raises(RegistrationError) as error:
        main(raw_config(raw, tmp_path / "scene", min_registered_share=0.95))
    message = str(error.value)
    assert "noise_0.png" in message and "noise_1.png" in message, message
    assert "--matching sequential" in message and "overlap" in message
    assert not (tmp_path / "scene").exists(), "a failed run must leave no output behind"
    capsys.readouterr()
    summary = main(raw_config(raw, tmp_path / "scene", min_registered_share=0.5))
    warning = capsys.readouterr().out
    assert "did not register" in warning and "noise_0.png" in warning, warning
    frames = json.loads((tmp_path / "scene" / "transforms.json").read_text())["frames"]
    assert summary.frames == len(frames) >= 6 and not any("noise" in f["file_path"] for f in frames)
    assert not (tmp_path / "scene" / "semantics" / "noise_0.png").exists()


def small_raw(root: Path, size: int = 32) -> Path:
    """Photos and labels that pass every pre-SfM check (random pixels: never sent to SfM in these tests)."""
    rng = np.random.default_rng(0)
    for sub in ("images", "labels", "eval_labels"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"p{i}.jpg")
    Image.fromarray(np.zeros((size, size), np.uint8)).save(root / "labels" / "p0.png")
    Image.fromarray(np.ones((size, size), np.uint8)).save(root / "eval_labels" / "p1.png")
    (root / "classes.json").write_text(
        json.dumps({"classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "b", "color": [4, 5, 6]}]})
    )
    return root


def save_label(path: Path, labels: np.ndarray) -> Path:
    Image.fromarray(labels).save(path)
    return path


def replace_file(path: Path, text: str | None) -> Path:
    path.unlink()
    if text is not None:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("breaks", "expected"),
    [
        (lambda raw: save_label(raw / "labels" / "nophoto.png", np.zeros((32, 32), np.uint8)), "no photo"),
        (lambda raw: save_label(raw / "labels" / "p2.png", np.zeros((16, 32), np.uint8)), "is 32x16"),
        (lambda raw: save_label(raw / "eval_labels" / "p3.png", np.zeros((32, 32, 3), np.uint8)), "mode RGB"),
        (lambda raw: save_label(raw / "labels" / "p0.png", np.full((32, 32), 7, np.uint8)), "not class indices"),
        (lambda raw: save_label(raw / "labels" / "p2.jpg", np.zeros((32, 32), np.uint8)), "lossy"),
        (lambda raw: save_label(raw / "eval_labels" / "p0.png", np.zeros((32, 32), np.uint8)), "both"),
        (lambda raw: replace_file(raw / "classes.json", None), "missing"),
        (lambda raw: replace_file(raw / "classes.json", '{"classes": ['), "malformed JSON"),
    ],
    ids=["orphan", "wrong-size", "rgb", "bad-value", "jpeg", "both-kinds", "no-classes", "bad-classes"],
)
def test_bad_input_is_refused_before_sfm(breaks, expected: str, tmp_path: Path, monkeypatch) -> None:
    raw = small_raw(tmp_path / "raw")
    culprit = breaks(raw)
    monkeypatch.setattr(cli, "run_sfm", lambda *_: pytest.fail("SfM started despite bad input"))
    with pytest.raises(SceneFormatError) as error:
        main(raw_config(raw, tmp_path / "scene"))
    assert error.value.path == culprit and expected in error.value.problem, str(error.value)
    assert not (tmp_path / "scene").exists()


def test_existing_output_is_refused_and_untouched(tmp_path: Path) -> None:
    raw = small_raw(tmp_path / "raw")
    output = tmp_path / "scene"
    (output / "images").mkdir(parents=True)
    (output / "transforms.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(raw_config(raw, output))
    assert (output / "transforms.json").read_text() == "{}" and (output / "images").is_dir()
    with pytest.raises(FileExistsError, match="inside the output"):
        main(replace(raw_config(raw, output, overwrite=True), images=output / "images"))


def test_options_are_checked() -> None:
    config = ProcessDataConfig(images=Path("i"), labels=Path("l"), classes=Path("c"), output=Path("o"))
    with pytest.raises(ValueError, match="one focal length"):
        replace(config, known_intrinsics=(100.0, 120.0, 16.0, 16.0)).validate()
    with pytest.raises(ValueError, match="min_registered_share"):
        replace(config, min_registered_share=0.0).validate()
    assert sfm._camera_params(replace(config, known_intrinsics=(100.0, 100.0, 16.0, 12.0))) == "100.0,16.0,12.0,0.0"


def test_known_intrinsics_principal_point_must_lie_in_the_photos(tmp_path: Path) -> None:
    raw = small_raw(tmp_path / "raw")
    with pytest.raises(SceneFormatError, match="outside"):
        main(raw_config(raw, tmp_path / "scene", known_intrinsics=(30.0, 30.0, 40.0, 16.0)))


def test_label_undistortion_uses_the_image_mapping() -> None:
    camera = pycolmap.Camera.create_from_model_name(1, "SIMPLE_RADIAL", 40.0, 64, 48)
    camera.params = [40.0, 32.0, 24.0, 0.1]
    assert max_distortion_px(camera) > 1.0
    resampler = FrameResampler(camera, downscale=1, distortion_tolerance_px=0.1, ignore_index=255)
    # Labels are the column index: nearest-neighbour labels must match the bilinear warp of the same ramp.
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 3, (48, 1))
    labels = resampler.labels(ramp // 3)
    warped = resampler.image(np.repeat(ramp[..., None], 3, -1))[..., 0].astype(np.float64) / 3
    assert labels.shape == (resampler.intrinsics.height, resampler.intrinsics.width)
    assert np.abs(labels - warped).max() <= 1.0
    stripes = resampler.labels((np.indices((48, 64)).sum(0) % 2 * 9).astype(np.uint8))
    assert set(np.unique(stripes)) == {0, 9}, "nearest neighbour must not blend class indices"
    halved = FrameResampler(camera, downscale=2, distortion_tolerance_px=0.1, ignore_index=255)
    assert halved.intrinsics.width == resampler.intrinsics.width // 2
    assert halved.intrinsics.fx == pytest.approx(resampler.intrinsics.fx / 2)


def test_max_image_size_resizes_by_any_factor_keeping_the_aspect() -> None:
    camera = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 400.0, 400, 300)
    camera.params = [400.0, 410.0, 200.0, 150.0]
    resampler = FrameResampler(camera, 1, distortion_tolerance_px=0.1, ignore_index=255, max_image_size=130)
    intrinsics = resampler.intrinsics
    assert (intrinsics.width, intrinsics.height) == (130, 98) and resampler.changes_pixels  # 300 * 0.325 = 97.5
    assert intrinsics.fx == pytest.approx(400.0 * 130 / 400) and intrinsics.fy == pytest.approx(410.0 * 98 / 300)
    assert intrinsics.cx == pytest.approx(65.0) and intrinsics.cy == pytest.approx(49.0)
    stripes = (np.indices((300, 400))[1] // 40 % 3).astype(np.uint8)
    labels = resampler.labels(stripes)
    assert labels.shape == (98, 130) and set(np.unique(labels)) == {0, 1, 2}  # nearest: no blended indices
    assert resampler.image(np.zeros((300, 400, 3), np.uint8)).shape == (98, 130, 3)
    small = FrameResampler(camera, 1, distortion_tolerance_px=0.1, ignore_index=255, max_image_size=1000)
    assert not small.changes_pixels and small.intrinsics.width == 400  # never upscaled


def test_colmap_pose_becomes_opengl_camera_to_world() -> None:
    # A camera 10 m above the origin looking straight down (COLMAP: z forward, y down in the image).
    rotation = np.diag([1.0, -1.0, -1.0])  # world-to-camera: world -z is camera +z
    centre = np.array([0.0, 0.0, 10.0])
    c2w = opengl_camera_to_world(np.concatenate([rotation, -rotation @ centre[:, None]], 1))
    np.testing.assert_allclose(c2w[:3, 3], centre, atol=1e-12)
    np.testing.assert_allclose(-c2w[:3, 2], [0.0, 0.0, -1.0], atol=1e-12)  # OpenGL looks along -z: down
    np.testing.assert_allclose(c2w[:3, 1], [0.0, 1.0, 0.0], atol=1e-12)  # image up = world +y (COLMAP y was -y)


def _timed_photo_exif(moment: datetime) -> bytes:
    exif = Image.Exif()
    exif[EXIF_IFD] = {DATETIME_ORIGINAL: moment.strftime("%Y:%m:%d %H:%M:%S")}
    return exif.tobytes()


def test_capture_order_sorts_by_time_and_needs_every_time() -> None:
    start = datetime(2026, 5, 1, 10, 0, 0)
    exif = {
        "b.jpg": PhotoExif(capture_time=start + timedelta(seconds=2)),
        "a.jpg": PhotoExif(capture_time=start + timedelta(seconds=2)),  # same second: file-name order
        "c.jpg": PhotoExif(capture_time=start),
    }
    assert capture_order(["a.jpg", "b.jpg", "c.jpg"], exif) == ["c.jpg", "a.jpg", "b.jpg"]
    exif["d.jpg"] = PhotoExif()
    assert capture_order(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], exif) is None


def test_sequential_pairs_follow_colmaps_rule() -> None:
    order = [f"p{i}" for i in range(10)]
    pairs = sequential_pairs(order, overlap=3)
    # steps 1..3 plus the powers of two 1, 2, 4 ahead
    expected = {(f"p{i}", f"p{i + s}") for i in range(10) for s in (1, 2, 3, 4) if i + s < 10}
    assert set(pairs) == expected and len(pairs) == len(expected)
    linear = {pair for pair in expected if int(pair[1][1:]) - int(pair[0][1:]) <= 3}
    assert set(sequential_pairs(order, overlap=3, quadratic=False)) == linear


def test_sequential_matching_follows_capture_time_not_file_names(truth: Path, tmp_path: Path) -> None:
    """Photos renamed out of flight order (as after merging cards) still register: with overlap 1 only flight
    neighbours are compared, which file-name order would not give."""
    meta = json.loads((truth / "transforms.json").read_text())
    raw = tmp_path / "raw"
    for sub in ("images", "labels"):
        (raw / sub).mkdir(parents=True)
    shuffled = np.random.default_rng(3).permutation(len(meta["frames"]))
    start = datetime(2026, 5, 1, 10, 0, 0)
    for flight_index, frame in enumerate(meta["frames"]):
        stem = f"photo_{shuffled[flight_index]:03d}"
        image = Image.open(truth / frame["file_path"]).convert("RGB")
        moment = start + timedelta(seconds=2 * flight_index)
        image.save(raw / "images" / f"{stem}.jpg", quality=95, exif=_timed_photo_exif(moment))
        if "semantic_path" in frame:
            shutil.copy(truth / frame["semantic_path"], raw / "labels" / f"{stem}.png")
    shutil.copy(truth / "classes.json", raw / "classes.json")
    config = ProcessDataConfig(
        images=raw / "images",
        labels=raw / "labels",
        classes=raw / "classes.json",
        output=tmp_path / "scene",
        matching="sequential",
        sequential_overlap=1,
        max_num_features=1024,
        min_registered_share=0.9,
    )
    summary = main(config)
    assert summary.frames >= 0.9 * len(meta["frames"])


def test_a_photo_name_with_a_space_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SceneFormatError, match="IMG 0001.jpg.*match list"):
        write_pairs(tmp_path / "pairs.txt", [("IMG_0000.jpg", "IMG 0001.jpg")])
    assert not (tmp_path / "pairs.txt").exists()
