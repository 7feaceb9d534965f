"""Writing the reconstruction as a scene: transforms.json, images, label maps, classes.json, sparse_pc.ply.

A georeferenced reconstruction is already in the metric, z-up scene frame and transforms.json records
``"georeference"`` (how scene coordinates map to the CRS). Otherwise the scene keeps COLMAP's world frame (no
``applied_transform``): ``rsseg-data`` orients aerial scenes itself from the cameras.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from nerfseg_plugin.core.scene_io import read_label_map, write_points
from nerfseg_plugin.process.config import ProcessDataConfig
from nerfseg_plugin.process.exif import open_upright_rgb
from nerfseg_plugin.process.georeference import Georeference
from nerfseg_plugin.process.labels import ProcessingInputs
from nerfseg_plugin.process.resample import FrameResampler
from nerfseg_plugin.process.sfm import SfmResult

IMAGES_DIR, SEMANTICS_DIR, COLMAP_DIR = "images", "semantics", "colmap"
TRANSFORMS_FILE, CLASSES_FILE, POINTS_FILE = "transforms.json", "classes.json", "sparse_pc.ply"
SCENE_ENTRIES = (IMAGES_DIR, SEMANTICS_DIR, COLMAP_DIR, TRANSFORMS_FILE, CLASSES_FILE, POINTS_FILE)
"""What a processed scene consists of: --overwrite removes these and nothing else."""
JPEG_QUALITY = 95


@dataclass
class WriteSummary:
    """What was written, for the final report."""

    frames: int = 0
    supervision: int = 0
    evaluation: int = 0
    points: int = 0
    undistorted: bool = False
    intrinsics: list[dict] = field(default_factory=list)


def check_output(config: ProcessDataConfig) -> None:
    """Refuse (before any work) a non-empty output without --overwrite, or one that holds the inputs."""
    output = config.output
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not config.overwrite:
        raise FileExistsError(f"{output} is not empty; pass --overwrite to replace the scene in it")
    owned = [(output / entry).resolve() for entry in SCENE_ENTRIES]
    for source in (config.images, config.labels, config.eval_labels, config.classes):
        if source is not None and any(source.resolve().is_relative_to(entry) for entry in owned):
            raise FileExistsError(f"input {source} lies inside the output scene {output}; write the scene elsewhere")


def clear_output(output: Path) -> None:
    """Remove a previous scene's own entries (after SfM succeeded, so a failed run destroys nothing)."""
    for name in SCENE_ENTRIES:
        entry = output / name
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.exists():
            entry.unlink()


def opengl_camera_to_world(cam_from_world: np.ndarray) -> np.ndarray:
    """COLMAP world-to-camera ``[3, 4]`` (OpenCV axes) -> nerfstudio camera-to-world ``[4, 4]`` (OpenGL axes)."""
    w2c = np.eye(4)
    w2c[:3] = cam_from_world
    c2w = np.linalg.inv(w2c)
    c2w[:3, 1:3] *= -1  # camera y down, z forward -> y up, z backward
    return c2w


def write_scene(
    config: ProcessDataConfig, inputs: ProcessingInputs, result: SfmResult, georeference: Georeference | None = None
) -> WriteSummary:
    """Write every registered photo (file-name order) with its labels; returns what was written."""
    output = config.output
    (output / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (output / SEMANTICS_DIR).mkdir(exist_ok=True)
    reconstruction = result.reconstruction
    by_name = {reconstruction.images[i].name: reconstruction.images[i] for i in reconstruction.reg_image_ids()}
    used_cameras = sorted({image.camera_id for image in by_name.values()})
    resamplers = {
        camera_id: FrameResampler(
            reconstruction.cameras[camera_id],
            config.downscale,
            config.distortion_tolerance_px,
            inputs.label_space.ignore_index,
            config.max_image_size,
        )
        for camera_id in used_cameras
    }
    summary = WriteSummary(undistorted=any(r.undistort for r in resamplers.values()))
    frames = []
    for name in result.registered:
        image = by_name[name]
        resampler = resamplers[image.camera_id]
        _write_image(inputs.image_dir / name, output / IMAGES_DIR / name, resampler)
        frame = {
            "file_path": f"{IMAGES_DIR}/{name}",
            "transform_matrix": opengl_camera_to_world(image.cam_from_world().matrix()).tolist(),
            "colmap_im_id": int(image.image_id),
        }
        if len(resamplers) > 1:
            frame.update(resampler.intrinsics.to_json())
        for key, labels in (("semantic_path", inputs.supervision), ("semantic_eval_path", inputs.evaluation)):
            if name in labels:
                target = f"{SEMANTICS_DIR}/{Path(name).stem}.png"
                label_map = resampler.labels(read_label_map(labels[name]))
                Image.fromarray(label_map).save(output / target)  # 2-D uint8: mode L
                frame[key] = target
        summary.supervision += "semantic_path" in frame
        summary.evaluation += "semantic_eval_path" in frame
        frames.append(frame)
    # The world frame is COLMAP's (or the georeferenced one): say so, or nerfstudio assumes an axis swap and its
    # dataparser_transforms.json would no longer map this file's coordinates.
    meta: dict = {"camera_model": "PINHOLE", "applied_transform": np.eye(4)[:3].tolist()}
    if len(resamplers) == 1:
        meta.update(next(iter(resamplers.values())).intrinsics.to_json())
    if georeference is not None:
        meta["georeference"] = georeference.to_json()
    meta.update({"ply_file_path": POINTS_FILE, "frames": frames})
    (output / TRANSFORMS_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    inputs.label_space.save(output / CLASSES_FILE)
    summary.points = _write_points(reconstruction, output / POINTS_FILE)
    (output / COLMAP_DIR / "sparse" / "0").mkdir(parents=True)
    reconstruction.write(output / COLMAP_DIR / "sparse" / "0")  # the distorted model, for COLMAP tools
    summary.frames = len(frames)
    summary.intrinsics = [r.intrinsics.to_json() for r in resamplers.values()]
    return summary


def _write_image(source: Path, target: Path, resampler: FrameResampler) -> None:
    if not resampler.changes_pixels:
        shutil.copy2(source, target)  # byte-identical, EXIF included
        return
    if resampler.undistort:
        written = Image.fromarray(resampler.image(np.asarray(open_upright_rgb(source))))
    else:
        # Only a resize: JPEG decoding at a reduced scale (draft) keeps 20 MP photos out of memory.
        size = (resampler.intrinsics.width, resampler.intrinsics.height)
        image = open_upright_rgb(source, max(size))
        scale_x = image.width / resampler.camera.width
        box = tuple(
            c * scale_x if i % 2 == 0 else c * image.height / resampler.camera.height
            for i, c in enumerate(resampler.crop)
        )
        written = image.resize(size, Image.Resampling.BOX, box=box)
    if target.suffix.lower() in (".jpg", ".jpeg"):
        written.save(target, quality=JPEG_QUALITY, subsampling=0)
    else:
        written.save(target)


def _write_points(reconstruction, path: Path) -> int:
    """The reconstruction's points as the PLY that rsseg-data reads."""
    points = list(reconstruction.points3D.values())
    xyz = np.array([p.xyz for p in points], dtype=np.float32).reshape(-1, 3)
    write_points(path, xyz, np.array([p.color for p in points], dtype=np.uint8).reshape(-1, 3))
    return len(points)
