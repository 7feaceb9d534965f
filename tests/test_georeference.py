"""Georeferencing: the robust similarity fit, CRS choice, and a generated geotagged survey whose true camera centres
(in UTM) are recovered by rsseg-process-data from noisy EXIF GPS, or from ground control points, and survive
rsseg-data's re-orientation (model_to_crs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pycolmap  # noqa: F401 - a required dependency: a broken install must fail, not skip
import pyproj  # noqa: F401 - a required dependency: a broken install must fail, not skip
import pytest

from nerfseg_plugin.process.config import ProcessDataConfig
from nerfseg_plugin.process.exif import GpsPosition
from nerfseg_plugin.process.georeference import GeoreferenceError, fit_similarity, pick_crs, umeyama

NUM_VIEWS, SIZE, GPS_NOISE_M = 20, 256, 3.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_fit_recovers_similarity_and_rejects_outliers() -> None:
    rng = np.random.default_rng(1)
    source = rng.uniform(-1, 1, (60, 3)) * [1.0, 1.0, 0.1]  # a flat flight, as SfM sees it
    rotation, scale, translation = _random_rotation(rng), 73.0, np.array([500000.0, 4.6e6, 300.0])
    target = scale * source @ rotation.T + translation + rng.normal(0, 1.0, source.shape)
    target[:5] += 80.0  # five photos with broken GPS
    fit = fit_similarity(source, target, inlier_threshold=6.0)
    assert not fit.inliers[:5].any() and fit.inliers[5:].all()
    assert fit.scale == pytest.approx(scale, rel=0.01)
    assert np.degrees(np.arccos(np.clip((np.trace(fit.rotation.T @ rotation) - 1) / 2, -1, 1))) < 1.0
    assert 1.0 < fit.residual_rms < 2.2  # 1 m per axis: ~1.7 m in 3-D
    exact_scale, exact_rotation, exact_translation = umeyama(source, scale * source @ rotation.T + translation)
    assert exact_scale == pytest.approx(scale) and np.allclose(exact_rotation, rotation)


def test_collinear_cameras_and_too_few_are_refused() -> None:
    from nerfseg_plugin.process.georeference import georeference_from_correspondences

    line = np.outer(np.linspace(0, 1, 10), [1.0, 0.5, 0.0])
    with pytest.raises(GeoreferenceError, match="one line"):
        georeference_from_correspondences(line, line * 100, "EPSG:32632", "exif-gps", 5.0, 0)
    with pytest.raises(GeoreferenceError, match="at least 3"):
        fit_similarity(line[:2], line[:2], 5.0)


def test_crs_is_the_utm_zone_or_a_checked_choice() -> None:
    zurich = [GpsPosition(47.37, 8.54, 400.0)]
    assert pick_crs(zurich, None) == "EPSG:32632"
    assert pick_crs([GpsPosition(-33.87, 151.21, 10.0)], None) == "EPSG:32756"
    assert pick_crs(zurich, "EPSG:2056") == "EPSG:2056"  # Swiss LV95, metres
    with pytest.raises(GeoreferenceError, match="not a projected CRS"):
        pick_crs(zurich, "EPSG:4326")
    with pytest.raises(GeoreferenceError, match="unknown CRS"):
        pick_crs(zurich, "EPSG:99999999")


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene

    config = SceneGenConfig(
        output=tmp_path_factory.mktemp("geo") / "truth",
        num_views=NUM_VIEWS,
        width=SIZE,
        height=SIZE,
        num_points=200,
        image_format="jpg",
        jpeg_quality=95,
        geotag=True,
        gps_noise_m=GPS_NOISE_M,
        origin_lat=41.03,
        origin_lon=-83.30,
        show_progress=False,
    )
    return generate_scene(config)


@pytest.fixture(scope="module")
def raw(truth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("geo_raw")
    for sub in ("images", "labels"):
        (root / sub).mkdir()
    for frame in json.loads((truth / "transforms.json").read_text())["frames"]:
        shutil.copy(truth / frame["file_path"], root / "images")
        if "semantic_path" in frame:
            shutil.copy(truth / frame["semantic_path"], root / "labels")
    shutil.copy(truth / "classes.json", root / "classes.json")
    return root


def _process(raw: Path, output: Path, **kwargs) -> Path:
    from nerfseg_plugin.process.cli import main

    config = ProcessDataConfig(
        images=raw / "images",
        labels=raw / "labels",
        classes=raw / "classes.json",
        output=output,
        max_num_features=1024,
        **kwargs,
    )
    main(config)
    return output


def _centres_in_crs(scene: Path) -> tuple[dict[str, np.ndarray], dict]:
    meta = json.loads((scene / "transforms.json").read_text())
    block = meta["georeference"]
    to_crs = np.array(block["scene_to_crs"])
    centres = {
        Path(frame["file_path"]).name: to_crs[:3, :3] @ np.array(frame["transform_matrix"])[:3, 3] + to_crs[:3, 3]
        for frame in meta["frames"]
    }
    return centres, block


def _true_centres(truth: Path) -> dict[str, np.ndarray]:
    record = json.loads((truth / "geotag_truth.json").read_text())
    frames = json.loads((truth / "transforms.json").read_text())["frames"]
    return {Path(f["file_path"]).name: np.array(c) for f, c in zip(frames, record["camera_centres_crs"], strict=True)}


def _check_against_truth(centres: dict[str, np.ndarray], truth_centres: dict[str, np.ndarray], tolerance_m: float):
    names = sorted(centres)
    estimated, expected = np.array([centres[n] for n in names]), np.array([truth_centres[n] for n in names])
    horizontal = np.linalg.norm((estimated - expected)[:, :2], axis=1)
    assert horizontal.mean() < tolerance_m, horizontal
    spread = np.linalg.norm(estimated - estimated.mean(0), axis=1).sum()
    true_spread = np.linalg.norm(expected - expected.mean(0), axis=1).sum()
    assert spread / true_spread == pytest.approx(1.0, abs=0.02)  # metric scale


@pytest.fixture(scope="module")
def processed(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _process(raw, tmp_path_factory.mktemp("geo_out") / "scene")


def test_gps_georeference_recovers_the_true_cameras(truth: Path, processed: Path) -> None:
    centres, block = _centres_in_crs(processed)
    assert block["crs"] == json.loads((truth / "geotag_truth.json").read_text())["crs"] == "EPSG:32617"
    assert block["source"] == "exif-gps" and block["num_inliers"] >= NUM_VIEWS - 3
    assert 0.5 * GPS_NOISE_M < block["residual_rms_m"] < 2.5 * GPS_NOISE_M  # about sqrt(3) x the per-axis noise
    # 20 views with 3 m noise: the fit averages it down (benchmarks/bench_georeference.py checks 64 views < 0.5 m).
    _check_against_truth(centres, _true_centres(truth), tolerance_m=2.0)
    meta = json.loads((processed / "transforms.json").read_text())
    poses = np.array([frame["transform_matrix"] for frame in meta["frames"]])
    assert (-poses[:, 2, 2]).mean() < -0.5  # metres with z up: the cameras look down


def test_model_coordinates_map_back_to_the_crs(truth: Path, processed: Path) -> None:
    from nerfseg_plugin.data.dataparser import RssegDataParserConfig
    from nerfseg_plugin.data.georeference import model_to_crs

    outputs = RssegDataParserConfig(data=processed).setup().get_dataparser_outputs("train")
    crs, matrix = model_to_crs(outputs)
    centres, _ = _centres_in_crs(processed)
    model = outputs.cameras.camera_to_worlds[:, :3, 3].double().numpy()
    names = [Path(name).name for name in outputs.image_filenames]
    np.testing.assert_allclose(model @ matrix[:3, :3].T + matrix[:3, 3], [centres[n] for n in names], atol=0.01)


def _write_gcp_file(truth: Path, path: Path) -> None:
    """Five surveyed points (exact CRS coordinates) and their pixels in the views that see them."""
    meta = json.loads((truth / "transforms.json").read_text())
    offset = np.array(json.loads((truth / "geotag_truth.json").read_text())["scene_to_crs"])[:3, 3]
    points = np.array([[-30.0, -30.0, 0.0], [30.0, -25.0, 0.0], [25.0, 30.0, 3.0], [-28.0, 26.0, 0.0], [0, 0, 8.0]])
    lines = ["WGS84 UTM 17N"]
    for index, point in enumerate(points):
        for frame in meta["frames"]:
            c2w = np.array(frame["transform_matrix"])
            x, y, z = c2w[:3, :3].T @ (point - c2w[:3, 3])
            u, v = meta["cx"] + meta["fl_x"] * x / -z, meta["cy"] - meta["fl_y"] * y / -z
            if z < 0 and 0 <= u < meta["w"] and 0 <= v < meta["h"]:
                e, n, h = point + offset
                lines.append(f"{e:.3f} {n:.3f} {h:.3f} {u:.2f} {v:.2f} {Path(frame['file_path']).name} gcp{index}")
    path.write_text("\n".join(lines) + "\n")


def test_ground_control_points_override_gps(truth: Path, raw: Path, tmp_path: Path) -> None:
    gcp = tmp_path / "gcp_list.txt"
    _write_gcp_file(truth, gcp)
    scene = _process(raw, tmp_path / "scene", gcp=gcp)
    centres, block = _centres_in_crs(scene)
    assert block["source"] == "gcp" and block["crs"] == "EPSG:32617" and block["num_inliers"] == 5
    assert block["residual_rms_m"] < 0.5  # exact coordinates: only SfM's own error remains
    _check_against_truth(centres, _true_centres(truth), tolerance_m=0.5)


def test_bad_gcp_file_is_refused(raw: Path, tmp_path: Path) -> None:
    from nerfseg_plugin.core.errors import SceneFormatError
    from nerfseg_plugin.process.gcp import read_gcp_file

    bad = tmp_path / "gcp_list.txt"
    bad.write_text("EPSG:32617\n1 2 3 4 frame_00000.jpg\n")
    with pytest.raises(SceneFormatError, match="line 2"):
        read_gcp_file(bad)
    bad.write_text("not a crs at all\n")
    with pytest.raises(SceneFormatError, match="CRS"):
        read_gcp_file(bad)
