#!/usr/bin/env bash
# Install nerfseg and everything it needs into the active Python (3.10-3.12) environment, from PyPI only.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade pip "setuptools>=68" wheel
# sam2 1.1.0 is an sdist. Built in an isolated environment it would first download a ~2.5 GB CUDA torch just to
# build an optional CUDA extension; without it (SAM2_BUILD_CUDA=0, no build isolation) it is pure Python.
SAM2_BUILD_CUDA=0 python -m pip install --no-build-isolation "sam2==1.1.0"
python -m pip install -e ".[dev]"
