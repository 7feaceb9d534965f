"""``rsseg-train-blocks``: partition a scene into ground blocks, train each as a Ray task, merge into one run.

Arguments it does not know are passed to every block's ns-train (e.g. ``--max-num-iterations 3000``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro

from nerfseg_plugin.blocks.partition import partition_scene
from nerfseg_plugin.blocks.training import BlockJob, attempts_of, finished_result, latest_step, train_block
from nerfseg_plugin.core.errors import SceneFormatError


@dataclass
class TrainBlocks:
    """Train a scene too large for one machine as overlapping ground blocks on Ray, merged into one model."""

    data: Path
    """Scene folder (rsseg scene format, with sparse_pc.ply)."""
    output_dir: Path
    """Writes partition.json, blocks/<i>/{scene, train/<method>/block, result.json} and merged/<method>/merged."""
    method: Literal["rsseg-splat", "rsseg-splat-lite"] = "rsseg-splat-lite"
    """Method every block trains with (splatting: the merge concatenates Gaussians)."""
    num_blocks: int | None = None
    """Number of blocks (the grid closest to square cells); give this or block_size."""
    block_size: float | None = None
    """Block side in metres of the scene file's frame (metric when georeferenced); give this or num_blocks."""
    overlap: float = 0.2
    """Each block's cameras and initial points come from its cell grown by this fraction of a cell per side."""
    min_visible_points: int = 20
    """A camera joins a block when it sees at least this many of the block's sparse points."""
    min_visible_share: float = 0.25
    """... and when at least this share of the sparse points it sees lie in the block (VastGaussian's 25 %
    visibility threshold), so a view showing the block only in a corner stays out of its memory; labeled views
    join every block they see, and a view no block takes joins the one it sees most of. 0 = every view that sees."""
    ray_address: str | None = None
    """Address of an existing Ray cluster (e.g. ray://head:10001 or auto); default: a local Ray on this machine."""
    num_cpus: int = 2
    """CPUs of the local Ray (ignored with ray_address)."""
    cpus_per_block: float = 1.0
    """CPUs reserved per block task."""
    gpus_per_block: float | None = None
    """GPUs per block task; default 1 when the cluster has GPUs, else 0."""
    max_retries: int = 2
    """Ray retries of a failed block (task crash or exception)."""
    inject_failure: tuple[int, ...] = ()
    """For drills and tests: the first attempt of these blocks raises, to exercise retries."""
    train_args: tuple[str, ...] = field(default_factory=tuple)
    """Extra ns-train arguments for every block (unknown command-line arguments land here)."""

    def main(self) -> dict:
        if (self.num_blocks is None) == (self.block_size is None):
            raise SystemExit("rsseg-train-blocks: give exactly one of --num-blocks and --block-size")
        if not 0 <= self.min_visible_share <= 1:
            raise SystemExit(f"rsseg-train-blocks: --min-visible-share must be in [0, 1], got {self.min_visible_share}")
        if not 0 <= self.overlap < 1:
            raise SystemExit(f"rsseg-train-blocks: --overlap must be in [0, 1), got {self.overlap}")
        dataparser = self._dataparser_config()
        plan = partition_scene(
            dataparser,
            self.output_dir,
            num_blocks=self.num_blocks,
            block_size=self.block_size,
            overlap=self.overlap,
            min_visible_points=self.min_visible_points,
            min_visible_share=self.min_visible_share,
        )
        print(f"Partitioned {plan['num_views']} views into {len(plan['blocks'])} blocks: {self.output_dir}")
        results = self.train_all(plan)
        from nerfseg_plugin.blocks.merge import merge_blocks

        merged = merge_blocks(plan, results, self.output_dir, dataparser)
        print_summary(results, merged)
        return {"plan": plan, "blocks": results, "merged": merged}

    def _dataparser_config(self):
        from nerfstudio.configs.method_configs import all_methods

        if self.method not in all_methods:
            raise SystemExit(f"rsseg-train-blocks: method {self.method} is not registered")
        dataparser = copy.deepcopy(all_methods[self.method].pipeline.datamanager.dataparser)
        dataparser.data = self.data.resolve()
        return dataparser

    def jobs(self, plan: dict) -> list[BlockJob]:
        return [
            BlockJob(
                index=block["index"],
                block_dir=self.output_dir.resolve() / "blocks" / str(block["index"]),
                method=self.method,
                train_args=tuple(self.train_args),
                inject_failure=block["index"] in self.inject_failure,
            )
            for block in plan["blocks"]
        ]

    def train_all(self, plan: dict) -> list[dict]:
        """Blocks with a checkpoint are skipped; the others run as Ray tasks (retried by Ray on failure)."""
        import ray

        jobs = self.jobs(plan)
        results: dict[int, dict] = {}
        for job in jobs:
            done = finished_result(job)
            if done is not None:
                print(f"  block {job.index}: already trained ({done['checkpoint']}), skipped")
                results[job.index] = {**done, "skipped": True}
        pending_jobs = [job for job in jobs if job.index not in results]
        if not pending_jobs:
            return [results[job.index] for job in jobs]
        started_here = not ray.is_initialized()
        if started_here:
            if self.ray_address is None:
                # Loopback only: a local cluster needs no network interface.
                ray.init(
                    num_cpus=self.num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    _node_ip_address="127.0.0.1",
                )
            else:
                ray.init(address=self.ray_address, log_to_driver=False)
        try:
            gpus = self.gpus_per_block
            if gpus is None:
                gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
            task = ray.remote(num_cpus=self.cpus_per_block, num_gpus=gpus, max_retries=self.max_retries)(
                train_block
            ).options(retry_exceptions=True)
            pending = {task.remote(job): job for job in pending_jobs}
            failures = {}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=30)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        results[job.index] = ray.get(ref)
                        print(f"  block {job.index}: done in {results[job.index]['seconds']:.0f} s")
                    except Exception as err:  # Ray re-raises the task's last error once retries are spent
                        failures[job.index] = err
                        print(f"  block {job.index}: FAILED after {len(attempts_of(job.block_dir))} attempts: {err}")
                for job in pending.values():
                    progress = latest_step(job.block_dir)
                    if progress is not None:
                        print(f"  block {job.index}: step {progress[0]} ({progress[1]:.0f}%)")
            if failures:
                raise SystemExit(
                    f"rsseg-train-blocks: blocks {sorted(failures)} failed (logs in blocks/<i>/train.log); "
                    "re-run the same command to retry them, finished blocks are kept"
                )
        finally:
            if started_here:
                ray.shutdown()
        for job in pending_jobs:
            results[job.index]["attempts"] = len(attempts_of(job.block_dir))
        return [results[job.index] for job in jobs]


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_summary(results: list[dict], merged: dict) -> None:
    print("\n| block | views | Gaussians (owned) | attempts | time (s) | peak RSS (MiB) | peak GPU (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for result, owned in zip(results, merged["owned_gaussians"], strict=True):
        skipped = " (skipped)" if result.get("skipped") else ""
        print(
            f"| {result['index']} | {result['views']} | {result['gaussians']} ({owned}) | {result['attempts']}{skipped}"
            f" | {result['seconds']:.1f} | {result['peak_rss_mib']:.0f} | {_mib(result.get('peak_gpu_mib'))} |"
        )
    for pair in merged["overlaps"]:
        print(
            f"Overlap of blocks {pair['blocks']}: {pair['disagreement']:.1%} of {pair['gaussians']} Gaussians "
            "disagree with the other block's nearest Gaussian"
        )
    print(f"Merged {merged['gaussians']} Gaussians: {merged['config']}")


def entrypoint() -> None:
    """Console-script entry point."""
    tyro.extras.set_accent_color("bright_yellow")
    config, unknown = tyro.cli(TrainBlocks, return_unknown_args=True)
    config.train_args = tuple(config.train_args) + tuple(unknown)
    try:
        config.main()
    except SceneFormatError as err:
        raise SystemExit(f"rsseg-train-blocks: {err}") from None


if __name__ == "__main__":
    entrypoint()
