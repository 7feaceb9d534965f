"""View consistency of folders of label maps (``labels/<stem>.png`` of a scene's evaluation views), with the point
z-buffer visibility test (the test ``run_matrix`` gives every method, so a 3D run's report, its 2D appearance model's
maps and a 2D baseline compare like with like).

    python benchmarks/label_map_consistency.py --data SCENE \
        --folders RUN/semantic_report RUN/semantic_report/appearance_2d
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from nerfseg_plugin.baselines.cli import point_zbuffer_consistency
from nerfseg_plugin.baselines.data import BaselineScene, evaluation_views, load_scene
from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.scene_io import read_label_map


@dataclass
class Args:
    data: Path
    """The scene (transforms.json with semantic_eval_path frames and a sparse point cloud)."""
    folders: tuple[Path, ...]
    """Folders holding labels/<stem>.png (or the labels folder itself), one row each."""
    depth_tolerance: float = 0.03
    """Relative depth tolerance of the visibility test."""
    zbuffer_cell: int = 8
    """Pixel block size of the point z-buffer."""


def score_folder(args: Args, scene: BaselineScene, folder: Path) -> dict[str, float]:
    """Consistency of the folder's maps and of the ground truth of the same views."""
    labels_dir = folder / "labels" if (folder / "labels").is_dir() else folder
    predictions, truth = {}, {}
    for index, view in evaluation_views(scene):
        path = labels_dir / f"{view.stem}.png"
        if path.is_file():
            predictions[index], truth[index] = read_label_map(path), view.labels
    if not predictions:
        raise SceneFormatError(labels_dir, "holds no label map of an evaluation view")
    consistency, reference = point_zbuffer_consistency(
        scene, predictions, truth, args.depth_tolerance, args.zbuffer_cell
    )
    return {
        "views": len(predictions),
        "consistent_share": consistency.consistent_share,
        "ground_truth_consistent_share": reference.consistent_share,
    }


def main(args: Args) -> None:
    print("| label maps | views | view consistency (GT) |")
    print("|---|---:|---:|")
    scene = load_scene(args.data)
    if scene.points is None:
        raise SceneFormatError(args.data, "the scene has no sparse point cloud: no view consistency")
    for folder in args.folders:
        row = score_folder(args, scene, folder)
        print(
            f"| {folder} | {row['views']} | {100 * row['consistent_share']:.1f} "
            f"({100 * row['ground_truth_consistent_share']:.1f}) |"
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
