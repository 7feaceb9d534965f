"""Labeled Gaussians as a PLY point cloud (x y z, red green blue, class, confidence) for GIS / point-cloud tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nerfstudio.models.splatfacto import SH2RGB
from plyfile import PlyData, PlyElement


@torch.no_grad()
def write_labeled_gaussians(model, path: Path, min_opacity: float = 0.05) -> int:
    """Write every Gaussian whose opacity is at least ``min_opacity``; returns how many were written.

    The class of a Gaussian is its own feature decoded by the model's per-pixel decoder: the decoder is applied
    to composited features at render time, and a Gaussian's feature is what it contributes to them.
    Positions are in the dataparser's (normalised) frame, as nerfstudio's own Gaussian export.
    """
    params = model.gauss_params
    keep = torch.sigmoid(params["opacities"][:, 0]) >= min_opacity
    probabilities = torch.softmax(model.semantic_decoder(params["semantic_features"][keep]), dim=-1)
    confidence, classes = probabilities.max(dim=-1)
    dc = params["features_dc"][keep]
    rgb = SH2RGB(dc) if model.config.sh_degree > 0 else torch.sigmoid(dc)
    rgb8 = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    means = params["means"][keep].float().cpu().numpy()
    vertex = np.empty(
        len(means),
        dtype=[
            ("x", "f4"),
            ("y", "f4"),
            ("z", "f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
            ("class", "u1"),
            ("confidence", "f4"),
        ],
    )
    vertex["x"], vertex["y"], vertex["z"] = means[:, 0], means[:, 1], means[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = rgb8[:, 0], rgb8[:, 1], rgb8[:, 2]
    vertex["class"] = classes.to(torch.uint8).cpu().numpy()
    vertex["confidence"] = confidence.float().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))
    return len(vertex)
