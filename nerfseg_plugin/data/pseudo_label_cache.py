"""The pseudo-label cache ``SCENE/pseudo_labels/<method>/``: manifest, input hashes, atomic writes, validity.

A set is trusted only when its ``manifest.json`` exists, has this schema version, and the scene inputs it was made
from (transforms.json, classes.json, the point cloud, every image and every supervision label map) still hash the
same. The manifest is written last inside a hidden staging folder that is then renamed into place, so an
interrupted run leaves either the previous set or none, never a half-written one that looks complete. External
inputs (the SAM2 checkpoint, a trained model) are recorded by hash; the generator compares them before reusing a
set, training-time lookups (which do not know them) check the scene inputs only.

Start-up cost does not grow with hashing: the manifest also records each input's size and mtime, and a
training-time check hashes a file only when those differ (and nothing at all when no set exists).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nerfstudio.utils.rich_utils import CONSOLE

from nerfseg_plugin.core.pseudo_label_files import PSEUDO_LABEL_ROOT, pseudo_label_paths
from nerfseg_plugin.core.scene_io import load_transforms
from nerfseg_plugin.data.scene_validation import collect_frame_labels

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
METHODS = ("sam2", "vote", "sam2+vote")
AUTO_PREFERENCE = ("sam2+vote", "sam2", "vote")
"""Order in which ``auto`` picks a valid set."""
CLASSES_FILE = "classes.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scene_folder(data: Path) -> Path:
    """The scene folder for ``--data`` given as the folder or its transforms.json."""
    return data.parent if data.suffix == ".json" else data


def _key(path: Path, resolved_scene_dir: Path) -> str:
    try:
        return path.relative_to(resolved_scene_dir).as_posix()
    except ValueError:
        return str(path)


def scene_input_paths(data: Path) -> dict[str, Path]:
    """Every scene input a pseudo-label set depends on, keyed by path relative to the scene (no file is read but
    transforms.json). Evaluation label maps are not inputs (they are never read) and are left out."""
    meta, scene_dir = load_transforms(data)
    transforms_path = data if data.suffix == ".json" else scene_dir / "transforms.json"
    paths = {transforms_path.name: transforms_path}
    resolved = scene_dir.resolve()
    extras = [scene_dir / CLASSES_FILE] + ([scene_dir / meta["ply_file_path"]] if meta.get("ply_file_path") else [])
    for extra in extras:
        if extra.is_file():
            paths[_key(extra.resolve(), resolved)] = extra
    for frame in collect_frame_labels(meta, scene_dir, transforms_path):
        for path in (frame.image_path, frame.supervision_path):
            if path is not None and path.is_file():
                paths[_key(path, resolved)] = path
    return paths


def _stat(path: Path) -> list[int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


class SceneInputHashes(dict):
    """sha256 per scene input (a plain dict for the manifest), plus the (size, mtime_ns) each file had while it
    was hashed, which the manifest records so later checks can skip hashing unchanged files."""

    stats: dict[str, list[int]]


def scene_input_hashes(data: Path) -> SceneInputHashes:
    """sha256 of every scene input (see scene_input_paths), with their stats."""
    hashes = SceneInputHashes()
    hashes.stats = {}
    for key, path in scene_input_paths(data).items():
        before = _stat(path)
        hashes[key] = file_sha256(path)
        if before is not None and before == _stat(path):  # a file changing while hashed gets no shortcut
            hashes.stats[key] = before
    return hashes


def changed_inputs(manifest: dict, paths: dict[str, Path]) -> list[str]:
    """Keys whose file differs from what the manifest recorded: a file whose size and mtime still equal the
    recorded ones is taken as unchanged; any other is hashed and compared."""
    recorded = manifest.get("inputs", {})
    stats = manifest.get("input_stats", {})
    changed = sorted(set(recorded) ^ set(paths))
    for key in sorted(set(recorded) & set(paths)):
        if key in stats and stats[key] == _stat(paths[key]):
            continue
        if file_sha256(paths[key]) != recorded[key]:
            changed.append(key)
    return sorted(changed)


def cache_dir(data: Path, method: str) -> Path:
    return scene_folder(data) / PSEUDO_LABEL_ROOT / method


def read_manifest(directory: Path) -> dict | None:
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def cache_problem(
    directory: Path, inputs: dict[str, str] | dict[str, Path], expected: dict | None = None
) -> str | None:
    """Why the set in ``directory`` cannot be used (None when it can). ``inputs``: the current scene hashes, or
    the scene input paths (scene_input_paths; checked by size+mtime first, hashed only on a mismatch).
    ``expected`` optionally holds manifest entries (method, config, checkpoint, geometry) that must match too."""
    manifest = read_manifest(directory)
    if manifest is None:
        return "no readable manifest (missing, or the run that wrote it did not finish)"
    if manifest.get("schema_version") != SCHEMA_VERSION:
        return f"schema version {manifest.get('schema_version')} is not {SCHEMA_VERSION}"
    if inputs and all(isinstance(v, Path) for v in inputs.values()):
        changed = changed_inputs(manifest, inputs)
    else:
        recorded = manifest.get("inputs", {})
        changed = sorted(k for k in set(recorded) | set(inputs) if recorded.get(k) != inputs.get(k))
    if changed:
        return f"scene inputs changed since it was generated: {changed[:5]}{' ...' if len(changed) > 5 else ''}"
    for key, value in (expected or {}).items():
        if manifest.get(key) != value:
            return f"'{key}' differs from the requested one"
    for stem in manifest.get("outputs", []):
        missing = [path.name for path in pseudo_label_paths(directory, stem) if not path.is_file()]
        if missing:
            return f"output files are missing: {missing}"
    return None


def find_valid_cache(data: Path, method: str, inputs: dict[str, str] | None = None) -> Path | None:
    """``SCENE/pseudo_labels/<method>`` when it holds a valid set for the scene as it is now, else None."""
    directory = cache_dir(data, method)
    if not directory.is_dir():
        return None
    return directory if cache_problem(directory, inputs or scene_input_paths(data)) is None else None


def resolve_pseudo_label_dir(data: Path, preference: str) -> Path | None:
    """The pseudo-label folder training should use. ``preference``: "off" (None), "auto" (the first valid set in
    AUTO_PREFERENCE order, or None), or a method name (its set, which must be valid). Says what it picked."""
    if preference == "off":
        return None
    if preference != "auto" and preference not in METHODS:
        raise ValueError(f"pseudo-label preference must be 'auto', 'off' or one of {METHODS}, got {preference!r}")
    inputs: dict[str, Path] | None = None  # listed only when a set exists: no set, no file checks
    for method in AUTO_PREFERENCE if preference == "auto" else (preference,):
        directory = cache_dir(data, method)
        if directory.is_dir() and inputs is None:
            inputs = scene_input_paths(data)
        problem = cache_problem(directory, inputs) if directory.is_dir() else "not generated"
        if problem is None:
            count = len(read_manifest(directory).get("outputs", []))
            CONSOLE.print(f"[bold green]Using pseudo-labels from {directory} ({method}, {count} views)")
            return directory
        if preference != "auto":
            raise ValueError(
                f"no valid '{method}' pseudo-labels in {directory}: {problem}. Generate them with "
                f"rsseg-pseudo-labels --data {scene_folder(data)} --method {method}"
            )
        if problem != "not generated":
            CONSOLE.print(f"[yellow]Ignoring pseudo-labels in {directory}: {problem}")
    CONSOLE.print(
        f"No pseudo-labels for {scene_folder(data)}: training without them "
        "(generate with rsseg-pseudo-labels --data SCENE --method vote|sam2|sam2+vote)"
    )
    return None


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (call it last: its presence marks the set complete)."""
    payload = {"schema_version": SCHEMA_VERSION, **manifest}
    if isinstance(manifest.get("inputs"), SceneInputHashes):
        payload["input_stats"] = manifest["inputs"].stats
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Yields an empty hidden folder beside ``final``; when the block exits normally it replaces ``final`` (old
    set moved aside first, then deleted), when it raises it is deleted and ``final`` is untouched. Leftovers of
    killed runs are hidden (``.<name>.staging-*``), never read, and removed by the next run for the same method."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{final.name}.staging-*", f".{final.name}.old-*"):
        for stale in final.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.replace(final, retired)
    os.replace(staging, final)
    shutil.rmtree(retired, ignore_errors=True)
