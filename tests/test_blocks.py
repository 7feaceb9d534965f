"""rsseg-train-blocks on a tiny scene: partition, shared model frame, merge ownership and loading, Ray retries."""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nerfseg_plugin.blocks.cli import TrainBlocks
from nerfseg_plugin.blocks.partition import Grid, SceneFrames, assign_cameras, load_plan, partition_scene
from nerfseg_plugin.blocks.training import ATTEMPTS_FILE, BlockJob, attempts_of

METHOD = "rsseg-splat-lite"


def _method_config():
    from nerfstudio.configs.method_configs import all_methods

    return copy.deepcopy(all_methods[METHOD])


def _dataparser(scene: Path):
    dataparser = _method_config().pipeline.datamanager.dataparser
    dataparser.data = scene
    return dataparser


@pytest.fixture(scope="module")
def partitioned(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("blocks")
    plan = partition_scene(
        _dataparser(tiny_scene),
        output,
        num_blocks=2,
        block_size=None,
        overlap=0.2,
        min_visible_points=20,
        min_visible_share=0.0,  # every camera that sees a block: the rule the next test checks independently
    )
    return output, plan


def _full_outputs(scene: Path):
    return _dataparser(scene).setup().get_dataparser_outputs("train")


def _block_outputs(block_scene: Path):
    dataparser = replace(
        _dataparser(block_scene),
        orientation_method="none",
        center_method="none",
        auto_scale_poses=False,
        scale_factor=1.0,
        downscale_factor=1,
    )
    return dataparser.setup().get_dataparser_outputs("train")


def test_partition_puts_every_camera_that_sees_a_block_in_it(partitioned, tiny_scene: Path) -> None:
    output, plan = partitioned
    full = _full_outputs(tiny_scene)
    points = full.metadata["points3D_xyz"].numpy().astype(np.float64)
    grid = Grid.from_json(plan["grid"])
    assert grid.num_blocks == 2 == len(plan["blocks"])
    cameras = full.cameras
    for block in plan["blocks"]:
        inside = points[grid.in_expanded(block["index"], points[:, :2])]
        assert block["points"] == len(inside) > 0
        needed = min(20, len(inside))
        for i, name in enumerate(full.image_filenames):
            # Independent projection: world-to-camera from the inverted pose, OpenGL camera looking along -z.
            pose = np.eye(4)
            pose[:3] = cameras.camera_to_worlds[i].numpy()
            local = (np.linalg.inv(pose) @ np.c_[inside, np.ones(len(inside))].T).T
            depth = -local[:, 2]
            u = float(cameras.fx[i]) * local[:, 0] / depth + float(cameras.cx[i])
            v = -float(cameras.fy[i]) * local[:, 1] / depth + float(cameras.cy[i])
            sees = (depth > 0) & (u >= 0) & (u < int(cameras.width[i])) & (v >= 0) & (v < int(cameras.height[i]))
            assert (Path(name).name in block["views"]) == (int(sees.sum()) >= needed), (block["index"], name)
        written = json.loads((Path(block["scene"]) / "transforms.json").read_text())
        assert sorted(Path(f["file_path"]).name for f in written["frames"]) == sorted(block["views"])
        assert block["labeled_views"], "labeled views go to every block they see"
    assert load_plan(output) == plan


def _nadir_strip(centres: list[float], labeled: list[bool]) -> SceneFrames:
    """Nadir cameras 1 m above a row of 100 ground points (x 0.01 .. 1.99), each seeing a 1 m wide strip."""
    count = len(centres)
    poses = np.zeros((count, 3, 4))
    poses[:, :, :3] = np.eye(3)  # OpenGL: looking along -z, i.e. straight down
    poses[:, :, 3] = [[x, 0.5, 1.0] for x in centres]
    points = np.stack([np.arange(100) * 0.02 + 0.01, np.full(100, 0.5), np.zeros(100)], axis=1)
    return SceneFrames(
        camera_to_worlds=poses,
        intrinsics=np.tile([100.0, 100.0, 50.0, 50.0], (count, 1)),
        sizes=np.tile([100, 100], (count, 1)),
        image_paths=[Path(f"{i}.png") for i in range(count)],
        supervision_paths=[Path(f"{i}_labels.png") if flag else None for i, flag in enumerate(labeled)],
        evaluation_paths=[None] * count,
        points=points,
        colors=np.zeros((100, 3), np.uint8),
        dataparser_transform=np.eye(4)[:3],
        dataparser_scale=1.0,
        camera_model="PINHOLE",
    )


def test_camera_selection_keeps_views_that_show_a_block_only_in_a_corner_out() -> None:
    # Two blocks split at x = 1 (no overlap). Camera 0 sees only block 0, camera 1 both halves, camera 2 (x 0.85
    # .. 1.85) 8 of its 50 points in block 0 (16 %), camera 3 the same strip but labeled.
    frames = _nadir_strip([0.5, 1.0, 1.35, 1.35], [False, False, False, True])
    grid = Grid(origin=(0.0, 0.0), cell_size=(1.0, 1.0), shape=(2, 1), overlap=0.0)
    every_view_that_sees = assign_cameras(frames, grid, min_visible_points=5, min_visible_share=0.0)
    assert every_view_that_sees == [[0, 1, 2, 3], [1, 2, 3]]
    # A 25 % share: camera 2 leaves block 0; the labeled camera 3 stays in every block it sees.
    assert assign_cameras(frames, grid, min_visible_points=5, min_visible_share=0.25) == [[0, 1, 3], [1, 2, 3]]
    # A share no block reaches for camera 1 (50 / 50): it still joins one block, never none.
    strict = assign_cameras(frames, grid, min_visible_points=5, min_visible_share=0.9)
    assert sorted(i for block in strict for i in block if i == 1) == [1]
    assert 0 in strict[0] and 2 in strict[1] and all(3 in block for block in strict)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_blocks": 2, "min_visible_share": 1.5}, "--min-visible-share must be in [0, 1], got 1.5"),
        ({"num_blocks": 2, "overlap": 1.0}, "--overlap must be in [0, 1), got 1.0"),
        ({"num_blocks": 2, "block_size": 50.0}, "give exactly one of --num-blocks and --block-size"),
    ],
)
def test_bad_options_stop_before_anything_is_written(tiny_scene: Path, tmp_path: Path, options, message) -> None:
    output = tmp_path / "blocks"
    with pytest.raises(SystemExit, match=re.escape(message)):
        TrainBlocks(data=tiny_scene, output_dir=output, **options).main()
    assert not output.exists()


