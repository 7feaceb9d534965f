"""Put a loaded run back into the frame its checkpoint was trained in.

``eval_setup`` parses the scene again, so the dataparser transform and the cameras it gives follow the scene *as it
is now*. When the scene changed since training, they no longer match the checkpoint: adding a georeference to
transforms.json (a surveyor's usual order: train, then tie the block to the map) turns the ``aerial`` orientation's
estimated vertical into the georeference's exact one, and a 0.17 degree tilt moved a 180 m town's label ortho by
~0.35 m (1.4 px at 0.25 m; downtown orbit s61: 0.733 against 0.786 mIoU). The run's own
``dataparser_transforms.json`` records the frame it was trained in; this module maps the parsed cameras and sparse
points into it and makes the map frame use it (rsseg-export-geo). The view renderers (rsseg-eval,
rsseg-export-labels) hold camera copies built when the datamanager was set up, so they warn instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.data.georeference import scene_to_model_matrix


def read_trained_transform(run_dir: Path) -> tuple[np.ndarray, float] | None:
    """(3x4 transform, scale) of ``run_dir/dataparser_transforms.json``, or None without that file."""
    path = run_dir / "dataparser_transforms.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        transform = np.asarray(saved["transform"], dtype=np.float64)[:3, :4]
        scale = float(saved["scale"])
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise SceneFormatError(path, f"needs 'transform' (3x4) and 'scale': {err}") from None
    if transform.shape != (3, 4) or not scale > 0:
        raise SceneFormatError(path, "needs a 3x4 'transform' and a positive 'scale'")
    return transform, scale


def parsed_to_trained(
    parsed_transform: np.ndarray, parsed_scale: float, trained_transform: np.ndarray, trained_scale: float
) -> np.ndarray | None:
    """4x4 similarity from the freshly parsed model frame to the trained one; None when they agree."""
    parsed = scene_to_model_matrix(parsed_transform, parsed_scale)
    trained = scene_to_model_matrix(trained_transform, trained_scale)
    correction = trained @ np.linalg.inv(parsed)
    if np.allclose(correction, np.eye(4), atol=1e-7):
        return None
    return correction


def trained_frame_differs(pipeline, run_dir: Path) -> bool:
    """True when the loaded pipeline's parsed frame is not the one its checkpoint was trained in."""
    trained = read_trained_transform(run_dir)
    if trained is None:
        return False
    outputs = pipeline.datamanager.train_dataparser_outputs
    parsed = outputs.dataparser_transform.detach().cpu().double().numpy()
    return parsed_to_trained(parsed, float(outputs.dataparser_scale), *trained) is not None


def changed_scene_warning(run_dir: Path) -> str:
    """What rsseg-eval / rsseg-export-labels say when the scene's frame moved since training."""
    return (
        f"[bold yellow]The scene's frame changed since training (a georeference added or the poses edited?): it no "
        f"longer matches {run_dir / 'dataparser_transforms.json'}, so views are rendered from cameras moved against "
        f"the checkpoint. Revert the scene's transforms.json or retrain; rsseg-export-geo corrects for this itself."
    )


def align_to_trained_frame(pipeline, run_dir: Path) -> bool:
    """Move the pipeline's training cameras and sparse points into the checkpoint's frame and record its transform
    as the dataparser's; True when the frames differed (nothing changes otherwise)."""
    trained = read_trained_transform(run_dir)
    if trained is None:
        return False
    outputs = pipeline.datamanager.train_dataparser_outputs
    correction = parsed_to_trained(
        outputs.dataparser_transform.detach().cpu().double().numpy(), float(outputs.dataparser_scale), *trained
    )
    if correction is None:
        return False
    linear = correction[:3, :3]
    scale = float(np.cbrt(np.linalg.det(linear)))
    rotation, shift = linear / scale, correction[:3, 3]
    cameras = pipeline.datamanager.train_dataset.cameras
    c2w = cameras.camera_to_worlds.detach().cpu().double().numpy()
    moved = np.concatenate([rotation @ c2w[:, :, :3], (linear @ c2w[:, :, 3:]) + shift[:, None]], axis=-1)
    cameras.camera_to_worlds = torch.as_tensor(moved, dtype=cameras.camera_to_worlds.dtype).to(
        cameras.camera_to_worlds.device
    )
    points = outputs.metadata.get("points3D_xyz")
    if points is not None:
        xyz = points.detach().cpu().double().numpy() @ linear.T + shift
        outputs.metadata["points3D_xyz"] = torch.as_tensor(xyz, dtype=points.dtype)
    outputs.dataparser_transform = torch.as_tensor(trained[0], dtype=outputs.dataparser_transform.dtype)
    outputs.dataparser_scale = trained[1]
    return True
