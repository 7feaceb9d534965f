"""``rsseg-process-data``: pose aerial photos with pycolmap and write an rsseg scene with their sparse labels.

Example::

    rsseg-process-data --images raw/photos --labels raw/labels --classes raw/classes.json --output scenes/town
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import tyro
from rich.console import Console
from rich.markup import escape

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.process.config import ProcessDataConfig
from nerfseg_plugin.process.georeference import GeoreferenceError, georeference_reconstruction
from nerfseg_plugin.process.labels import ProcessingInputs, collect_inputs
from nerfseg_plugin.process.scene_writer import WriteSummary, check_output, clear_output, write_scene
from nerfseg_plugin.process.sfm import (
    RegistrationError,
    SfmResult,
    check_registration,
    extract_features,
    match_features,
    matching_method,
    reconstruct,
    select_device,
)

CONSOLE = Console(highlight=False, soft_wrap=True)  # soft wrap: logs keep whole lines
NUM_STAGES = 6


@contextmanager
def stage(index: int, title: str) -> Iterator[dict]:
    """Spinner while a stage runs, then one line with its result and duration (``info["done"]``)."""
    info: dict = {"done": ""}
    start = time.perf_counter()
    with CONSOLE.status(escape(f"[{index}/{NUM_STAGES}] {title}...")):
        yield info
    detail = f": {info['done']}" if info["done"] else ""
    line = escape(f"[{index}/{NUM_STAGES}] {title}{detail} ({time.perf_counter() - start:.1f} s)")
    CONSOLE.print(f"[green]✔[/green] {line}")


def _set_pycolmap_logging(verbose: bool) -> None:
    import pycolmap

    pycolmap.logging.minloglevel = 0 if verbose else 2  # 2: errors only


def run_sfm(config: ProcessDataConfig, inputs: ProcessingInputs, work_dir: Path, device: Any) -> SfmResult:
    """Stages 2-4: features, matches, incremental mapping; raises RegistrationError when too few photos pose."""
    database = work_dir / "database.db"
    method = matching_method(config, len(inputs.image_names), len(inputs.gps_names))
    with stage(2, f"Extracting SIFT features ({device.name.upper()})") as info:
        extract_features(config, inputs, database, device)
        info["done"] = f"{len(inputs.image_names)} photos"
    with stage(3, f"Matching photo pairs ({method})") as info:
        info["done"] = match_features(config, inputs, database, method, device)
    with stage(4, "Incremental mapping") as info:
        result = reconstruct(config, inputs, database, work_dir / "sparse")
        total = len(inputs.image_names)
        info["done"] = f"{len(result.registered)}/{total} photos ({len(result.registered) / total:.0%}) registered"
        if result.reconstruction is not None:
            info["done"] += (
                f", {result.reconstruction.num_points3D()} points, "
                f"reprojection error {result.reconstruction.compute_mean_reprojection_error():.2f} px"
            )
    check_registration(config, inputs, result, method)
    return result


def main(config: ProcessDataConfig) -> WriteSummary:
    """Run all stages; raises SceneFormatError, RegistrationError, FileExistsError or ValueError on bad input."""
    config.validate()
    check_output(config)
    device = select_device(config.use_gpu)
    _set_pycolmap_logging(config.verbose)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    # SfM works next to the output (big captures can outgrow /tmp); the scene is replaced only once SfM succeeded.
    with tempfile.TemporaryDirectory(prefix=f".{config.output.name}-sfm-", dir=config.output.parent) as work:
        with stage(1, "Checking photos, EXIF, label maps and classes.json") as info:
            inputs = collect_inputs(config, Path(work) / "annotations")
            inputs = stage_upright_photos(inputs, Path(work) / "upright")
            info["done"] = (
                f"{len(inputs.image_names)} photos ({len(inputs.gps_names)} with GPS), {len(inputs.supervision)} "
                f"training and {len(inputs.evaluation)} evaluation label maps, {inputs.label_space.num_classes} classes"
            )
        result = run_sfm(config, inputs, Path(work), device)
        _report_unregistered_labels(inputs, result)
        with stage(5, "Georeferencing") as info:
            georeference = georeference_reconstruction(config, inputs, result)
            info["done"] = (
                f"{georeference.crs} from {georeference.source}, {georeference.num_inliers} inliers, "
                f"residual RMS {georeference.residual_rms_m:.2f} m"
                if georeference is not None
                else "skipped (no GPS or GCPs; the scene keeps the SfM frame)"
            )
        with stage(6, f"Writing the scene to {config.output}") as info:
            clear_output(config.output)
            summary = write_scene(config, inputs, result, georeference)
            info["done"] = (
                f"{summary.frames} frames ({summary.supervision} with training labels, {summary.evaluation} with "
                f"evaluation labels), {summary.points} points"
            )
    first = summary.intrinsics[0]
    cameras = f"{len(summary.intrinsics)} PINHOLE cameras, first" if len(summary.intrinsics) > 1 else "PINHOLE"
    undistorted = " (lens distortion removed from images and labels)" if summary.undistorted else ""
    CONSOLE.print(
        f"[bold green]Scene ready:[/bold green] {escape(str(config.output))} — {cameras} {first['w']}x{first['h']}, "
        f"fx {first['fl_x']:.1f} fy {first['fl_y']:.1f}{undistorted}"
    )
    return summary


def stage_upright_photos(inputs: ProcessingInputs, folder: Path) -> ProcessingInputs:
    """Photos with an EXIF rotation are written upright to ``folder`` (the others linked), so that SfM, the scene
    and the label maps (drawn on the displayed photo) all see the same pixels. Unrotated captures pass unchanged."""
    from nerfseg_plugin.process.exif import open_upright_rgb

    rotated = set(inputs.rotated_names)
    if not rotated:
        return inputs
    folder.mkdir(parents=True)
    for name in inputs.image_names:
        source, target = inputs.image_dir / name, folder / name
        if name not in rotated:
            os.symlink(source.resolve(), target)
            continue
        upright = open_upright_rgb(source)
        if target.suffix.lower() in (".jpg", ".jpeg"):
            upright.save(target, quality=95, subsampling=0, exif=_exif_without_orientation(source))
        else:
            upright.save(target)
    CONSOLE.print(f"{len(rotated)} photo(s) with an EXIF rotation were turned upright for SfM and the scene")
    return replace(inputs, image_dir=folder, exif={n: replace(e, orientation=1) for n, e in inputs.exif.items()})


def _exif_without_orientation(path: Path) -> bytes:
    from PIL import Image

    from nerfseg_plugin.process.exif import ORIENTATION

    with Image.open(path) as image:
        exif = image.getexif()
    exif[ORIENTATION] = 1
    return exif.tobytes()


def _report_unregistered_labels(inputs: ProcessingInputs, result: SfmResult) -> None:
    failed = set(result.failed)
    for kind, labels in (("training", inputs.supervision), ("evaluation", inputs.evaluation)):
        lost = sorted(name for name in labels if name in failed)
        if lost:
            CONSOLE.print(
                f"[bold yellow]Warning:[/bold yellow] {len(lost)} {kind} label map(s) dropped because their photo did "
                f"not register: {escape(', '.join(str(labels[name]) for name in lost))}"
            )


def entrypoint() -> None:
    """Console-script entry point."""
    tyro.extras.set_accent_color("bright_yellow")
    config = tyro.cli(ProcessDataConfig)
    try:
        main(config)
    except (SceneFormatError, RegistrationError, GeoreferenceError, FileExistsError, ValueError) as err:
        CONSOLE.print(f"[bold red]rsseg-process-data failed:[/bold red] {escape(str(err))}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    entrypoint()