def test_blocks_share_the_full_scene_model_frame(partitioned, tiny_scene: Path) -> None:
    _, plan = partitioned
    full = _full_outputs(tiny_scene)
    full_poses = {Path(n).name: full.cameras.camera_to_worlds[i] for i, n in enumerate(full.image_filenames)}
    full_points = full.metadata["points3D_xyz"]
    for block in plan["blocks"]:
        outputs = _block_outputs(Path(block["scene"]))
        for i, name in enumerate(outputs.image_filenames):
            torch.testing.assert_close(
                outputs.cameras.camera_to_worlds[i], full_poses[Path(name).name], atol=1e-5, rtol=0
            )
        # Every block point is a full-scene point at the same model coordinates.
        block_points = outputs.metadata["points3D_xyz"]
        distances = (
            torch.cdist(block_points[:200], full_points, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
        )
        assert float(distances.max()) < 1e-5


def _fake_block_run(block: dict, job: BlockJob, seed: int) -> None:
    """An untrained pipeline on the block's scene saved in ns-train's layout (config.yml + checkpoint)."""
    from nerfstudio.engine.optimizers import Optimizers

    torch.manual_seed(seed)
    config = _method_config()
    scene = Path(block["scene"])
    config.data = scene
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.dataparser = replace(
        _dataparser(scene), orientation_method="none", center_method="none", auto_scale_poses=False
    )
    config.output_dir, config.experiment_name, config.timestamp = job.block_dir, "train", "block"
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    with torch.no_grad():  # distinct features and decoders per block, as after training
        pipeline.model.gauss_params["semantic_features"].normal_()
        pipeline.model.semantic_decoder.mlp.layers[0].weight.normal_()
        pipeline.model.gauss_params["opacities"].fill_(2.0)  # opaque, as trained surfaces are
    optimizers = Optimizers(copy.deepcopy(config.optimizers), pipeline.get_param_groups())
    config.get_base_dir().mkdir(parents=True)
    config.save_config()
    checkpoint = job.run_dir / "nerfstudio_models" / "step-000000029.ckpt"
    checkpoint.parent.mkdir()
    state = {k: v.state_dict() for k, v in optimizers.optimizers.items()}
    torch.save({"step": 29, "pipeline": pipeline.state_dict(), "optimizers": state, "scalers": {}}, checkpoint)


@pytest.mark.slow
def test_merge_keeps_each_gaussian_once_and_loads_in_export_labels(partitioned, tmp_path: Path) -> None:
    from nerfseg_plugin.blocks.merge import block_gaussians, merge_blocks
    from nerfseg_plugin.export.cli import ExportLabels

    output, plan = partitioned
    command = TrainBlocks(data=Path(plan["scene"]), output_dir=output, num_blocks=2)
    results = []
    for block, job in zip(plan["blocks"], command.jobs(plan), strict=True):
        _fake_block_run(block, job, seed=block["index"])
        checkpoint = next((job.run_dir / "nerfstudio_models").glob("*.ckpt"))
        results.append({"checkpoint": str(checkpoint), "config": str(job.run_dir / "config.yml")})
    merged = merge_blocks(plan, results, output, _dataparser(Path(plan["scene"])))

    grid = Grid.from_json(plan["grid"])
    merged_params, merged_logits, _, step = block_gaussians(Path(merged["checkpoint"]))
    expected_means, expected_logits = [], []
    for index, result in enumerate(results):
        params, logits, _, _ = block_gaussians(Path(result["checkpoint"]))
        owned = grid.cell_of(params["means"][:, :2].numpy().astype(np.float64)) == index
        assert 0 < owned.sum() < len(owned), "the overlap holds Gaussians the block does not own"
        expected_means.append(params["means"][torch.from_numpy(owned)])
        expected_logits.append(logits[torch.from_numpy(owned)])
    assert step == 29 and merged["owned_gaussians"] == [len(m) for m in expected_means]
    torch.testing.assert_close(merged_params["means"], torch.cat(expected_means))
    torch.testing.assert_close(merged_logits, torch.cat(expected_logits))  # identity decoder: logits as stored
    assert len(torch.unique(merged_params["means"], dim=0)) == len(merged_params["means"]), "duplicated Gaussians"
    assert merged["overlaps"] and 0.0 <= merged["overlaps"][0]["disagreement"] <= 1.0

    ExportLabels(load_config=Path(merged["config"]), output_dir=tmp_path / "export", split="all").main()
    meta = json.loads((Path(plan["scene"]) / "transforms.json").read_text())
    assert len(list((tmp_path / "export" / "labels").glob("*.png"))) == len(meta["frames"])
    assert (tmp_path / "export" / "gaussians.ply").is_file()


FAKE_TRAINING = """
import sys, torch
from pathlib import Path
checkpoint = Path(sys.argv[1]) / "nerfstudio_models" / "step-000000001.ckpt"
checkpoint.parent.mkdir(parents=True)
torch.save({"step": 1, "pipeline": {"_model.gauss_params.means": torch.zeros(5, 3)}}, checkpoint)
"""


@dataclass
class _DrillBlocks(TrainBlocks):
    """TrainBlocks whose blocks run a stand-in for ns-train that only writes a checkpoint."""

    def jobs(self, plan: dict) -> list[BlockJob]:
        return [
            replace(job, command=(sys.executable, "-c", FAKE_TRAINING, str(job.run_dir))) for job in super().jobs(plan)
        ]


def test_ray_retries_a_failing_block_and_skips_finished_ones(partitioned, tmp_path: Path) -> None:
    output, plan = partitioned
    drill = tmp_path / "drill"
    for block in plan["blocks"]:
        (drill / "blocks" / str(block["index"])).mkdir(parents=True)
        (drill / "blocks" / str(block["index"]) / "scene").symlink_to(block["scene"])
    command = _DrillBlocks(data=Path(plan["scene"]), output_dir=drill, num_blocks=2, num_cpus=1, inject_failure=(1,))
    results = command.train_all(plan)
    assert [r["attempts"] for r in results] == [1, 2]
    assert [a["attempt"] for a in attempts_of(drill / "blocks" / "1")] == [1, 2]
    assert all(r["gaussians"] == 5 and Path(r["checkpoint"]).is_file() for r in results)

    again = command.train_all(plan)  # finished blocks are not retrained (no Ray task runs at all)
    assert all(r.get("skipped") for r in again)
    assert len((drill / "blocks" / "1" / ATTEMPTS_FILE).read_text().splitlines()) == 2
