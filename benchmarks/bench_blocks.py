"""rsseg-train-blocks against one model on the same generated town: mIoU, wall time, peak memory per worker.

    nice -n 10 python benchmarks/bench_blocks.py --work-dir /tmp/bench_blocks --num-views 64 --num-blocks 2 \
        --num-cpus 2 -- --max-num-iterations 1500

Prints one table: the single model (one ns-train) and the merged blocks (local Ray, ``--num-cpus`` CPUs), each
scored with ns-eval on the scene's evaluation views (dataset-level mIoU), plus the per-block table of
rsseg-train-blocks. Peak memory is the max RSS of each training process (wait4 of the child) and, on GPU machines,
its peak GPU memory (NVML, nerfseg_plugin.blocks.gpu_memory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from nerfseg_plugin.blocks.gpu_memory import GpuMemoryWatch

BIN = Path(sys.executable).parent


@dataclass
class BenchBlocks:
    work_dir: Path
    """Scratch folder (scene, runs, evaluations)."""
    num_views: int = 64
    """Views of the generated town (the issue's 4x-area case: 256 views, 4 blocks)."""
    size: int = 128
    """Image width and height in pixels."""
    num_blocks: int = 2
    """Blocks of the partition."""
    num_cpus: int = 2
    """CPUs of the local Ray."""
    cpus_per_block: float = 1.0
    """CPUs each block task reserves (= its torch threads: Ray sets OMP_NUM_THREADS); num_cpus here trains one
    block at a time with all the machine's threads."""
    gpus_per_block: float | None = None
    """GPUs each block task reserves (rsseg-train-blocks' default: 1 on GPU machines, so blocks take turns on one
    GPU); e.g. 0.5 trains two blocks at once on one GPU."""
    method: str = "rsseg-splat-lite"
    """Method of both the single model and the blocks."""
    seed: int = 0
    """Scene seed."""
    flight: str = "orbit"
    """Flight of the generated town (rsseg-make-scene --flight); grid for a survey block."""
    town_size: float = 120.0
    """Side of the town in metres; 240 with 4x the grid views is the same flight over 4x the area."""
    num_labeled: int = 3
    """Labeled views (spread evenly); scale with the area (12 for 4x) to keep the labels per block."""
    train_args: tuple[str, ...] = field(default_factory=tuple)
    """Extra ns-train arguments for both (after a lone --)."""


def _timed(command: list[str], log: Path) -> tuple[float, float, float | None]:
    """(wall seconds, peak RSS MiB of the child, its peak GPU MiB or None without a GPU) of a command."""
    start = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        with GpuMemoryWatch(process.pid) as gpu_memory:
            _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[0]} failed; see {log}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, gpu_memory.peak_mib


def _import_baseline_mib(log: Path) -> float:
    """Peak RSS of a process that only imports the training stack: the part of every worker's memory that no
    partition can shrink (torch, nerfstudio, the plugin), subtracted to compare what scales with the block."""
    code = "import nerfstudio.scripts.train, nerfseg_plugin.splat.model"
    return _timed([sys.executable, "-c", code], log)[1]


def _miou(config: Path, output: Path) -> float:
    subprocess.run([str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(output)], check=True)
    return float(json.loads(output.read_text())["results"]["miou"])


def main(bench: BenchBlocks) -> None:
    bench.work_dir.mkdir(parents=True, exist_ok=True)
    scene = bench.work_dir / f"town{bench.num_views}_{bench.flight}"
    if not scene.exists():
        subprocess.run(
            [str(BIN / "rsseg-make-scene"), "--output", str(scene), "--num-views", str(bench.num_views)]
            + ["--width", str(bench.size), "--height", str(bench.size), "--seed", str(bench.seed)]
            + ["--flight", bench.flight, "--town-size", str(bench.town_size), "--num-labeled", str(bench.num_labeled)],
            check=True,
        )
    single_dir = bench.work_dir / "single"
    single_seconds, single_rss, single_gpu = _timed(
        [str(BIN / "ns-train"), bench.method, "--data", str(scene), "--output-dir", str(single_dir)]
        + ["--experiment-name", "single", "--timestamp", "run", "--vis", "tensorboard", *bench.train_args],
        bench.work_dir / "single.log",
    )
    single_config = single_dir / "single" / bench.method / "run" / "config.yml"
    blocks_dir = bench.work_dir / f"blocks{bench.num_blocks}"
    blocks_seconds, _, _ = _timed(
        [str(BIN / "rsseg-train-blocks"), "--data", str(scene), "--output-dir", str(blocks_dir)]
        + ["--method", bench.method, "--num-blocks", str(bench.num_blocks), "--num-cpus", str(bench.num_cpus)]
        + ["--cpus-per-block", str(bench.cpus_per_block)]
        + ([] if bench.gpus_per_block is None else ["--gpus-per-block", str(bench.gpus_per_block)])
        + list(bench.train_args),
        bench.work_dir / "blocks.log",
    )
    merged_config = blocks_dir / "merged" / bench.method / "merged" / "config.yml"
    single_miou = _miou(single_config, bench.work_dir / "single_eval.json")
    merged_miou = _miou(merged_config, bench.work_dir / "merged_eval.json")
    results = [json.loads(p.read_text()) for p in sorted((blocks_dir / "blocks").glob("*/result.json"))]
    peak_block = max(r["peak_rss_mib"] for r in results)

    print(
        f"\nScene {scene.name}: {bench.num_views} views {bench.size}x{bench.size}, {bench.flight} flight over "
        f"{bench.town_size:.0f} m; {bench.method}"
    )
    print("| run | mIoU | wall (s) | peak RSS per worker (MiB) |")
    print("|---|---:|---:|---:|")
    print(f"| single model | {100 * single_miou:.1f} | {single_seconds:.0f} | {single_rss:.0f} |")
    print(
        f"| {bench.num_blocks} blocks, merged ({bench.num_cpus} CPUs, {bench.cpus_per_block:g} per block) | "
        f"{100 * merged_miou:.1f} | "
        f"{blocks_seconds:.0f} | {peak_block:.0f} |"
    )
    print(f"mIoU difference (merged - single): {100 * (merged_miou - single_miou):+.1f} points (target within 5)")
    print(f"peak memory per block / single model: {peak_block / single_rss:.2f}")
    block_gpu = [r["peak_gpu_mib"] for r in results if r.get("peak_gpu_mib") is not None]
    if single_gpu is not None and block_gpu:
        peak_block_gpu = max(block_gpu)
        print(
            f"peak GPU memory per block / single model: {peak_block_gpu / max(single_gpu, 1.0):.2f} "
            f"({peak_block_gpu:.0f} vs {single_gpu:.0f} MiB, CUDA context and allocator cache included)"
        )
    baseline = _import_baseline_mib(bench.work_dir / "baseline.log")
    print(
        f"above the import baseline ({baseline:.0f} MiB: torch + nerfstudio + plugin): "
        f"{(peak_block - baseline) / max(single_rss - baseline, 1.0):.2f} "
        f"({peak_block - baseline:.0f} vs {single_rss - baseline:.0f} MiB)"
    )
    print("\nPer block (from rsseg-train-blocks):")
    for line in (bench.work_dir / "blocks.log").read_text().splitlines():
        if line.startswith("|") or line.startswith("Overlap"):
            print(line)


if __name__ == "__main__":
    args = sys.argv[1:]
    extra: list[str] = []
    if "--" in args:
        args, extra = args[: args.index("--")], args[args.index("--") + 1 :]
    config = tyro.cli(BenchBlocks, args=args)
    config.train_args = tuple(config.train_args) + tuple(extra)
    main(config)
