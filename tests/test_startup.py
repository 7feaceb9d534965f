"""Start-up cost independent of dataset size: no hashing when no pseudo-label set exists, size+mtime first when one
does (hashing only files whose stats changed), and label caches of one byte per labeled pixel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nerfseg_plugin.core.keys import PSEUDO_LABELS, PSEUDO_WEIGHTS, SEMANTIC_LABELS
from nerfseg_plugin.data import pseudo_label_cache as cache
from nerfseg_plugin.data.pseudo_label_cache import (
    cache_dir,
    read_manifest,
    resolve_pseudo_label_dir,
    scene_input_hashes,
    write_manifest,
)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every file the cache check hashes (and still hashes it)."""
    calls: list[Path] = []
    real = cache.file_sha256

    def counting(path: Path) -> str:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(cache, "file_sha256", counting)
    return calls


def _make_set(scene: Path) -> Path:
    directory = cache_dir(scene, "vote")
    directory.mkdir(parents=True)
    write_manifest(directory, {"method": "vote", "inputs": scene_input_hashes(scene), "outputs": []})
    return directory


def test_no_pseudo_label_set_means_no_hashing(minimal_scene: Path, hashed: list[Path]) -> None:
    assert resolve_pseudo_label_dir(minimal_scene, "auto") is None
    assert hashed == []


def test_unchanged_set_is_validated_by_stats_alone(minimal_scene: Path, hashed: list[Path]) -> None:
    directory = _make_set(minimal_scene)
    manifest = read_manifest(directory)
    assert set(manifest["input_stats"]) == set(manifest["inputs"])  # size + mtime recorded for every input
    hashed.clear()
    assert resolve_pseudo_label_dir(minimal_scene, "auto") == directory
    assert hashed == []


def test_touched_file_is_hashed_and_a_changed_one_invalidates(minimal_scene: Path, hashed: list[Path]) -> None:
    directory = _make_set(minimal_scene)
    image = minimal_scene / "images" / "frame_002.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    hashed.clear()
    assert resolve_pseudo_label_dir(minimal_scene, "auto") == directory
    assert hashed == [image.resolve()]  # only the touched file
    image.write_bytes(image.read_bytes() + b"\0")
    assert resolve_pseudo_label_dir(minimal_scene, "auto") is None


def test_manifest_without_stats_falls_back_to_hashes(minimal_scene: Path, hashed: list[Path]) -> None:
    directory = cache_dir(minimal_scene, "vote")
    directory.mkdir(parents=True)
    write_manifest(directory, {"method": "vote", "inputs": dict(scene_input_hashes(minimal_scene)), "outputs": []})
    assert "input_stats" not in read_manifest(directory)  # a set written before stats existed
    hashed.clear()
    assert resolve_pseudo_label_dir(minimal_scene, "auto") == directory
    assert len(hashed) == len(read_manifest(directory)["inputs"])


def test_datamanager_setup_hashes_nothing_and_caches_one_byte_per_labeled_pixel(
    minimal_scene: Path, hashed: list[Path]
) -> None:
    from nerfseg_plugin.data.datamanager import RssegFullImageDatamanagerConfig
    from nerfseg_plugin.data.dataparser import RssegDataParserConfig

    manager = RssegFullImageDatamanagerConfig(dataparser=RssegDataParserConfig(data=minimal_scene)).setup(device="cpu")
    assert hashed == []
    cached = manager.cached_train
    labeled = set(manager.labeled_train_indices)
    assert labeled
    for index, data in enumerate(cached):
        labels = data[SEMANTIC_LABELS]
        assert labels.dtype == torch.uint8 and labels.shape == data["image"].shape[:2]
        if index not in labeled:
            assert labels.stride() == (0, 0)
        for key in (PSEUDO_LABELS, PSEUDO_WEIGHTS):  # no pseudo-label set: constant views only
            assert data[key].stride() == (0, 0)
    tensors = [data[k] for data in cached for k in (SEMANTIC_LABELS, PSEUDO_LABELS, PSEUDO_WEIGHTS)]
    assert all(_storage_bytes(t) <= 4 for t in tensors if t.stride() == (0, 0))  # one element each
    per_pixel = sum(_storage_bytes(t) for t in tensors if t.stride() != (0, 0))
    assert per_pixel == sum(cached[i][SEMANTIC_LABELS].numel() for i in labeled)  # 1 byte per labeled pixel


def _storage_bytes(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()
