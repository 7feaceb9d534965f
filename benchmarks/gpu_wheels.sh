#!/usr/bin/env bash
# Wheels for benchmarks/gpu_session.sh on a CUDA machine with no package index (Python 3.12, its own torch,
# numpy, scipy, tensorboard, numba, ... already installed): what ns-train, ns-eval and rsseg-train-blocks import
# beyond that image, for CPython 3.12 on manylinux x86-64, into .whl/ (git-ignored; carry it to the machine).
# Ray, gsplat and tensorly are repacked without what training never loads (Java jars, RLlib/Data/Serve/Tune/Train,
# the dashboard's web client, glm's docs and tests, tensorly's sample datasets) so the lot stays under 64 MiB.
# Run from the repo root in the project's venv (pip, wheel).
set -euo pipefail
DEST=${DEST:-.whl}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf "$DEST" && mkdir -p "$DEST"
PLATFORMS=()
for tag in manylinux1 manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 \
    manylinux_2_34; do PLATFORMS+=(--platform "${tag}_x86_64"); done
download() {
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d "$1" "${@:2}"
}
# Versions as the project's venv resolves them (fpsample: the newest with a CPython 3.12 wheel).
download "$DEST" nerfstudio==1.1.5 nerfacc==0.5.2 viser==0.2.7 tyro==1.0.17 typeguard==4.6.1 docstring_parser==0.18.0 \
    msgspec==0.23.0 websockets==17.4 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 fpsample==0.3.3 rawpy==0.28.0 pytorch-msssim==1.0.0 torch_fidelity==0.4.0 \
    pyquaternion==0.9.9 splines==0.3.0 plyfile==1.1.3 appdirs==1.4.4 pathos==0.3.5 multiprocess==0.70.19 \
    dill==0.4.1 ppft==1.7.8 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 \
    rpds-py==2026.9.1 arrow==1.4.0 fqdn==1.6.0 isoduration==20.11.0 jsonpointer==3.12 rfc3339-validator==0.1.4 \
    rfc3986-validator==0.1.1 rfc3987-syntax==1.1.0 uri-template==1.3.0 webcolors==25.10.0 lark==1.3.1 \
    cffi==2.1.1 pycparser==3.12 defusedxml==0.7.1 PySocks==1.7.1 wcwidth==0.9.4 janus==2.0.0 nest-asyncio==1.6.0 \
    retrying==1.4.2
download "$WORK" ray==2.60.0 gsplat==1.4.0 tensorly==0.10.0
for wheel in "$WORK"/*.whl; do python -m wheel unpack -d "$WORK/u" "$wheel" >/dev/null; done
R="$WORK/u/ray-2.60.0/ray"
rm -rf "$R/jars" "$R/rllib" "$R/data" "$R/serve" "$R/llm" "$R/tune" "$R/train" "$R/dashboard/client"
rm -rf "$WORK"/u/gsplat-1.4.0/gsplat/cuda/csrc/third_party/glm/{doc,test,util}
rm -rf "$WORK"/u/tensorly-0.10.0/tensorly/{datasets/data,tests}
for folder in "$WORK"/u/*/; do python -m wheel pack -d "$DEST" "$folder" >/dev/null; done
# The plugin itself, as the fallback where the editable install of the carried tree cannot build.
python -m pip wheel -q --no-deps --no-build-isolation . -w "$DEST"
du -sh "$DEST"
