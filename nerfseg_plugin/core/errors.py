"""Errors the plugin raises on bad user input. Each names the offending file and the problem."""

from __future__ import annotations

from pathlib import Path


class SceneFormatError(ValueError):
    """A scene folder (transforms.json, images, label maps, classes.json, ...) breaks the scene-format contract."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
