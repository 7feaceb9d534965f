"""rsseg-export-geo on a generated scene: export time, label-ortho mIoU and DSM error against the generator's exact
ortho truth, and peak RSS for a 10x larger area at the same GSD (tiles streamed to disk).

    nice -n 10 python benchmarks/bench_export_geo.py --work-dir /tmp/gis/bench            # generates and trains
    nice -n 10 python benchmarks/bench_export_geo.py --work-dir /tmp/gis/bench --config RUN/config.yml

With ``--config`` the run's scene must have ``ortho_truth/`` (``rsseg-make-scene --ortho-truth``, or
``nerfseg_plugin.scenegen.ortho_truth.write_ortho_truth``). The scene gets a georeference (a UTM translation) if it
has none, so the exports run through the CRS path. Each export runs in its own process, which reports its peak RSS.
The label ortho is scored on the surveyed area (truth pixels whose true surface point at least ``--min-photos``
photos frame: the export's footprint rule applied to the true geometry) and, for reference, on the whole generated
town, where the margins beyond the photos count as errors.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

BIN = Path(sys.executable).parent
_CHILD = """
import json, resource, sys, time
from pathlib import Path
from nerfseg_plugin.geo.cli import ExportGeo
options = json.loads(sys.argv[1])
options["load_config"], options["output_dir"] = Path(options["load_config"]), Path(options["output_dir"])
for key in ("bounds", "vertical_classes"):
    if key in options:
        options[key] = tuple(options[key])
