"""The one place that reaches into gsplat's private API (``gsplat.cuda._torch_impl``, ``gsplat.cuda._wrapper`` and
``DefaultStrategy._grow_gs``), checked against the version it was written for.

gsplat's public API has no pure-PyTorch projection or SH evaluation, which the CPU paths need, and no hook that
limits growth; private names can change in any release, so every use goes through here and a different gsplat
fails with a clear message instead of a stray AttributeError deep in training. gsplat is imported on use only.
"""

from __future__ import annotations

from types import ModuleType

SUPPORTED_GSPLAT = "1.4.0"
"""The gsplat release (pyproject pins it) whose private names and signatures this module relies on."""


class UnsupportedGsplatError(ImportError):
    """The installed gsplat is not the release whose private API this plugin uses."""


def check_gsplat_version() -> None:
    import gsplat

    if gsplat.__version__ != SUPPORTED_GSPLAT:
        raise UnsupportedGsplatError(
            f"nerfseg uses private parts of gsplat {SUPPORTED_GSPLAT} (pure-PyTorch projection and SH, the "
            f"strategy's growth step) but gsplat {gsplat.__version__} is installed: "
            f"pip install gsplat=={SUPPORTED_GSPLAT}"
        )


def torch_impl() -> ModuleType:
    """``gsplat.cuda._torch_impl``: gsplat's pure-PyTorch reference kernels (projection, covariances, SH)."""
    check_gsplat_version()
    from gsplat.cuda import _torch_impl

    return _torch_impl


def spherical_harmonics(on_cuda: bool):
    """gsplat's SH evaluation: the CUDA kernel on CUDA, else its exact pure-PyTorch version (the CUDA wrapper
    would try to JIT-compile its extension on a CPU-only machine)."""
    check_gsplat_version()
    if on_cuda:
        from gsplat.cuda._wrapper import spherical_harmonics as cuda_spherical_harmonics

        return cuda_spherical_harmonics
    return torch_impl()._spherical_harmonics
