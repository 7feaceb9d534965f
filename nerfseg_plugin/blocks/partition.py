"""Ground-plane partition of a scene into overlapping blocks, each written as its own rsseg scene folder.

Every block shares the full scene's model frame: the full scene is parsed once with the method's own dataparser
(aerial orientation, centring, scaling), and each block's transforms.json and sparse_pc.ply hold poses and points
already in that frame. Blocks then train with orientation, centring and scaling switched off
(``BLOCK_DATAPARSER_ARGS``), so a Gaussian at model position p means the same place in every block and the merge
is a concatenation.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfseg_plugin.core.atomic import write_json_atomic
from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.scene_io import load_transforms, read_json, write_points
from nerfseg_plugin.data.scene_validation import collect_frame_labels

PLAN_FILE = "partition.json"
BLOCK_SCENE_DIR = "scene"
BLOCK_DATAPARSER_ARGS = (
    "--pipeline.datamanager.dataparser.orientation-method",
    "none",
    "--pipeline.datamanager.dataparser.center-method",
    "none",
    "--pipeline.datamanager.dataparser.auto-scale-poses",
    "False",
    "--pipeline.datamanager.dataparser.scale-factor",
    "1.0",
    "--pipeline.datamanager.dataparser.downscale-factor",
    "1",
)
"""Block poses are already in the full scene's model frame: the block's dataparser must leave them as they are."""


@dataclass(frozen=True)
class Grid:
    """An nx x ny grid of equal cells over the ground bounds (model x, y; z is up after orientation)."""

    origin: tuple[float, float]
    cell_size: tuple[float, float]
    shape: tuple[int, int]
    overlap: float

    @property
    def num_blocks(self) -> int:
        return self.shape[0] * self.shape[1]

    def cell_of(self, xy: np.ndarray) -> np.ndarray:
        """Owning block of each ground position: its core cell, outer cells extended to infinity."""
        ix = np.clip(np.floor((xy[:, 0] - self.origin[0]) / self.cell_size[0]), 0, self.shape[0] - 1)
        iy = np.clip(np.floor((xy[:, 1] - self.origin[1]) / self.cell_size[1]), 0, self.shape[1] - 1)
        return (iy * self.shape[0] + ix).astype(np.int64)

    def expanded_bounds(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(min xy, max xy) of a block's core cell grown by ``overlap`` of a cell on every side."""
        ix, iy = block % self.shape[0], block // self.shape[0]
        size = np.array(self.cell_size)
        low = np.array(self.origin) + np.array([ix, iy]) * size
        margin = self.overlap * size
        return low - margin, low + size + margin

    def in_expanded(self, block: int, xy: np.ndarray) -> np.ndarray:
        low, high = self.expanded_bounds(block)
        # Outer cells' expanded bounds also reach to infinity, like their ownership.
        ix, iy = block % self.shape[0], block // self.shape[0]
        low = np.where([ix == 0, iy == 0], -np.inf, low)
        high = np.where([ix == self.shape[0] - 1, iy == self.shape[1] - 1], np.inf, high)
        return np.all((xy >= low) & (xy <= high), axis=1)

    def to_json(self) -> dict:
        return {
            "origin": list(self.origin),
            "cell_size": list(self.cell_size),
            "shape": list(self.shape),
            "overlap": self.overlap,
        }

    @classmethod
    def from_json(cls, data: dict) -> Grid:
        return cls(tuple(data["origin"]), tuple(data["cell_size"]), tuple(data["shape"]), data["overlap"])


