"""Training every block as an ordinary ns-train run inside a Ray task (Ray schedules, retries and places them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nerfseg_plugin.blocks.gpu_memory import GpuMemoryWatch
from nerfseg_plugin.blocks.partition import BLOCK_DATAPARSER_ARGS, BLOCK_SCENE_DIR
from nerfseg_plugin.core.atomic import write_json_atomic

EXPERIMENT_NAME = "train"
TIMESTAMP = "block"
RESULT_FILE = "result.json"
ATTEMPTS_FILE = "attempts.jsonl"
LOG_FILE = "train.log"
_STEP_PATTERN = re.compile(r"^(\d+) \((\d+\.\d+)%\)", re.MULTILINE)


class InjectedFailure(RuntimeError):
    """Raised by the first attempt of a block listed in ``inject_failure`` (tests and drills of the retry path)."""


class BlockTrainingError(RuntimeError):
    """ns-train exited with an error; the message names the block and its log."""


@dataclass(frozen=True)
class BlockJob:
    """What one Ray task needs to train one block."""

    index: int
    block_dir: Path
    method: str
    train_args: tuple[str, ...]
    inject_failure: bool = False
    command: tuple[str, ...] | None = None
    """Run this instead of ns-train (drills of the scheduling without training); it must write the run's
    checkpoint like ns-train."""

    @property
    def run_dir(self) -> Path:
        return self.block_dir / EXPERIMENT_NAME / self.method / TIMESTAMP


def checkpoint_of(run_dir: Path) -> Path | None:
    """The latest step-*.ckpt of a run, or None."""
    checkpoints = sorted((run_dir / "nerfstudio_models").glob("step-*.ckpt"))
    return checkpoints[-1] if checkpoints else None


def finished_result(job: BlockJob) -> dict | None:
    """The block's result when it already trained to a checkpoint (a re-run skips it)."""
    path = job.block_dir / RESULT_FILE
    if not path.is_file() or checkpoint_of(job.run_dir) is None:
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def ns_train_command(job: BlockJob) -> list[str]:
    if job.command is not None:
        return list(job.command)
    executable = Path(sys.executable).parent / "ns-train"
    return [
        str(executable) if executable.exists() else "ns-train",
        job.method,
        "--data",
        str(job.block_dir / BLOCK_SCENE_DIR),
        "--output-dir",
        str(job.block_dir),
        "--experiment-name",
        EXPERIMENT_NAME,
        "--timestamp",
        TIMESTAMP,
        "--vis",
        "tensorboard",
        "--viewer.quit-on-train-completion",
        "True",
        *BLOCK_DATAPARSER_ARGS,
        *job.train_args,
    ]


def _record_attempt(job: BlockJob, entry: dict) -> int:
    """Append to the block's attempt log; returns the number of attempts recorded before this one."""
    path = job.block_dir / ATTEMPTS_FILE
    previous = len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({**entry, "attempt": previous + 1}) + "\n")
    return previous


def attempts_of(block_dir: Path) -> list[dict]:
    path = block_dir / ATTEMPTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def latest_step(block_dir: Path) -> tuple[int, float] | None:
    """(step, percent) last printed by the block's ns-train, for progress lines."""
    path = block_dir / LOG_FILE
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 20000))
        tail = handle.read().decode("utf-8", "replace").replace("\x1b[1K", "\n").replace("\x1b[2A", "\n")
    matches = _STEP_PATTERN.findall(tail)
    return (int(matches[-1][0]), float(matches[-1][1])) if matches else None


def train_block(job: BlockJob) -> dict:
    """Run ns-train for one block; returns views, Gaussians, wall time, the training process's peak RSS and (on GPU
    machines) its peak GPU memory.

    Runs inside a Ray task: an exception makes Ray retry the task (``retry_exceptions``), and every attempt is
    logged in the block's attempts.jsonl so the summary can report retries."""
    previous = _record_attempt(job, {"event": "start", "time": time.time(), "pid": os.getpid()})
    if job.inject_failure and previous == 0:
        raise InjectedFailure(f"block {job.index}: injected failure of the first attempt")
    if job.run_dir.exists():  # a half-written run of a failed attempt: start it again cleanly
        shutil.rmtree(job.run_dir)
    start = time.perf_counter()
    with (job.block_dir / LOG_FILE).open("w", encoding="utf-8") as log:
        process = subprocess.Popen(ns_train_command(job), stdout=log, stderr=subprocess.STDOUT, cwd=job.block_dir)
        # wait4 gives this child's own peak RSS (getrusage(CHILDREN) would mix in earlier tasks of this worker).
        with GpuMemoryWatch(process.pid) as gpu_memory:
            _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    checkpoint = checkpoint_of(job.run_dir)
    if process.returncode != 0 or checkpoint is None:
        raise BlockTrainingError(
            f"block {job.index}: ns-train exited with {process.returncode}; see {job.block_dir / LOG_FILE}"
        )
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    means = next(v for k, v in state["pipeline"].items() if k.endswith("gauss_params.means"))
    scene = json.loads((job.block_dir / BLOCK_SCENE_DIR / "transforms.json").read_text(encoding="utf-8"))
    result = {
        "index": job.index,
        "views": len(scene["frames"]),
        "gaussians": int(means.shape[0]),
        "seconds": seconds,
        # ru_maxrss is in KiB on Linux, bytes on macOS.
        "peak_rss_mib": usage.ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10),
        "peak_gpu_mib": gpu_memory.peak_mib,  # None on CPU machines
        "peak_gpu_source": gpu_memory.source,
        "checkpoint": str(checkpoint),
        "config": str(job.run_dir / "config.yml"),
        "attempts": previous + 1,
    }
    write_json_atomic(job.block_dir / RESULT_FILE, result)
    return result
