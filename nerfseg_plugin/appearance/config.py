"""Settings of the 2D appearance model and of its rounds with the 3D semantic field (both methods share them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class AppearanceConfig:
    """A 2D network that classifies every view from its image content, trained in the same run from the labeled
    views and from what the 3D field already labels with confidence on every other view; its per-view predictions
    supervise the 3D field with confidence weights, and the 3D field fuses them into one view-consistent answer.

    Not in papers 000/002 (which carry a label only to where a labeled view saw the surface); it is the principled
    form of paper 000's Table IV augmentation and of Semantic-NeRF's label denoising by 3D fusion (README:
    "2D appearance model")."""

    enabled: bool = True
    """Train the 2D appearance model and let its predictions supervise the 3D field. False: 3D propagation only
    (the papers' methods)."""
    rounds: tuple[float, ...] = (0.33, 0.6)
    """When the 2D -> 3D rounds run, as fractions of the training steps (of the semantic stage for rsseg-nerf).
    Each round renders the 3D field on every training view, trains the 2D model on the labeled views plus the
    confident 3D labels, and replaces the per-view 2D targets. One entry = one round; more = iterated."""
    steps_first_round: int = 400
    """2D optimisation steps in the first round (from scratch)."""
    steps_later_rounds: int = 250
    """2D optimisation steps in each later round (warm-started from the previous round's weights)."""
    min_3d_confidence: float = 0.8
    """A 3D-rendered label becomes a 2D training target where its class probability is at least this; its weight is
    that probability. Labeled views' labels always count with weight 1."""
    first_round_targets: Literal["confident", "geometric"] = "confident"
    """Which 3D labels train the 2D model in the first round besides the user's: "confident": every pixel the 3D
    field labels with ``min_3d_confidence``; "geometric": only those that also pass the geometric reach test
    (``reach_depth_tolerance``), i.e. labels that 3D propagation carried from a labeled view. A field with an
    appearance path of its own (rsseg-nerf's colour-radiance head) is also confident where no labeled view looked,
    by colour alone; "geometric" keeps those guesses out of the 2D model's first training set. Later rounds train on
    every confident pixel either way (the field has fused the 2D predictions by then)."""
    loss_weight: float = 1.0
    """Weight of the cross-entropy of the 3D field against the 2D predictions (per pixel weighted by the 2D
    confidence, never on labeled pixels, which keep their real labels)."""
    supervise_reached: bool = False
    """Let the 2D predictions also supervise pixels the 3D field already labeled with confidence in the first
    round (surfaces a labeled view saw). Off: there the labels carried through the geometry stay the answer (they
    keep thin and rare classes that a 2D network trained from a few views misses), and the 2D model fills in only
    where no labeled view looked."""
    reach: Literal["both", "geometry", "confidence"] = "both"
    """How the first round finds where the labeled views' labels reached (there the 2D model does not supervise the
    3D field unless ``supervise_reached``): "geometry": the pixel's rendered surface point passes a depth-tested
    visibility check in a labeled view at a labeled pixel; "confidence": the 3D field labels it with
    ``min_3d_confidence``; "both": either. The geometric test keeps class borders and thin structures that a labeled
    view saw (where the 3D field is unsure) out of the 2D model's reach; the confidence test adds surfaces the 3D
    field labels confidently although no labeled view saw them."""
    reach_depth_tolerance: float = 0.03
    """Visibility check of the geometric reach: a labeled view sees a surface point when the point's depth in that
    view is within this fraction of that view's rendered depth at the projected pixel."""
    class_balance: float = 0.5
    """Exponent of the inverse class frequency weighting of the 2D loss (0: none, 1: fully balanced); rare classes
    (markings, cars, water) would otherwise vanish from the 2D predictions."""
    min_2d_confidence: float = 0.5
    """2D predictions below this class probability give no 3D supervision."""
    height_input: bool = True
    """Feed the 2D model the rendered surface height (the up axis of the oriented scene, from the 3D field's depth)
    besides RGB: it separates roofs from ground of the same colour, which image content alone cannot."""
    normal_input: bool = False
    """Feed the 2D model how level the rendered surface is (|up component| of its normal, from the 3D field's depth):
    walls and facades are vertical, roofs and ground level. Off by default: on two unseen grids mIoU moved by -1.2
    and -0.8 points (roofs and walls a little up, cars down; README, ablation): Gaussians fitted to nadir photos
    rarely form vertical surfaces, so the rendered normals carry little that the height channel does not."""
    labeled_crop_fraction: float = 0.25
    """Share of 2D training crops drawn from labeled views (the rest from all other views)."""
    batch_size: int = 8
    """Crops per 2D optimisation step."""
    crop_size: int = 96
    """Side of the square 2D training crops (pixels, at the training resolution)."""
    base_channels: int = 16
    """UNet width of the first level (doubling per level)."""
    depth: int = 3
    """UNet down-sampling levels."""
    learning_rate: float = 3e-3
    """Peak AdamW learning rate of each round (linear warm-up, cosine decay)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    test_time_dihedral: bool = False
    """Predict each view as the mean class probabilities over its 8 rotations and mirrorings (the dihedral group the
    training crops are drawn from: a nadir image has no "up"), so a prediction does not depend on the photo's
    heading; 8 forward passes per view and round. Off by default: on two unseen grids it moved mIoU by +0.6 and
    -1.2 points (within run-to-run noise) for 8x the 2D inference per round (README, ablation)."""
    max_image_side: int = 512
    """Views are classified (and crops taken) at most at this side, so the 2D cost stays bounded for large photos;
    predictions are resized to the training resolution."""
    render_max_side: int = 512
    """The 3D field renders each view for a round at most at this side (then resized up to the 2D size): a NeRF's
    full-resolution renders of every view would dominate a CPU run."""
    pretrained_encoder: Path | None = None
    """Optional local checkpoint (state dict, loaded with ``weights_only=True``, never downloaded) of a UNet with the
    same architecture to start the first round from."""
    seed: int = 0
    """Seed of the 2D weights and crop sampling."""
