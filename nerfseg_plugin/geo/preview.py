"""``preview.png``: the label map (read from the COG's overviews) with a legend, a scale bar and map coordinates."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.geo.ortho_render import NO_CLASS


def nice_length(target: float) -> float:
    """The largest 1, 2 or 5 times a power of ten not above ``target``."""
    power = 10.0 ** math.floor(math.log10(target))
    return max(step * power for step in (1.0, 2.0, 5.0) if step * power <= target)


def write_preview(
    labels_tif: Path, path: Path, label_space: LabelSpace, units: str, title: str, max_size: int = 1024
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from rasterio.enums import Resampling

    with rasterio.open(labels_tif) as dataset:
        factor = max(1, math.ceil(max(dataset.width, dataset.height) / max_size))
        shape = (max(1, dataset.height // factor), max(1, dataset.width // factor))
        labels = dataset.read(1, out_shape=shape, resampling=Resampling.nearest)
        left, bottom, right, top = dataset.bounds
    colours = np.zeros((256, 4))
    colours[: label_space.num_classes, :3] = label_space.colors_uint8 / 255.0
    colours[: label_space.num_classes, 3] = 1.0
    colours[NO_CLASS] = (1.0, 1.0, 1.0, 0.0)
    figure, axes = plt.subplots(figsize=(8, 8 * shape[0] / shape[1] + 0.6), dpi=120)
    axes.imshow(
        labels,
        cmap=ListedColormap(colours),
        vmin=0,
        vmax=255,
        interpolation="nearest",
        extent=(left, right, bottom, top),
    )
    present = np.unique(labels)
    handles = [Patch(color=colours[i, :3], label=name) for i, name in enumerate(label_space.names) if i in present]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    length = nice_length(0.25 * (right - left))
    x0, y0 = left + 0.05 * (right - left), bottom + 0.05 * (top - bottom)
    axes.plot([x0, x0 + length], [y0, y0], color="black", linewidth=4, solid_capstyle="butt")
    unit = "m" if units == "metre" else "units"
    axes.text(x0 + 0.5 * length, y0 + 0.015 * (top - bottom), f"{length:g} {unit}", ha="center", va="bottom")
    axes.set_title(title, fontsize=9)
    axes.ticklabel_format(useOffset=False, style="plain")
    axes.tick_params(labelsize=7)
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.partial.png")
    figure.savefig(temporary, bbox_inches="tight")
    plt.close(figure)
    os.replace(temporary, path)
    return path
