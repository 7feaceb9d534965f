"""rsseg-export-geo: COG rasters, classified LAZ, class polygons and areas of a tiny trained rsseg-splat-lite run,
georeferenced (UTM) and in the local-frame fallback; the orthographic CPU rasterizer; the generator's ortho truth."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.geo.asprs import asprs_codes
from nerfseg_plugin.geo.cli import PRODUCTS, ExportGeo, export_geo
from nerfseg_plugin.geo.ortho_render import finish_tile
from nerfseg_plugin.geo.vertical_classes import resolve_vertical_classes, vertical_classes
from nerfseg_plugin.scenegen.ortho_truth import load_ortho_truth
from nerfseg_plugin.splat.cpu_rasterizer import project_gaussians, rasterization_cpu

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow
UTM = (500000.0, 4100000.0, 250.0)  # scene -> EPSG:32614 translation written into the georeferenced scene
TRUTH_GSD = 1.0
STEPS = 150


class _Console:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, *parts) -> None:
        self.lines.append(" ".join(str(p) for p in parts))


def _truth_bounds(scene: Path, offset=(0.0, 0.0)) -> tuple[float, float, float, float]:
    _, _, grid = load_ortho_truth(scene)
    x_min, y_max = grid["x_min"] + offset[0], grid["y_max"] + offset[1]
    return x_min, y_max - grid["height"] * grid["gsd"], x_min + grid["width"] * grid["gsd"], y_max


@pytest.fixture(scope="module")
def geo_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """A 16-view 64 px orbit scene with ortho truth (no georeference) and rsseg-splat-lite trained on it in-process."""
    from training_utils import setup_pipeline, train

    from nerfseg_plugin.method_configs.splat_methods import rsseg_splat_lite
    from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene

    root = tmp_path_factory.mktemp("geo")
    scene = generate_scene(
        SceneGenConfig(
            output=root / "scene", seed=1, num_views=16, width=64, height=64, num_labeled=3, flight="orbit",
            num_points=3000, ortho_truth=True, ortho_truth_gsd=TRUTH_GSD, show_progress=False,
        )
    )  # fmt: skip
    pipeline, optimizers, callbacks = setup_pipeline(
        rsseg_splat_lite.config, scene, num_downscales=0, max_gaussians=6000, stop_split_at=100
    )
    torch.manual_seed(0)
    train(pipeline, optimizers, callbacks, steps=STEPS)
    pipeline.eval()
    return pipeline, scene


@pytest.fixture(scope="module")
def local_export(geo_pipeline, tmp_path_factory: pytest.TempPathFactory):
    """Export in the local frame (the scene has no georeference yet)."""
    pipeline, scene = geo_pipeline
    out = tmp_path_factory.mktemp("local")
    console = _Console()
    options = ExportGeo(load_config=Path("run/config.yml"), output_dir=out, tile_size=64, local_units="metre")
    summary = export_geo(pipeline, options, console)
    return out, summary, console, pipeline, scene


@pytest.fixture(scope="module")
def utm_export(local_export, tmp_path_factory: pytest.TempPathFactory):
    """The same model after a UTM georeference was added to the scene's transforms.json, on the truth's grid."""
    _, _, _, pipeline, scene = local_export
    meta = json.loads((scene / "transforms.json").read_text())
    matrix = np.eye(4)
    matrix[:3, 3] = UTM
    meta["georeference"] = {"crs": "EPSG:32614", "scene_to_crs": matrix.tolist(), "source": "test"}
    (scene / "transforms.json").write_text(json.dumps(meta))
    out = tmp_path_factory.mktemp("utm")
    bounds = _truth_bounds(scene, UTM[:2])
    options = ExportGeo(load_config=Path("run/config.yml"), output_dir=out, gsd=TRUTH_GSD, bounds=bounds, tile_size=64)
    export_geo(pipeline, options, _Console())
    return out, scene


def test_console_script_parses_and_names_a_missing_run(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "rsseg-export-geo"), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--gsd" in result.stdout and "--bounds" in result.stdout
    with pytest.raises(SceneFormatError, match="config.yml"):
        ExportGeo(load_config=tmp_path / "missing.yml", output_dir=tmp_path / "out").main()


def test_rasters_are_valid_cogs_in_the_crs(utm_export) -> None:
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    out, scene = utm_export
    bounds = _truth_bounds(scene, UTM[:2])
    classes = json.loads((scene / "classes.json").read_text())["classes"]
    for name, dtype, count, nodata in [
        ("labels.tif", "uint8", 1, 255),
        ("confidence.tif", "float32", 1, -9999.0),
        ("orthophoto.tif", "uint8", 4, None),
        ("dsm.tif", "float32", 1, -9999.0),
    ]:
        valid, errors, _ = cog_validate(out / name, quiet=True)
        assert valid, (name, errors)
        with rasterio.open(out / name) as dataset:
            assert dataset.crs.to_epsg() == 32614
            assert dataset.res == pytest.approx((TRUTH_GSD, TRUTH_GSD))
            assert dataset.bounds == pytest.approx(bounds)
            assert dataset.count == count and set(dataset.dtypes) == {dtype} and dataset.nodata == nodata
            assert dataset.profile["tiled"]
    with rasterio.open(out / "labels.tif") as dataset:
        colormap = dataset.colormap(1)
        assert all(colormap[i][:3] == tuple(c["color"]) for i, c in enumerate(classes))
        assert json.loads(dataset.tags()["CLASS_NAMES"]) == [c["name"] for c in classes]
        labels = dataset.read(1)
    assert set(np.unique(labels)) <= set(range(len(classes))) | {255}
    with rasterio.open(out / "dsm.tif") as dataset:
        dsm = dataset.read(1)
    heights = dsm[dsm != -9999.0]
    assert heights.size > 0.5 * dsm.size and np.median(heights) == pytest.approx(UTM[2], abs=5.0)


def test_label_ortho_and_dsm_follow_the_truth(utm_export) -> None:
    import rasterio

    out, scene = utm_export
    truth_labels, truth_height, _ = load_ortho_truth(scene)
    with rasterio.open(out / "labels.tif") as labels, rasterio.open(out / "dsm.tif") as dsm:
        predicted, height = labels.read(1), dsm.read(1)
    assert predicted.shape == truth_labels.shape
    valid = (truth_labels != 255) & (predicted != 255)
    assert valid.mean() > 0.5
    # A 150-step run: far from the benchmark's >= 0.80 mIoU, but the map must be registered with the truth.
    assert (predicted[valid] == truth_labels[valid]).mean() > 0.45
    error = np.abs(height - UTM[2] - truth_height)[valid & (height != -9999.0)]
    assert np.median(error) < 2.0


def test_classified_laz(utm_export) -> None:
    import laspy
    from pyproj import CRS

    out, scene = utm_export
    las = laspy.read(out / "classified.laz")
    header = las.header
    x_min, y_min, x_max, y_max = _truth_bounds(scene, UTM[:2])
    assert (header.version.major, header.version.minor) == (1, 4) and header.point_format.id == 7
    assert np.allclose(header.scales, 0.001) and header.offsets[0] == math.floor(x_min)
    assert header.offsets[1] == math.floor(y_min) and header.global_encoding.wkt
    assert CRS.from_wkt(header.parse_crs().to_wkt()).to_epsg() == 32614
    assert len(las.points) > 100
    assert las.x.min() >= x_min and las.x.max() <= x_max and las.y.min() >= y_min and las.y.max() <= y_max
    names = [c["name"] for c in json.loads((scene / "classes.json").read_text())["classes"]]
    assert set(np.unique(las.classification)) <= set(asprs_codes(names))
    confidence = np.asarray(las["confidence"])
    assert confidence.dtype == np.float32 and 0.0 < confidence.min() and confidence.max() <= 1.0
    assert np.median(np.asarray(las.z)) == pytest.approx(UTM[2], abs=10.0)


def test_areas_and_polygons_add_up(utm_export) -> None:
    out, scene = utm_export
    summary = json.loads((out / "areas.json").read_text())
    classes = summary["classes"]
    assert sum(c["area"] for c in classes) == pytest.approx(summary["mapped_area"])
    assert summary["mapped_area"] + summary["unmapped_area"] == pytest.approx(summary["raster_area"])
    assert sum(c["share_of_mapped"] for c in classes) == pytest.approx(1.0)
    _, _, grid = load_ortho_truth(scene)
    assert summary["raster_area"] == pytest.approx(grid["width"] * grid["height"] * TRUTH_GSD**2)
    table = (out / "areas.md").read_text()
    assert all(f"| {c['name']} |" in table for c in classes)
    collection = json.loads((out / "classes.geojson").read_text())
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32614"
    features = collection["features"]
    assert {f["properties"]["class_name"] for f in features} == {c["name"] for c in classes if c["pixels"] > 0}
    polygon_area = sum(f["properties"]["area"] for f in features)
    assert polygon_area == pytest.approx(summary["mapped_area"], rel=0.05)
    from PIL import Image

    assert min(Image.open(out / "preview.png").size) > 200


def test_local_frame_fallback(local_export) -> None:
    import laspy
    import rasterio

    out, summary, console, _, _ = local_export
    assert summary["local_frame"] and any("no 'georeference'" in line for line in console.lines)
    assert {Path(p).name for p in summary["written"]} >= set(PRODUCTS)
    with rasterio.open(out / "labels.tif") as dataset:
        assert "LOCAL_CS" in dataset.crs.to_wkt() and "local frame" in dataset.crs.to_wkt()
        # the generated town is centred at the scene origin: so is the local frame
        left, bottom, right, top = dataset.bounds
        assert abs(left + right) < 0.3 * (right - left) and abs(bottom + top) < 0.3 * (top - bottom)
    las = laspy.read(out / "classified.laz")
    assert las.header.vlrs.get("WktCoordinateSystemVlr")[0].string.startswith("LOCAL_CS")
    assert json.loads((out / "areas.json").read_text())["local_frame"] is True
    assert not [p for p in os.listdir(out) if p.startswith(".")]


def test_an_interrupted_export_leaves_no_finished_looking_file(local_export, tmp_path, monkeypatch) -> None:
    from nerfseg_plugin.geo import ortho_render

    _, _, _, pipeline, _ = local_export
    render, calls = ortho_render.SplatOrthoRenderer.render, []

    def failing_render(self, tile):
        calls.append(tile)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return render(self, tile)

    monkeypatch.setattr(ortho_render.SplatOrthoRenderer, "render", failing_render)
    options = ExportGeo(load_config=Path("unused"), output_dir=tmp_path, tile_size=32)
    with pytest.raises(KeyboardInterrupt):
        export_geo(pipeline, options, _Console())
    assert os.listdir(tmp_path) == []


def test_ortho_projection_matches_gsplat_torch_impl() -> None:
    from nerfseg_plugin.splat.gsplat_private import torch_impl

    _fully_fused_projection, _quat_scale_to_covar_preci = (
        torch_impl()._fully_fused_projection,
        torch_impl()._quat_scale_to_covar_preci,
    )

    g = torch.Generator().manual_seed(0)
    n = 50
    means = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([8.0, 6.0, 4.0]) + 1.0
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.3 + 0.02
    viewmats = torch.eye(4, dtype=torch.float64)[None]
    Ks = torch.tensor([[[4.0, 0, 1.5], [0, 4.0, -2.0], [0, 0, 1]]], dtype=torch.float64)
    ours = project_gaussians(means, quats, scales, viewmats, Ks, 40, 32, camera_model="ortho")
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    ref = _fully_fused_projection(means, covars, viewmats, Ks, 40, 32, calc_compensations=True, camera_model="ortho")
    assert torch.equal(ours[0], ref[0]) and ours[0].gt(0).any()
    for a, b in zip(ours[1:], ref[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_ortho_render_places_a_gaussian_by_map_position_not_depth() -> None:
    """Two Gaussians at different depths over the same ground point land on the same pixel, at the same size."""
    gsd = 0.5
    means = torch.tensor([[3.25, 2.25, 2.0], [3.25, 2.25, 9.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2)
    scales = torch.full((2, 3), 0.4)
    Ks = torch.tensor([[[1 / gsd, 0, 0], [0, 1 / gsd, 0], [0, 0, 1]]])
    for i in range(2):
        _, alphas, meta = rasterization_cpu(
            means[i : i + 1], quats[:1], scales[:1], torch.tensor([0.9]), torch.ones(1, 3),
            torch.eye(4)[None], Ks, 16, 16, camera_model="ortho",
        )  # fmt: skip
        alpha = alphas[0, ..., 0]
        row, col = divmod(int(alpha.argmax()), 16)
        assert (row, col) == (4, 6)  # pixel (row 4, col 6) covers x in [3.0, 3.5), y in [2.0, 2.5)
        assert float(alpha[row, col - 1]) == pytest.approx(float(alpha[row, col + 1]), rel=1e-4)
        if i == 0:
            first = alpha
    torch.testing.assert_close(alpha, first)


def test_asprs_defaults_and_overrides(tmp_path: Path) -> None:
    names = ["ground", "low vegetation", "Trees", "building_wall", "water", "road_marking", "car", "sidewalk"]
    assert asprs_codes(names) == [2, 3, 5, 6, 9, 11, 64, 65]
    path = tmp_path / "classes.json"
    classes = [{"name": n, "color": [0, 0, 0]} for n in names]
    classes[6]["asprs"] = 20
    path.write_text(json.dumps({"classes": classes}))
    assert asprs_codes(names, path)[6:] == [20, 64]


def test_vertical_classes_by_name_and_classes_json(tmp_path: Path) -> None:
    names = ["terrain", "building_wall", "Facades", "roof", "wallpaper"]
    assert vertical_classes(names) == [1, 2]
    path = tmp_path / "classes.json"
    classes = [{"name": n, "color": [0, 0, 0]} for n in names]
    classes[1]["vertical"], classes[3]["vertical"] = False, True
    path.write_text(json.dumps({"classes": classes}))
    assert vertical_classes(names, path) == [2, 3]
    assert resolve_vertical_classes(("roof",), names, path) == [3] and resolve_vertical_classes((), names, path) == []
    with pytest.raises(ValueError, match="unknown classes \\['Roof'\\]"):
        resolve_vertical_classes(("Roof",), names, path)
    classes[0]["vertical"] = "yes"
    path.write_text(json.dumps({"classes": classes}))
    with pytest.raises(SceneFormatError, match="class 0: 'vertical' must be true or false") as raised:
        vertical_classes(names, path)
    assert str(path) in str(raised.value)
    with pytest.raises(SceneFormatError, match="every class is vertical"):
        vertical_classes(["wall"])


def test_vertical_classes_leave_the_ortho_arg_max_and_its_confidence() -> None:
    logits = torch.tensor([[[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]]])  # [1, 2, 3]: pixel 0 is class 1 by arg-max
    ones = torch.ones(1, 2)
    rgb = torch.zeros(1, 2, 3)
    plain = finish_tile(rgb, logits, ones, ones, 0.5)
    assert plain.labels.tolist() == [[1, 0]]
    tile = finish_tile(rgb, logits, ones, ones, 0.5, vertical=[1])
    assert tile.labels.tolist() == [[2, 0]]
    expected = torch.softmax(torch.tensor([0.0, 1.0]), 0).max().item()  # pixel 0 over classes 0 and 2 only
    assert tile.confidence[0, 0] == pytest.approx(expected) and tile.confidence[0, 1] > plain.confidence[0, 1]


def test_ortho_truth_matches_the_town(local_export) -> None:
    scene = local_export[4]
    labels, height, grid = load_ortho_truth(scene)
    assert labels.shape == height.shape == (grid["height"], grid["width"])
    names = [c["name"] for c in json.loads((scene / "classes.json").read_text())["classes"]]
    roads, roofs = labels == names.index("road"), labels == names.index("roof")
    assert roads.any() and roofs.any()
    assert np.allclose(height[roads], 0.0, atol=0.05) and np.median(height[roofs]) > 3.0


def test_nerf_ortho_tiles_cast_parallel_rays_down_the_map_frame(geo_pipeline) -> None:
    from training_utils import setup_pipeline

    from nerfseg_plugin.geo.frames import pipeline_map_frame
    from nerfseg_plugin.geo.grid import OrthoGrid
    from nerfseg_plugin.geo.ortho_render import NerfOrthoRenderer
    from nerfseg_plugin.method_configs.nerf_methods import rsseg_nerf_lite

    _, scene = geo_pipeline
    pipeline, _, _ = setup_pipeline(rsseg_nerf_lite.config, scene)
    pipeline.eval()
    frame, _ = pipeline_map_frame(pipeline)
    centre = frame.to_crs(np.zeros((1, 3)))[0]
    grid = OrthoGrid.from_bounds((centre[0] - 4, centre[1] - 4, centre[0] + 4, centre[1] + 4), 1.0, tile_size=8)
    renderer = NerfOrthoRenderer(pipeline.model, frame, grid.gsd, (centre[2] - 30, centre[2] + 30), min_coverage=0.0)
    (tile,) = grid.tiles()
    result = renderer.render(tile)
    assert result.labels.shape == result.height.shape == (8, 8) and result.rgb.shape == (8, 8, 3)
    assert np.isfinite(result.height).all() and (result.height >= centre[2] - 30 - 1e-3).all()
    assert (result.height <= centre[2] + 30 + 1e-3).all()


def test_photo_footprints_count_the_photos_that_frame_a_point() -> None:
    from nerfseg_plugin.core.geometry import PinholeView
    from nerfseg_plugin.geo.footprints import PhotoFootprints
    from nerfseg_plugin.geo.frames import MapFrame, local_crs_wkt

    # two nadir cameras 10 m up, 4 m apart along x; f = 32 px on 32 px: each frames a 10 m square of the ground
    cameras = [
        PinholeView(
            c2w=torch.tensor([[1.0, 0, 0, x], [0, 1.0, 0, 0], [0, 0, 1.0, 10.0]]),
            fx=32.0,
            fy=32.0,
            cx=16.0,
            cy=16.0,
            width=32,
            height=32,
        )  # fmt: skip
        for x in (0.0, 4.0)
    ]
    frame = MapFrame(np.eye(4), local_crs_wkt("metre"), is_local=True, units="metre")
    points = np.array([[2.0, 0, 0], [-4.0, 0, 0], [8.0, 0, 0], [20.0, 0, 0], [2.0, 0, 12.0], [np.nan, 0, 0]])
    # the overlap, only the first, only the second, neither, above both cameras, no surface
    assert PhotoFootprints(cameras, frame).count(points).tolist() == [2, 1, 1, 0, 0, 0]


def test_products_stop_where_too_few_photos_frame_the_ground(local_export, tmp_path) -> None:
    import rasterio

    out, _, _, pipeline, _ = local_export
    num_photos = len(pipeline.datamanager.train_dataset.cameras)
    # Every class in this export's ortho (no vertical classes), so its labels are the plain arg-max.
    options = ExportGeo(
        load_config=Path("unused"), output_dir=tmp_path, tile_size=64, local_units="metre", min_photos=num_photos,
        vertical_classes=(),
    )  # fmt: skip
    export_geo(pipeline, options, _Console())
    with rasterio.open(out / "labels.tif") as default, rasterio.open(tmp_path / "labels.tif") as strict:
        default_labels, strict_labels = default.read(1), strict.read(1)
    surveyed, framed_by_all = default_labels != 255, strict_labels != 255
    assert framed_by_all.any() and framed_by_all.sum() < surveyed.sum()
    assert not (framed_by_all & ~surveyed).any()
    # The default leaves building_wall out of the label ortho and changes no pixel that was another class.
    wall = pipeline.model.label_space.names.index("building_wall")
    both = surveyed & framed_by_all
    assert not (default_labels == wall).any()
    # (>= 99 %, not all: when utm_export ran first, this export is in the UTM frame and near-ties may flip)
    assert (default_labels[both] == strict_labels[both])[strict_labels[both] != wall].mean() >= 0.99


def test_a_scene_changed_since_training_is_mapped_in_the_trained_frame(tmp_path: Path) -> None:
    """A georeference added after training changes the re-parsed frame; the export must use the checkpoint's."""
    from types import SimpleNamespace

    from nerfstudio.cameras.cameras import Cameras

    from nerfseg_plugin.data.trained_frame import align_to_trained_frame, trained_frame_differs
    from nerfseg_plugin.geo.frames import map_frame

    tilt = math.radians(0.3)
    rotation = np.array([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]])
    trained = np.concatenate([rotation, [[0.5], [-1.0], [2.0]]], 1)  # the aerial orientation's tilted estimate
    parsed = np.concatenate([np.eye(3), [[0.5], [-1.0], [2.0]]], 1)  # georeferenced now: centred only
    trained_scale, parsed_scale = 0.02, 0.021
    (tmp_path / "dataparser_transforms.json").write_text(
        json.dumps({"transform": trained.tolist(), "scale": trained_scale})
    )
    centres = np.array([[10.0, 20.0, 80.0], [-30.0, 5.0, 90.0]])  # scene-file camera centres (metres)
    points = np.array([[1.0, 2.0, 0.0], [-40.0, 35.0, 6.0]])

    def to_model(xyz: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
        return scale * (xyz @ transform[:, :3].T + transform[:, 3])

    c2w = np.tile(np.eye(4)[:3], (2, 1, 1))
    c2w[:, :, 3] = to_model(centres, parsed, parsed_scale)
    cameras = Cameras(torch.tensor(c2w, dtype=torch.float32), fx=100.0, fy=100.0, cx=32.0, cy=32.0)
    outputs = SimpleNamespace(
        dataparser_transform=torch.tensor(parsed, dtype=torch.float32),
        dataparser_scale=parsed_scale,
        metadata={"points3D_xyz": torch.tensor(to_model(points, parsed, parsed_scale), dtype=torch.float32)},
    )
    pipeline = SimpleNamespace(
        datamanager=SimpleNamespace(train_dataparser_outputs=outputs, train_dataset=SimpleNamespace(cameras=cameras))
    )
    assert trained_frame_differs(pipeline, tmp_path) and align_to_trained_frame(pipeline, tmp_path)
    assert not trained_frame_differs(pipeline, tmp_path)
    moved = cameras.camera_to_worlds.double().numpy()
    np.testing.assert_allclose(moved[:, :, 3], to_model(centres, trained, trained_scale), atol=1e-4)
    np.testing.assert_allclose(moved[:, :, :3], np.tile(rotation, (2, 1, 1)), atol=1e-6)  # still a rotation
    np.testing.assert_allclose(
        outputs.metadata["points3D_xyz"].numpy(), to_model(points, trained, trained_scale), atol=1e-4
    )
    meta = {"georeference": {"crs": "EPSG:32614", "scene_to_crs": np.eye(4).tolist()}, "frames": []}
    frame = map_frame(
        meta, tmp_path, tmp_path / "transforms.json", outputs.dataparser_transform.numpy(), outputs.dataparser_scale
    )
    np.testing.assert_allclose(frame.to_crs(moved[:, :, 3]), centres, atol=1e-3)  # the same physical cameras
    assert not align_to_trained_frame(pipeline, tmp_path)  # now in agreement: nothing moves again
    (tmp_path / "dataparser_transforms.json").write_text('{"transform": 3}')
    with pytest.raises(SceneFormatError, match="dataparser_transforms.json"):
        align_to_trained_frame(pipeline, tmp_path)