started = time.perf_counter()
summary = ExportGeo(**options).main()
summary["wall_s"] = time.perf_counter() - started
summary["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
summary.pop("areas")
print("SUMMARY" + json.dumps(summary))
"""


@dataclass
class BenchExportGeo:
    """Benchmark rsseg-export-geo against a generated scene's ortho truth."""

    work_dir: Path = Path("/tmp/gis/bench")
    """Scratch folder for the scene, the run and the exports."""
    config: Path | None = None
    """An existing rsseg run (config.yml) on a generated scene with ortho truth; default: generate and train."""
    num_views: int = 64
    """Views of the generated scene (without --config)."""
    image_size: int = 256
    """Width and height of the generated views (without --config)."""
    truth_gsd: float = 0.25
    """GSD of the ortho truth, and of the compared exports."""
    area_factor: float = 10.0
    """Area multiple of the streaming-memory export (same GSD, same tile size)."""
    tile_size: int = 512
    """Export tile size in pixels."""
    min_photos: int = 2
    """The export's --min-photos and the scored area: truth pixels framed by at least this many photos."""
    vertical_classes: tuple[str, ...] | None = None
    """The export's --vertical-classes (default: the scene's rule; the flag alone keeps every class)."""
    utm_offset: tuple[float, float, float] = (500000.0, 4100000.0, 250.0)
    """Translation from scene metres to EPSG:32614 written into a scene without a georeference."""


def _export(options: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(options)], capture_output=True, text=True, timeout=7200
    )
    if result.returncode != 0:
        raise RuntimeError(f"export failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("SUMMARY"))
    return json.loads(line[len("SUMMARY") :])


def _train(work: Path, num_views: int, size: int, truth_gsd: float) -> Path:
    scene = work / "scene"
    if not (scene / "transforms.json").exists():
        subprocess.run(
            [str(BIN / "rsseg-make-scene"), "--output", str(scene), "--num-views", str(num_views), "--width",
             str(size), "--height", str(size), "--ortho-truth", "--ortho-truth-gsd", str(truth_gsd),
             "--no-show-progress"],
            check=True,
        )  # fmt: skip
    config = work / "runs" / "scene" / "rsseg-splat-lite" / "run" / "config.yml"
    if not config.exists():
        subprocess.run(
            [str(BIN / "ns-train"), "rsseg-splat-lite", "--data", str(scene), "--output-dir", str(work / "runs"),
             "--timestamp", "run", "--vis", "tensorboard", "--viewer.quit-on-train-completion", "True"],
            check=True, cwd=work,
        )  # fmt: skip
    return config


def _scene_of(config: Path) -> Path:
    import yaml
    from nerfstudio.utils.eval_utils import eval_setup  # noqa: F401  (registers the config classes for yaml)

    loaded = yaml.load(config.read_text(), Loader=yaml.Loader)
    return Path(loaded.pipeline.datamanager.data)


def _ensure_georeference(scene: Path, offset: tuple[float, float, float]) -> tuple[float, float, float]:
    """The scene's scene->CRS translation, writing a UTM one if the scene has no georeference."""
    path = scene / "transforms.json"
    meta = json.loads(path.read_text())
    if "georeference" not in meta:
        matrix = np.eye(4)
        matrix[:3, 3] = offset
        meta["georeference"] = {"crs": "EPSG:32614", "scene_to_crs": matrix.tolist(), "source": "benchmark"}
        path.write_text(json.dumps(meta, indent=2))
    matrix = np.asarray(meta["georeference"]["scene_to_crs"])
    if not np.allclose(matrix[:3, :3], np.eye(3)):
        raise SystemExit(f"{path}: the benchmark compares with the ortho truth only for translation georeferences")
    return tuple(float(v) for v in matrix[:3, 3])


def _surveyed(scene: Path, truth_height: np.ndarray, grid: dict, min_photos: int) -> np.ndarray:
    """Truth pixels whose surface point at least ``min_photos`` of the scene's photos frame (the export's own
    footprint rule, applied to the true geometry, so the scored area does not depend on the model)."""
    from nerfseg_plugin.baselines.data import load_scene
    from nerfseg_plugin.geo.footprints import PhotoFootprints
    from nerfseg_plugin.geo.frames import MapFrame, local_crs_wkt

    rows, cols = np.mgrid[0 : truth_height.shape[0], 0 : truth_height.shape[1]]
    points = np.stack(
        [grid["x_min"] + (cols + 0.5) * grid["gsd"], grid["y_max"] - (rows + 0.5) * grid["gsd"], truth_height], -1
    ).reshape(-1, 3)
    # the truth grid is in the scene file's frame, where load_scene's views are
    frame = MapFrame(np.eye(4), local_crs_wkt("metre"), is_local=True, units="metre")
    return (PhotoFootprints(load_scene(scene).views, frame).count(points) >= min_photos).reshape(truth_height.shape)


def _label_scores(predicted: np.ndarray, truth: np.ndarray, area: np.ndarray, space) -> dict:
    from nerfseg_plugin.semantics.metrics import ConfusionMatrix

    # Nodata predictions inside the scored area count as errors (mapped as an extra wrong class).
    scored = np.where(predicted == 255, (truth.astype(np.int64) + 1) % space.num_classes, predicted)
    inside = area & (truth != 255)
    confusion = ConfusionMatrix(space.num_classes, space.ignore_index)
    confusion.update(
        torch.from_numpy(np.where(inside, scored, 0).astype(np.int64)),
        torch.from_numpy(np.where(inside, truth, 255).astype(np.int64)),
    )
    metrics = confusion.compute()
    return {
        "miou": float(metrics.miou),
        "iou": {name: float(iou) for name, iou in zip(space.names, metrics.per_class_iou.tolist(), strict=True)},
        "pixel_accuracy": float((scored == truth)[inside].mean()),
        "coverage": float(((predicted != 255) & inside).sum() / inside.sum()),
        "area_share": float(inside.sum() / (truth != 255).sum()),
    }


def _scores(output: Path, scene: Path, offset: tuple[float, float, float], min_photos: int) -> dict:
    import rasterio

    from nerfseg_plugin.core.label_space import LabelSpace
    from nerfseg_plugin.scenegen.ortho_truth import load_ortho_truth

    truth, truth_height, grid = load_ortho_truth(scene)
    with rasterio.open(output / "labels.tif") as labels, rasterio.open(output / "dsm.tif") as dsm:
        predicted, height = labels.read(1), dsm.read(1)
    space = LabelSpace.load(scene / "classes.json")
    surveyed = _surveyed(scene, truth_height, grid, min_photos)
    both = (truth != 255) & (height != -9999.0)
    error = (height - offset[2] - truth_height)[both]
    return {
        "surveyed": _label_scores(predicted, truth, surveyed, space),
        "whole_truth_grid": _label_scores(predicted, truth, np.ones_like(surveyed), space),
        "dsm_median_abs_error_m": float(np.median(np.abs(error))),
        "dsm_median_error_m": float(np.median(error)),
        "dsm_p90_abs_error_m": float(np.quantile(np.abs(error), 0.9)),
        "where_wrong": _where_wrong(predicted, truth, height - offset[2], truth_height, surveyed & both),
    }


def _scores_at_product_gsd(output: Path, scene: Path, offset: tuple[float, float, float], min_photos: int) -> dict:
    """The default export (at the photos' GSD) against the truth's majority class in each of its pixels, and the
    truth resampled to that GSD: its majority classes scored against the truth at its own GSD.

    The truth raster is finer than the photos resolve (0.25 m against ~0.5 m on generated scenes), so at its GSD a
    product is also scored on detail no photo shows. Here each product pixel is compared with the most frequent
    class of the surveyed truth cells whose centres fall inside it (pixels holding none are not scored). The resampled
    truth gives every truth cell its product pixel's majority class and is scored against the truth on the surveyed
    area the product's grid covers: what a perfect map at the photos' GSD scores at the truth's. Not a strict bound
    (a model fitted to many views can resolve finer than one photo, e.g. thin road markings), but a reference for
    how much of the score at the truth's GSD depends on detail finer than the photos.
    """
    import rasterio

    from nerfseg_plugin.core.label_space import LabelSpace
    from nerfseg_plugin.scenegen.ortho_truth import load_ortho_truth

    truth, truth_height, grid = load_ortho_truth(scene)
    space = LabelSpace.load(scene / "classes.json")
    with rasterio.open(output / "labels.tif") as labels:
        predicted, transform = labels.read(1), labels.transform
    surveyed = _surveyed(scene, truth_height, grid, min_photos)
    keep = surveyed & (truth != 255)
    rows, cols = np.nonzero(keep)
    x = grid["x_min"] + (cols + 0.5) * grid["gsd"] + offset[0]
    y = grid["y_max"] - (rows + 0.5) * grid["gsd"] + offset[1]
    product_col = np.floor((x - transform.c) / transform.a).astype(np.int64)
    product_row = np.floor((y - transform.f) / transform.e).astype(np.int64)
    inside = (product_col >= 0) & (product_col < predicted.shape[1]) & (product_row >= 0)
    inside &= product_row < predicted.shape[0]
    cell = product_row[inside] * predicted.shape[1] + product_col[inside]
    counts = np.zeros((predicted.size, space.num_classes), dtype=np.int32)
    np.add.at(counts, (cell, truth[rows[inside], cols[inside]].astype(np.int64)), 1)
    scored = counts.sum(axis=1) > 0
    reference = np.where(scored, counts.argmax(axis=1), 255).astype(np.uint8)
    scores = _label_scores(predicted.reshape(-1), reference, scored, space)
    scores["area_share"] = float(keep.sum() / (truth != 255).sum())
    resampled = np.full_like(truth, 255)
    resampled[rows[inside], cols[inside]] = reference[cell]
    within = np.zeros_like(surveyed)
    within[rows[inside], cols[inside]] = True
    scores["resampled_truth"] = _label_scores(resampled, truth, within, space)
    return scores


def _where_wrong(
    predicted: np.ndarray, truth: np.ndarray, height: np.ndarray, truth_height: np.ndarray, area: np.ndarray
) -> dict:
    """Where the label ortho errs: pixel accuracy by distance to the nearest truth class border, and the DSM's
    median |height error| on wrong vs right pixels (a wrong surface height moves a label sideways in the ortho)."""
    from scipy import ndimage

    border = ndimage.maximum_filter(truth, size=3) != ndimage.minimum_filter(truth, size=3)  # a 3x3 class change
    distance = ndimage.distance_transform_edt(~border)
    valid = area & (predicted != 255)
    right = valid & (predicted == truth)
    bands = {"within_1px": (0, 1), "1_to_4px": (1, 4), "beyond_4px": (4, np.inf)}
    accuracy = {}
    for name, (low, high) in bands.items():
        band = valid & (distance >= low) & (distance < high)
        accuracy[name] = {"share": float(band.sum() / max(valid.sum(), 1)), "accuracy": float(right[band].mean())}
    error = np.abs(height - truth_height)
    return {
        "accuracy_by_border_distance": accuracy,
        "dsm_median_abs_error_right_m": float(np.median(error[right])),
        "dsm_median_abs_error_wrong_m": float(np.median(error[valid & ~right])),
    }


def main(bench: BenchExportGeo) -> None:
    from nerfseg_plugin.scenegen.ortho_truth import load_ortho_truth

    bench.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    config = bench.config or _train(bench.work_dir, bench.num_views, bench.image_size, bench.truth_gsd)
    if bench.config is None:
        print(f"scene + training: {time.perf_counter() - started:.0f} s")
    scene = _scene_of(config)
    offset = _ensure_georeference(scene, bench.utm_offset)
    _, _, grid = load_ortho_truth(scene)
    x_min, y_max, gsd = grid["x_min"] + offset[0], grid["y_max"] + offset[1], grid["gsd"]
    truth_bounds = [x_min, y_max - grid["height"] * gsd, x_min + grid["width"] * gsd, y_max]
    base = {"load_config": str(config), "tile_size": bench.tile_size, "min_photos": bench.min_photos}
    if bench.vertical_classes is not None:
        base["vertical_classes"] = list(bench.vertical_classes)

    default = _export({**base, "output_dir": str(bench.work_dir / "export_default")})
    truth = _export({**base, "output_dir": str(bench.work_dir / "export_truth"), "gsd": gsd, "bounds": truth_bounds})
    scores = _scores(bench.work_dir / "export_truth", scene, offset, bench.min_photos)
    scores["product_gsd"] = _scores_at_product_gsd(bench.work_dir / "export_default", scene, offset, bench.min_photos)
    centre_x, centre_y = 0.5 * (truth_bounds[0] + truth_bounds[2]), 0.5 * (truth_bounds[1] + truth_bounds[3])
    half = 0.5 * (truth_bounds[2] - truth_bounds[0]) * math.sqrt(bench.area_factor)
    large_bounds = [centre_x - half, centre_y - half, centre_x + half, centre_y + half]
    large = _export({**base, "output_dir": str(bench.work_dir / "export_large"), "gsd": gsd, "bounds": large_bounds})

    def row(name: str, summary: dict) -> str:
        g = summary["grid"]
        return (
            f"| {name} | {g['width']} x {g['height']} | {g['gsd']:.3f} | {summary['wall_s']:.1f} | "
            f"{summary['timings']['render_s']:.1f} | {summary['peak_rss_mib']:.0f} | {summary['points_written']} |"
        )

    print("\n| export | raster (px) | GSD (m) | wall (s) | ortho render (s) | peak RSS (MiB) | LAS points |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print(row("default (photo GSD, sparse-point extent)", default))
    print(row("truth grid", truth))
    print(row(f"{bench.area_factor:g}x area, same GSD", large))
    areas = {
        "surveyed": f"surveyed area (framed by >= {bench.min_photos} photos)",
        "whole_truth_grid": "whole truth grid (the generated town, beyond the photos too)",
    }
    areas["product_gsd"] = (
        f"default export at the photos' GSD ({default['grid']['gsd']:.3f}), surveyed truth's majority class per pixel"
    )
    for name, label in areas.items():
        part = scores[name]
        print(
            f"\nlabel ortho vs ortho truth, {label}, {part['area_share']:.0%} of the town: mIoU {part['miou']:.3f}, "
            f"pixel accuracy {part['pixel_accuracy']:.3f}, export coverage {part['coverage']:.3f}"
        )
        print("per-class IoU: " + ", ".join(f"{k} {v:.2f}" for k, v in part["iou"].items()))
    resampled = scores["product_gsd"]["resampled_truth"]
    print(
        f"\ntruth resampled to the photos' GSD (majority class per pixel of the default export) and scored at the "
        f"truth's GSD: mIoU {resampled['miou']:.3f}, pixel accuracy {resampled['pixel_accuracy']:.3f}"
    )
    print("per-class IoU: " + ", ".join(f"{k} {v:.2f}" for k, v in resampled["iou"].items()))
    print(
        f"DSM vs truth heights: median error {scores['dsm_median_error_m']:+.2f} m, median |error| "
        f"{scores['dsm_median_abs_error_m']:.2f} m, 90th percentile |error| {scores['dsm_p90_abs_error_m']:.2f} m"
    )
    wrong = scores["where_wrong"]
    bands = ", ".join(
        f"{name.replace('_', ' ')} of a truth border ({band['share']:.0%} of pixels): {band['accuracy']:.3f}"
        for name, band in wrong["accuracy_by_border_distance"].items()
    )
    print(f"surveyed-area pixel accuracy {bands}")
    print(
        f"DSM median |error| on wrongly labelled pixels {wrong['dsm_median_abs_error_wrong_m']:.2f} m, on right ones "
        f"{wrong['dsm_median_abs_error_right_m']:.2f} m"
    )
    report = {"config": str(config), "default": default, "truth": truth, "large": large, "scores": scores}
    (bench.work_dir / "bench_export_geo.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {bench.work_dir / 'bench_export_geo.json'}")


if __name__ == "__main__":
    main(tyro.cli(BenchExportGeo))
