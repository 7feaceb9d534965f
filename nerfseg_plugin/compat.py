"""Small, explicit fixes that let nerfstudio 1.1.5 run offline, on CPU and under torch >= 2.6.

Everything here is scoped to our methods: nothing patches nerfstudio globally except registering numpy's scalar
types as safe for ``torch.load``, which only widens what weights-only unpickling accepts (no code execution).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn


def allow_numpy_in_checkpoints() -> None:
    """Let ``torch.load(..., weights_only=True)`` (the default since torch 2.6) read nerfstudio checkpoints.

    nerfstudio 1.1.5 stores numpy scalars (scheduler/optimizer state, step counters) in its checkpoints, and
    calls ``torch.load`` without ``weights_only=False`` in ``ns-eval``, ``ns-render`` and ``--load-dir``. Registering
    the numpy reconstructors as safe globals fixes loading without trusting arbitrary pickles.
    """
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is None:  # torch < 2.4: weights_only was not the default, nothing to do
        return
    scalar_types = {type(np.float64(0)), type(np.float32(0)), type(np.int64(0)), type(np.int32(0)), np.bool_}
    dtype_classes = {type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_, np.uint8)}
    import importlib

    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    reconstructors = [np.dtype, np.ndarray, multiarray.scalar, multiarray._reconstruct]
    add_safe_globals([*reconstructors, *scalar_types, *dtype_classes])


def default_device_type() -> str:
    """The device nerfstudio's trainer should use: CUDA when present, else CPU (no flag needed)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def lpips_weights_available() -> bool:
    """Whether torchvision's AlexNet weights (LPIPS' backbone) are already on disk: building LPIPS without them
    would try to download them, which fails offline."""
    from torchvision.models import AlexNet_Weights

    filename = os.path.basename(AlexNet_Weights.DEFAULT.url)
    return (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file()


class UnavailableLPIPS(nn.Module):
    """Stands in for LPIPS when its weights are not on disk: returns NaN and warns once.

    Models drop the NaN entry from their metrics (see ``drop_unavailable_lpips``), so evaluation reports PSNR/SSIM
    and the semantic metrics without LPIPS instead of failing on a download.
    """

    _warned = False

    def forward(self, *_: torch.Tensor) -> torch.Tensor:
        if not UnavailableLPIPS._warned:
            warnings.warn(
                "LPIPS skipped: torchvision's AlexNet weights are not in the torch hub cache and this tool never "
                "downloads at train/eval time. Place alexnet-owt-7be5be79.pth in "
                f"{Path(torch.hub.get_dir()) / 'checkpoints'} to get LPIPS.",
                stacklevel=2,
            )
            UnavailableLPIPS._warned = True
        return torch.tensor(float("nan"))


@contextlib.contextmanager
def offline_lpips() -> Iterator[None]:
    """While a nerfstudio model's ``populate_modules`` runs, build LPIPS only if its weights are present."""
    import torchmetrics.image.lpip as lpip_module

    if lpips_weights_available():
        yield
        return
    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = lambda *args, **kwargs: UnavailableLPIPS()  # type: ignore
    try:
        yield
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = original


def drop_unavailable_lpips(metrics: dict, lpips_module: nn.Module) -> dict:
    """Remove LPIPS entries from an image-metrics dict when LPIPS could not be built."""
    if isinstance(lpips_module, UnavailableLPIPS):
        for key in [k for k in metrics if k.endswith("lpips")]:
            del metrics[key]
    return metrics


def ffmpeg_main() -> None:
    """``ffmpeg`` console script: runs the ffmpeg binary that the imageio-ffmpeg wheel ships."""
    import sys

    import imageio_ffmpeg

    executable = imageio_ffmpeg.get_ffmpeg_exe()
    os.execv(executable, [executable, *sys.argv[1:]])


def ensure_ffmpeg_on_path() -> None:
    """``ns-render`` looks for ``ffmpeg`` on PATH even for image output. When there is none, put this
    environment's scripts folder (where our ``ffmpeg`` console script lives) on PATH for this process."""
    import shutil
    import sysconfig

    if shutil.which("ffmpeg") is not None:
        return
    scripts = sysconfig.get_path("scripts")
    if scripts and (Path(scripts) / "ffmpeg").exists():
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
