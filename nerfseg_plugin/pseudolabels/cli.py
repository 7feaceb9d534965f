"""``rsseg-pseudo-labels``: pseudo-labels for a scene's unlabeled views, cached in ``SCENE/pseudo_labels/<method>/``.

Methods: ``sam2`` (paper 002, section III-C: SAM2 instances of each labeled view take the class most of their labeled
pixels have, and SAM2's video predictor tracks them through the capture), ``vote`` (labels of the labeled views
projected through geometry with a visibility check and soft-voted, after GNeSF), ``sam2+vote`` (the geometric votes
decided per SAM2 region, or per superpixel without a SAM2 checkpoint, so edges follow the image).

Examples::

    rsseg-pseudo-labels --data scenes/town --method vote
    rsseg-pseudo-labels --data scenes/town --method sam2+vote            # superpixel regions
    rsseg-pseudo-labels --data scenes/town --method sam2 --sam2-checkpoint ckpts/sam2.1_hiera_tiny.pt
    rsseg-pseudo-labels --data scenes/town --method vote --load-config outputs/town/rsseg-splat/RUN/config.yml
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro
from nerfstudio.utils.rich_utils import CONSOLE

from nerfseg_plugin.pseudolabels.assignment import AssignmentConfig
from nerfseg_plugin.pseudolabels.boundary import BoundaryConfig
from nerfseg_plugin.pseudolabels.depth_sources import SparseDepthConfig
from nerfseg_plugin.pseudolabels.sam2_backend import Sam2Config
from nerfseg_plugin.pseudolabels.superpixels import RegionConfig
from nerfseg_plugin.pseudolabels.vote import VoteConfig


@dataclass
class PseudoLabelConfig:
    """Generate pseudo-labels for the unlabeled views of a scene (see nerfseg_plugin.pseudolabels.cli)."""

    data: Path
    """Scene folder (or its transforms.json)."""
    method: Literal["sam2", "vote", "sam2+vote"] = "vote"
    """sam2: SAM2 instance propagation (needs --sam2-checkpoint); vote: geometric multi-view voting; sam2+vote:
    votes decided per SAM2 region (superpixels without --sam2-checkpoint)."""
    sam2_checkpoint: Path | None = None
    """Local SAM2 checkpoint (.pt). Never downloaded."""
    sam2_config: str | None = None
    """Packaged SAM2 config matching the checkpoint, e.g. sam2.1_hiera_t (default: inferred from the official
    checkpoint file name)."""
    load_config: Path | None = None
    """config.yml of a trained run whose rendered depth replaces the densified sparse point cloud."""
    depth_convention: Literal["auto", "z", "ray"] = "auto"
    """What --load-config's "depth" output holds: z-depth (splatting) or distance along unit rays (NeRF); auto
    decides by model type."""
    device: str | None = None
    """Device SAM2 runs on, e.g. cpu or cuda:1 (None: the --load-config model's device, else CUDA when present,
    else the CPU). Not part of the cache key."""
    overwrite: bool = False
    """Regenerate even when a valid cache for the same inputs and settings exists."""
    score: bool = True
    """Afterwards, print coverage and accuracy against the frames' semantic_eval_path maps (when there are any)."""
    vote: VoteConfig = field(default_factory=VoteConfig)
    """Geometric voting."""
    sparse_depth: SparseDepthConfig = field(default_factory=SparseDepthConfig)
    """Depth from the sparse point cloud."""
    regions: RegionConfig = field(default_factory=RegionConfig)
    """Region decisions of sam2+vote."""
    sam2: Sam2Config = field(default_factory=Sam2Config)
    """SAM2 mask generation and propagation."""
    assignment: AssignmentConfig = field(default_factory=AssignmentConfig)
    """SAM2 instance classes and the merge of propagated instances."""
    boundary: BoundaryConfig = field(default_factory=BoundaryConfig)
    """The boundary mask B: where the pseudo-labels apply during training."""


def main(config: PseudoLabelConfig) -> Path:
    from nerfseg_plugin.pseudolabels.evaluation import PseudoLabelScore, score_pseudo_labels
    from nerfseg_plugin.pseudolabels.pipeline import generate_pseudo_labels

    directory = generate_pseudo_labels(config)
    if config.score:
        score = score_pseudo_labels(config.data, directory)
        if score.views:
            CONSOLE.print("Against the evaluation label maps (never used to generate):")
            CONSOLE.print(PseudoLabelScore.table_header())
            CONSOLE.print(score.as_row(config.method))
    return directory


def entrypoint() -> None:
    """Console-script entry point."""
    tyro.extras.set_accent_color("bright_yellow")
    main(tyro.cli(PseudoLabelConfig))


if __name__ == "__main__":
    entrypoint()
