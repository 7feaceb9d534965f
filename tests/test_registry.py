"""Registration, light entry points, packaging, and the offline / torch >= 2.6 compatibility fixes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tomllib
import torch

REPO = Path(__file__).resolve().parents[1]
ENTRY_MODULES = [
    "nerfseg_plugin.method_configs.splat_methods",
    "nerfseg_plugin.method_configs.nerf_methods",
    "nerfseg_plugin.method_configs.dataparsers",
]
RSSEG_METHODS = ["rsseg-splat", "rsseg-splat-lite", "rsseg-nerf", "rsseg-nerf-lite"]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_entry_points_are_declared_for_every_method() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert sorted(project["entry-points"]["nerfstudio.method_configs"]) == sorted(RSSEG_METHODS)
    assert list(project["entry-points"]["nerfstudio.dataparser_configs"]) == ["rsseg-data"]


def test_ns_train_help_lists_every_method() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ns-train"), "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for method in [*RSSEG_METHODS, "splatfacto", "nerfacto"]:
        assert method in result.stdout


def test_entry_point_modules_stay_light() -> None:
    code = f"""
import sys
import nerfstudio.configs.method_configs  # nerfstudio's own registry (imports gsplat's python side already)
before = set(sys.modules)
for name in {ENTRY_MODULES!r}:
    __import__(name)
new = set(sys.modules) - before
heavy = sorted(m for m in new if m.split('.')[0] in ('sam2', 'pycolmap', 'gsplat', 'numba', 'sklearn')
               or m in ('nerfseg_plugin.splat.model', 'nerfseg_plugin.nerf.model'))
print(heavy)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_broken_optional_dependencies_break_no_method() -> None:
    """sam2 / pycolmap / numba unimportable and our model modules broken: every method still registers."""
    code = """
import sys
for name in ('sam2', 'pycolmap', 'numba', 'nerfseg_plugin.splat.model', 'nerfseg_plugin.nerf.model'):
    sys.modules[name] = None  # makes `import name` raise ImportError
from nerfstudio.configs.method_configs import all_methods  # nerfstudio's built-ins merged with plugins
print(sorted(all_methods))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    for method in [*RSSEG_METHODS, "splatfacto", "nerfacto"]:
        assert method in result.stdout


def test_every_package_folder_is_listed_in_pyproject() -> None:
    packages = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "nerfseg_plugin").rglob("__init__.py")}
    assert folders | {"nerfseg_plugin.method_configs"} == packages
    assert (REPO / "method_configs" / "__init__.py").is_file()


def test_numpy_scalars_load_with_weights_only(tmp_path: Path) -> None:
    import nerfseg_plugin  # noqa: F401  (registers the safe globals)

    state = {"step": np.int64(7), "lr": np.float64(1e-3), "array": np.arange(3), "weights": torch.ones(2)}
    torch.save(state, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", map_location="cpu", weights_only=True)
    assert loaded["step"] == 7 and loaded["lr"] == 1e-3 and list(loaded["array"]) == [0, 1, 2]


def test_lpips_is_skipped_offline_with_a_warning(monkeypatch) -> None:
    import torchmetrics.image.lpip as lpip_module

    from nerfseg_plugin import compat

    monkeypatch.setattr(compat, "lpips_weights_available", lambda: False)
    with compat.offline_lpips():
        lpips = lpip_module.LearnedPerceptualImagePatchSimilarity(normalize=True)
    assert isinstance(lpips, compat.UnavailableLPIPS)
    assert lpip_module.LearnedPerceptualImagePatchSimilarity is not compat.UnavailableLPIPS
    metrics = compat.drop_unavailable_lpips({"psnr": 20.0, "lpips": float(lpips(torch.zeros(1)))}, lpips)
    assert metrics == {"psnr": 20.0}
