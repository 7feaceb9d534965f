"""Merge trained blocks into one nerfstudio run that every loader (ns-viewer, ns-render, rsseg-export-*) opens.

Each Gaussian is kept only in the block whose core ground cell holds its centre. The blocks' linear decoders
differ, so the merged model stores per-Gaussian class logits ``W f + b`` as its features, with
``semantic_feature_dim = num_classes`` and an identity decoder: rendering composites the logits, which equals each
block's ``W (sum w_i f_i) + b`` wherever the accumulated opacity is 1.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import yaml

from nerfseg_plugin.blocks.partition import Grid
from nerfseg_plugin.core.atomic import write_atomic, write_json_atomic
from nerfseg_plugin.semantics.heads import upgrade_head_keys

GAUSS_KEY = "gauss_params."
DECODER = "semantic_decoder."
DECODER_KEY = DECODER + "mlp.layers."
PCA_KEY = "feature_pca."
MERGED_EXPERIMENT = "merged"
MERGED_TIMESTAMP = "merged"


class MergeError(RuntimeError):
    """A block's checkpoint cannot be merged (names the file and the reason)."""


def _prefix(state: dict, checkpoint: Path) -> str:
    for key in state:
        if key.endswith(GAUSS_KEY + "means"):
            return key[: -len(GAUSS_KEY + "means")]
    raise MergeError(f"{checkpoint}: no gauss_params.means: not a splatting checkpoint")


def block_gaussians(checkpoint: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict, int]:
    """(gauss params, per-Gaussian class logits, full pipeline state, step) of one block's checkpoint."""
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = loaded["pipeline"]
    prefix = _prefix(state, checkpoint)
    upgrade_head_keys(state, prefix + DECODER)  # blocks trained before the decoder was a nerfstudio MLP
    params = {k[len(prefix + GAUSS_KEY) :]: v for k, v in state.items() if k.startswith(prefix + GAUSS_KEY)}
    layers = sorted({k.split(".")[-2] for k in state if k.startswith(prefix + DECODER_KEY)})
    if layers != ["0"]:
        raise MergeError(
            f"{checkpoint}: the semantic decoder has layers {layers}; merging needs the linear transfer layer "
            "(--pipeline.model.decoder-hidden-dim 0, the default), which maps each Gaussian's feature to logits"
        )
    weight, bias = state[prefix + DECODER_KEY + "0.weight"], state[prefix + DECODER_KEY + "0.bias"]
    logits = params["semantic_features"] @ weight.T + bias
    return params, logits, state, int(loaded["step"])


def owned_mask(grid: Grid, block: int, means: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(grid.cell_of(means[:, :2].numpy().astype(np.float64)) == block)


def overlap_disagreement(grid: Grid, blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[dict]:
    """Per pair of neighbouring blocks: among the visible Gaussians (opacity > 0.5) of each block lying in both
    blocks' expanded bounds, the share whose class differs from that of the other block's nearest Gaussian."""
    from scipy.spatial import cKDTree

    pairs = []
    for a in range(len(blocks)):
        for b in range(a + 1, len(blocks)):
            disagree, total = 0, 0
            for first, second in ((a, b), (b, a)):
                means, logits, opacities = blocks[first]
                xy = means[:, :2].numpy().astype(np.float64)
                zone = grid.in_expanded(first, xy) & grid.in_expanded(second, xy)
                zone &= torch.sigmoid(opacities.squeeze(-1)).numpy() > 0.5
                other_means, other_logits, other_opacities = blocks[second]
                other_visible = torch.sigmoid(other_opacities.squeeze(-1)) > 0.5
                if not zone.any() or not other_visible.any():
                    continue
                tree = cKDTree(other_means[other_visible].numpy())
                _, nearest = tree.query(means[torch.from_numpy(zone)].numpy())
                mine = logits[torch.from_numpy(zone)].argmax(-1)
                theirs = other_logits[other_visible].argmax(-1)[torch.from_numpy(nearest)]
                disagree += int((mine != theirs).sum())
                total += int(zone.sum())
            if total:
                pairs.append({"blocks": [a, b], "gaussians": total, "disagreement": disagree / total})
    return pairs


def merge_blocks(plan: dict, results: list[dict], output_dir: Path, dataparser_config) -> dict:
    """Write DIR/merged/<method>/merged/{config.yml, dataparser_transforms.json, nerfstudio_models/step-*.ckpt}."""
    grid = Grid.from_json(plan["grid"])
    merged: dict[str, list[torch.Tensor]] = {}
    overlap_inputs = []
    counts = []
    steps = []
    base_state = None
    for block, result in enumerate(results):
        params, logits, state, step = block_gaussians(Path(result["checkpoint"]))
        base_state = base_state if base_state is not None else (state, _prefix(state, Path(result["checkpoint"])))
        overlap_inputs.append((params["means"], logits, params["opacities"]))
        keep = owned_mask(grid, block, params["means"])
        for name, value in params.items():
            merged.setdefault(name, []).append((logits if name == "semantic_features" else value)[keep])
        counts.append(int(keep.sum()))
        steps.append(step)
    gaussians = {name: torch.cat(parts) for name, parts in merged.items()}
    num_classes = gaussians["semantic_features"].shape[1]
    state, prefix = base_state
    state = {k: v for k, v in state.items() if not k.startswith(prefix + GAUSS_KEY) and PCA_KEY not in k}
    state.update({prefix + GAUSS_KEY + name: value for name, value in gaussians.items()})
    state[prefix + DECODER_KEY + "0.weight"] = torch.eye(num_classes)
    state[prefix + DECODER_KEY + "0.bias"] = torch.zeros(num_classes)
    # The feature PCA of the viewer is refitted on load for the new feature size.
    from nerfseg_plugin.semantics.colormaps import FixedPCAProjection

    state.update({prefix + PCA_KEY + k: v for k, v in FixedPCAProjection(num_classes).state_dict().items()})
    step = max(steps)

    config = yaml.load(Path(results[0]["config"]).read_text(encoding="utf-8"), Loader=yaml.Loader)
    config = copy.deepcopy(config)
    scene = Path(plan["scene"])
    config.output_dir = output_dir.resolve()
    config.experiment_name = MERGED_EXPERIMENT
    config.timestamp = MERGED_TIMESTAMP
    config.data = scene
    config.load_dir = None
    config.max_num_iterations = step + 1
    dataparser = copy.deepcopy(dataparser_config)
    dataparser.data = scene
    dataparser.downscale_factor = 1
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.dataparser = dataparser
    config.pipeline.model.semantic_feature_dim = num_classes
    config.pipeline.model.decoder_hidden_dim = 0
    config.pipeline.model.decoder_num_layers = 1
    run_dir = config.get_base_dir()
    checkpoint = run_dir / config.relative_model_dir / f"step-{step:09d}.ckpt"
    payload = {"step": step, "pipeline": state, "optimizers": {}, "schedulers": {}, "scalers": {}}
    write_atomic(checkpoint, lambda temp: torch.save(payload, temp))
    write_atomic(run_dir / "config.yml", lambda temp: temp.write_text(yaml.dump(config), encoding="utf-8"))
    transform = plan["dataparser_transform"]
    write_json_atomic(
        run_dir / "dataparser_transforms.json", {"transform": transform, "scale": plan["dataparser_scale"]}
    )
    return {
        "config": str(run_dir / "config.yml"),
        "checkpoint": str(checkpoint),
        "owned_gaussians": counts,
        "gaussians": int(gaussians["means"].shape[0]),
        "overlaps": overlap_disagreement(grid, overlap_inputs),
    }