def grid_for(
    low: np.ndarray, high: np.ndarray, num_blocks: int | None, block_size: float | None, overlap: float
) -> Grid:
    """Cells of (about) ``block_size`` model units, or the factorisation of ``num_blocks`` closest to square
    cells."""
    extent = np.maximum(high - low, 1e-6)
    if block_size is not None:
        shape = (max(1, math.ceil(extent[0] / block_size)), max(1, math.ceil(extent[1] / block_size)))
    elif num_blocks is not None:
        pairs = [(nx, num_blocks // nx) for nx in range(1, num_blocks + 1) if num_blocks % nx == 0]
        shape = min(pairs, key=lambda p: abs(math.log((extent[0] / p[0]) / (extent[1] / p[1]))))
    else:
        raise ValueError("give num_blocks or block_size")
    cell = (float(extent[0] / shape[0]), float(extent[1] / shape[1]))
    return Grid((float(low[0]), float(low[1])), cell, shape, overlap)


@dataclass(frozen=True)
class SceneFrames:
    """The full scene in its model frame: per-frame camera and label files, and the sparse points."""

    camera_to_worlds: np.ndarray  # [N, 3, 4], OpenGL, model frame
    intrinsics: np.ndarray  # [N, 4]: fx, fy, cx, cy
    sizes: np.ndarray  # [N, 2]: width, height
    image_paths: list[Path]
    supervision_paths: list[Path | None]
    evaluation_paths: list[Path | None]
    points: np.ndarray  # [P, 3], model frame
    colors: np.ndarray  # [P, 3] uint8
    dataparser_transform: np.ndarray  # [3, 4]
    dataparser_scale: float
    camera_model: str


def load_scene_frames(dataparser_config) -> SceneFrames:
    """Parse the full scene with the method's dataparser (orientation etc. as in a single-model run)."""
    config = copy.deepcopy(dataparser_config)
    config.downscale_factor = 1
    parser = config.setup()
    by_image: dict[Path, tuple] = {}
    outputs = None
    for split in ("train", "val"):
        outputs = parser.get_dataparser_outputs(split)
        cameras = outputs.cameras
        distortion = cameras.distortion_params
        if distortion is not None and bool((distortion.abs() > 1e-8).any()):
            raise SceneFormatError(config.data, "distorted cameras: blocks need an undistorted (PINHOLE) scene")
        for i, name in enumerate(outputs.image_filenames):
            intrinsics = [float(cameras.fx[i]), float(cameras.fy[i]), float(cameras.cx[i]), float(cameras.cy[i])]
            size = [int(cameras.width[i]), int(cameras.height[i])]
            by_image.setdefault(Path(name).resolve(), (cameras.camera_to_worlds[i].numpy(), intrinsics, size))
        if split == "train":
            points = outputs.metadata.get("points3D_xyz")
            colors = outputs.metadata.get("points3D_rgb")
            transform, scale = outputs.dataparser_transform.numpy(), float(outputs.dataparser_scale)
    if points is None or len(points) == 0:
        raise SceneFormatError(config.data, "blocks need the scene's sparse points (ply_file_path) for visibility")
    meta, scene_dir = load_transforms(config.data)
    labels = {f.image_path: f for f in collect_frame_labels(meta, scene_dir, scene_dir / "transforms.json")}
    images = [path for path in labels if path in by_image]
    return SceneFrames(
        camera_to_worlds=np.stack([by_image[p][0] for p in images]),
        intrinsics=np.array([by_image[p][1] for p in images]),
        sizes=np.array([by_image[p][2] for p in images]),
        image_paths=images,
        supervision_paths=[labels[p].supervision_path for p in images],
        evaluation_paths=[labels[p].evaluation_path for p in images],
        points=points.numpy().astype(np.float64),
        colors=colors.numpy().astype(np.uint8),
        dataparser_transform=transform,
        dataparser_scale=scale,
        camera_model=meta.get("camera_model", "OPENCV"),
    )


def visible_points(frames: SceneFrames, points: np.ndarray) -> np.ndarray:
    """[N cameras, P points] bool: the point projects inside the image in front of the camera (pinhole,
    OpenGL: the camera looks along -z, image y grows downwards)."""
    rotation, origin = frames.camera_to_worlds[:, :, :3], frames.camera_to_worlds[:, :, 3]
    local = np.einsum("nji,npj->npi", rotation, points[None] - origin[:, None])
    depth = -local[..., 2]
    fx, fy, cx, cy = (frames.intrinsics[:, k, None] for k in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        u = fx * local[..., 0] / depth + cx
        v = -fy * local[..., 1] / depth + cy
    width, height = frames.sizes[:, 0, None], frames.sizes[:, 1, None]
    return (depth > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)


def assign_cameras(
    frames: SceneFrames, grid: Grid, min_visible_points: int, min_visible_share: float
) -> list[list[int]]:
    """Per block, the cameras that see at least ``min_visible_points`` of its sparse points (all of them when the
    block has fewer) and, unless labeled, whose visible sparse points lie at least ``min_visible_share`` in the
    block (VastGaussian's visibility-based camera selection takes a camera when the region covers > 25 % of its
    image; the share of its sparse points stands in for that area: a view that shows the block in a corner adds
    little to it but its whole image to the block's memory). Labeled views join every block they see; a view that
    no block takes under the share joins the one holding most of what it sees, so no photo is dropped."""
    visible = visible_points(frames, frames.points)
    labeled = np.asarray([path is not None for path in frames.supervision_paths])
    seen_per_camera = np.maximum(visible.sum(axis=1), 1)
    sees, share = [], []
    for block in range(grid.num_blocks):
        inside = grid.in_expanded(block, frames.points[:, :2])
        needed = max(1, min(min_visible_points, int(inside.sum())))
        counts = visible[:, inside].sum(axis=1)
        sees.append(counts >= needed)
        share.append(counts / seen_per_camera)
    sees_all, share_all = np.stack(sees), np.stack(share)  # [blocks, cameras]
    member = sees_all & ((share_all >= min_visible_share) | labeled[None])
    orphans = np.flatnonzero(~member.any(axis=0) & sees_all.any(axis=0))
    member[np.argmax(np.where(sees_all, share_all, -1.0)[:, orphans], axis=0), orphans] = True
    return [np.flatnonzero(row).tolist() for row in member]


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def write_block_scene(
    frames: SceneFrames, cameras: list[int], point_mask: np.ndarray, classes_file: Path, folder: Path
) -> Path:
    """A scene folder whose transforms.json points at the original images and labels (relative paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in cameras:
        pose = np.eye(4)
        pose[:3] = frames.camera_to_worlds[i]
        fx, fy, cx, cy = frames.intrinsics[i]
        entry = {
            "file_path": _relative(frames.image_paths[i], folder),
            "transform_matrix": pose.tolist(),
            "fl_x": fx,
            "fl_y": fy,
            "cx": cx,
            "cy": cy,
            "w": int(frames.sizes[i, 0]),
            "h": int(frames.sizes[i, 1]),
        }
        if frames.supervision_paths[i] is not None:
            entry["semantic_path"] = _relative(frames.supervision_paths[i], folder)
        if frames.evaluation_paths[i] is not None:
            entry["semantic_eval_path"] = _relative(frames.evaluation_paths[i], folder)
        entries.append(entry)
    write_points(folder / "sparse_pc.ply", frames.points[point_mask], frames.colors[point_mask])
    (folder / "classes.json").write_bytes(classes_file.read_bytes())
    transforms = {"camera_model": frames.camera_model, "ply_file_path": "sparse_pc.ply", "frames": entries}
    write_json_atomic(folder / "transforms.json", transforms)
    return folder


def partition_scene(
    dataparser_config,
    output_dir: Path,
    *,
    num_blocks: int | None,
    block_size: float | None,
    overlap: float,
    min_visible_points: int,
    min_visible_share: float,
) -> dict:
    """Write DIR/blocks/<i>/scene for every block and DIR/partition.json (the plan the merge reads)."""
    frames = load_scene_frames(dataparser_config)
    scene = Path(dataparser_config.data)
    low, high = frames.points[:, :2].min(axis=0), frames.points[:, :2].max(axis=0)
    # Block size is given in metres; the model frame is the file's frame times the dataparser's scale.
    size = None if block_size is None else block_size * frames.dataparser_scale
    grid = grid_for(low, high, num_blocks, size, overlap)
    assignment = assign_cameras(frames, grid, min_visible_points, min_visible_share)
    blocks = []
    for block, cameras in enumerate(assignment):
        names = [frames.image_paths[i].name for i in cameras]
        if not any(frames.supervision_paths[i] is not None for i in cameras):
            raise SceneFormatError(
                scene / "transforms.json",
                f"block {block} of {grid.num_blocks} is seen by no labeled view ({len(cameras)} views see it): "
                "use fewer or larger blocks, or label a view over it",
            )
        point_mask = grid.in_expanded(block, frames.points[:, :2])
        folder = write_block_scene(
            frames,
            cameras,
            point_mask,
            scene / dataparser_config.classes_file,
            output_dir / "blocks" / str(block) / BLOCK_SCENE_DIR,
        )
        blocks.append(
            {
                "index": block,
                "scene": str(folder.resolve()),
                "views": names,
                "labeled_views": [frames.image_paths[i].name for i in cameras if frames.supervision_paths[i]],
                "points": int(point_mask.sum()),
            }
        )
    plan = {
        "scene": str(scene.resolve()),
        "grid": grid.to_json(),
        "dataparser_transform": frames.dataparser_transform.tolist(),
        "dataparser_scale": frames.dataparser_scale,
        "num_views": len(frames.image_paths),
        "camera_selection": {"min_visible_points": min_visible_points, "min_visible_share": min_visible_share},
        "blocks": blocks,
    }
    write_json_atomic(output_dir / PLAN_FILE, plan)
    return plan


def load_plan(output_dir: Path) -> dict:
    plan = read_json(output_dir / PLAN_FILE, "block plan")
    if not isinstance(plan, dict):
        raise SceneFormatError(output_dir / PLAN_FILE, "the block plan must be a JSON object")
    return plan
