#!/usr/bin/env bash
# One prepared GPU session (the project's CUDA checks; run from the repo root on a CUDA machine):
#   1. install: wheels from WHEELS (default .whl, for machines without a package index) and this repo (editable);
#   2. gsplat 1.4.0's CUDA extension, JIT-built for this GPU's architecture only;
#   3. side by side on the one GPU: the GPU-marked tests (CPU rasterizer vs gsplat CUDA, pinhole and ortho) and
#      rsseg-train-blocks on CUDA against one model (benchmarks/bench_blocks.py), a 64-view town in 2 blocks and
#      the 4x area (256-view grid) in 4 blocks (peak GPU memory per block vs the model);
#   4. the label ortho through gsplat's ortho camera vs the CPU rasterizer (benchmarks/ortho_backends.py).
# Every stage has its own time limit and prints its start time; scenes and runs go to WORK, the benchmarks' logs
# and result files are packed into OUT/results.tar.gz (OUT: default ./gpu_out).
set -u -o pipefail
OUT=${OUT:-$PWD/gpu_out}
WORK=${WORK:-/tmp/gpu_session}
WHEELS=${WHEELS:-.whl}
BUDGET_S=${BUDGET_S:-580}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.gpu/torch_extensions}
T0=$(date +%s)
elapsed() { echo $(($(date +%s) - T0)); }
stage() { echo "=== [$(elapsed) s] $*"; }
left() { echo $((BUDGET_S - $(elapsed))); }

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
nvcc --version | tail -2

stage "install"
if [ -d "$WHEELS" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "$WHEELS"/*.whl || exit 1
fi
# Editable, so this tree's code runs; the plugin's wheel among WHEELS is the fallback where that cannot build.
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile -e . || echo "editable install failed"

stage "gsplat CUDA build"
timeout 300 python3 -c "
import time; t = time.perf_counter()
from gsplat.cuda._backend import _C
assert _C is not None, 'gsplat CUDA extension did not build'
print(f'gsplat CUDA extension ready in {time.perf_counter() - t:.0f} s')" 2>&1 | tail -25 || exit 1

# The rest runs side by side on the one GPU (the card's memory is far from full), each with a time limit.
stage "GPU tests, 2-block and 4-block benchmarks started side by side"
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gsplat_parity.py >"$WORK/gpu_tests.log" 2>&1 &
TESTS=$!
TRAIN=(-- --max-num-iterations 1500)
# 4x the area (256-view grid) in 4 blocks, a quarter of the GPU each: peak GPU memory per block vs the model.
timeout $(($(left) - 15)) python3 benchmarks/bench_blocks.py --work-dir "$WORK/grid256" --num-views 256 \
    --num-blocks 4 --flight grid --town-size 240 --num-labeled 12 --num-cpus 8 --cpus-per-block 2 \
    --gpus-per-block 0.25 "${TRAIN[@]}" >"$WORK/grid256.log" 2>&1 &
GRID=$!
# The 2-block run: a 64-view town, one GPU per block (Ray's default), so the blocks take turns.
timeout $(($(left) - 75)) python3 benchmarks/bench_blocks.py --work-dir "$WORK/town64" --num-views 64 --num-blocks 2 \
    --num-cpus 4 --cpus-per-block 2 "${TRAIN[@]}" >"$WORK/town64.log" 2>&1
stage "2-block benchmark ended ($?)"
tail -25 "$WORK/town64.log"
wait $TESTS
stage "GPU tests ended"
tail -25 "$WORK/gpu_tests.log"
SINGLE="$WORK/town64/single/single/rsseg-splat-lite/run/config.yml"
if [ -f "$SINGLE" ] && [ "$(left)" -gt 40 ]; then
    stage "label ortho: gsplat's CUDA ortho camera vs the CPU rasterizer (single model of the 64-view town)"
    timeout $(($(left) - 15)) python3 benchmarks/ortho_backends.py --load-config "$SINGLE" 2>&1 | tail -8
fi
wait $GRID
stage "4-block benchmark ended ($?)"
tail -25 "$WORK/grid256.log"
stage "pack"
(cd "$WORK" && find . \( -name "*.log" -o -name "*eval.json" -o -name result.json -o -name attempts.jsonl \
    -o -name partition.json -o -name metrics.json \) -size -4M -print0 | tar --null -czf "$OUT/results.tar.gz" -T -)
stage "done"
