"""Benchmark matrix: {scenes} x {rsseg-splat-lite, rsseg-nerf-lite, 2D UNet, colour lookup} x {ablations}, every
cell trained, timed and scored with the same metric code; writes benchmarks/results/<name>.md, .json and .png.

    # the README table: generated 64-view 256x256 scenes with 3 labeled views
    python benchmarks/run_matrix.py --name readme --generate-seeds 1 2 --readme README.md
    # a smoke run of a few minutes
    python benchmarks/run_matrix.py --name smoke --generate-seeds 1 --num-views 16 --size 96 --iterations 150 \
        --unet.steps 60
    # every ablation on your own scene
    python benchmarks/run_matrix.py --name mine --scenes /data/scene --ablations all

The 3D methods run as ``ns-train`` subprocesses (final report off) and are scored by ``rsseg-eval``; the baselines
run in-process through ``rsseg-baseline``'s code. ``rendered-labels`` (paper 000, Table IV) trains the UNet on the
labeled views plus the label maps a 3D run renders for all views (``rsseg-export-labels --split all``); the table
then shows the baseline's gain. View consistency uses the point z-buffer visibility test for every method, the only
one the baselines can use, so the column compares like with like; its ground-truth value is the score's ceiling.
Train time is nerfstudio's "Train Total" (the training loop) for the 3D methods and the fitting time for the
baselines. Cells whose results exist are not run again (``--no-resume`` to rerun).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import torch
import tyro

from nerfseg_plugin.baselines.cli import BaselineRun, run_baseline
from nerfseg_plugin.baselines.colour_lookup import ColourLookupConfig
from nerfseg_plugin.baselines.data import load_scene
from nerfseg_plugin.baselines.unet import UNetConfig
from nerfseg_plugin.evaluation.report import METRICS_FILE
from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene
from nerfseg_plugin.scenegen.layout import TownStyle

Method = Literal["rsseg-splat-lite", "rsseg-nerf-lite", "unet", "colour"]
METHODS_3D = ("rsseg-splat-lite", "rsseg-nerf-lite")
AUGMENTATION = "rendered-labels"
NO_PSEUDO_LABELS = "--pipeline.datamanager.pseudo-labels off"
WITH_PSEUDO_LABELS = "--pipeline.datamanager.pseudo-labels auto"
"""Pseudo-labels are off by default since the 2D appearance model; older tables' "full" rows trained with them."""
NO_APPEARANCE = "--pipeline.appearance.enabled False"
ONE_ROUND = "--pipeline.appearance.rounds 0.45"
ABLATIONS: dict[str, dict[str, str]] = {
    "rsseg-splat-lite": {
        "full": "",
        "no-pseudo-labels": NO_PSEUDO_LABELS,
        "pseudo-labels": WITH_PSEUDO_LABELS,
        "no-aggregation-2d": "--pipeline.model.aggregation-2d-weight 0",
        "no-aggregation-3d": "--pipeline.model.aggregation-3d-weight 0",
        "semantics-move-geometry": "--pipeline.model.semantic-geometry-gradients True",
        "pseudo-weight-0.25": "--pipeline.model.pseudo-label-loss-weight 0.25",
        "labels-only": "--pipeline.model.aggregation-2d-weight 0 --pipeline.model.aggregation-3d-weight 0 "
        "--pipeline.model.pseudo-label-loss-weight 0",
        "3d-only": NO_APPEARANCE,
        "one-round": ONE_ROUND,
    },
    "rsseg-nerf-lite": {
        "full": "",
        "no-pseudo-labels": NO_PSEUDO_LABELS,
        "pseudo-labels": WITH_PSEUDO_LABELS,
        "no-ray-conv": "--pipeline.model.use-ray-convolution False",
        "no-colour-radiance": "--pipeline.model.use-colour-radiance False",
        "3d-only": NO_APPEARANCE,
        "one-round": ONE_ROUND,
    },
    "unet": {"full": "", AUGMENTATION: ""},
    "colour": {"full": ""},
}
"""Per method: ablation name -> extra ns-train flags. "full" is the method as shipped."""
TRAIN_FLAGS = "--vis tensorboard --viewer.quit-on-train-completion True --pipeline.final-report False"
"""Every 3D run: no viewer, and no end-of-training report (rsseg-eval scores the run afterwards)."""
PYTHON_ENTRY = "import sys; from {module} import entrypoint; sys.exit(entrypoint())"


@dataclass
class MatrixConfig:
    """Scenes x methods x ablations, trained, timed and evaluated; one markdown table, JSON and figure."""

    name: str = "matrix"
    """Result name: benchmarks/results/<name>.md/.json/.png and <work-dir>/<name>/."""
    scenes: tuple[Path, ...] = ()
    """Existing scene folders."""
    generate_seeds: tuple[int, ...] = ()
    """Also generate one scene per seed with rsseg-make-scene (cached under <work-dir>/scenes)."""
    style: TownStyle = "downtown"
    """Town style of the generated scenes."""
    num_views: int = 64
    """Views of each generated scene."""
    size: int = 256
    """Width and height of the generated views, in pixels."""
    num_labeled: int = 3
    """Labeled views of each generated scene."""
    pseudo_labels: Literal["none", "vote", "sam2+vote"] = "sam2+vote"
    """Pseudo-label set generated for every scene before the 3D runs (rsseg-pseudo-labels; sam2+vote uses
    superpixel regions here, no SAM2 weights), scored against the evaluation maps; "pseudo-labels" runs train with
    it ("full" and "no-pseudo-labels" do not: pseudo-labels are off by default). none: generate nothing."""
    methods: tuple[Method, ...] = ("rsseg-splat-lite", "rsseg-nerf-lite", "unet", "colour")
    """Methods to run."""
    ablations: tuple[str, ...] = ("full", AUGMENTATION)
    """Ablation names (see ABLATIONS; each method runs those it has), or "all"."""
    iterations: int | None = None
    """Training steps of the 3D methods (--max-num-iterations; rsseg-nerf-lite starts its semantic stage at 3/4 of
    them). None: each method's default."""
    train_flags: tuple[str, ...] = ()
    """Extra ns-train flags for every 3D run (after the ablation's)."""
    augmentation_source: Literal["rsseg-splat-lite", "rsseg-nerf-lite"] = "rsseg-splat-lite"
    """The 3D method ("full") whose rendered labels the rendered-labels UNet trains on."""
    unet: UNetConfig = field(default_factory=UNetConfig)
    """UNet baseline settings."""
    colour: ColourLookupConfig = field(default_factory=ColourLookupConfig)
    """Colour-lookup baseline settings."""
    depth_tolerance: float = 0.03
    """Relative depth tolerance of the view-consistency visibility test."""
    zbuffer_cell: int = 8
    """Pixel block of the point z-buffer of the visibility test."""
    work_dir: Path = Path("outputs/benchmarks")
    """Runs, exports, logs and generated scenes."""
    results_dir: Path = Path("benchmarks/results")
    """Where <name>.md/.json/.png go."""
    resume: bool = True
    """Reuse cells whose results exist (a finished training is never repeated)."""
    readme: Path | None = None
    """Replace the block between <!-- benchmark:NAME:start --> and <!-- benchmark:NAME:end --> (NAME = --name) in
    this file with the table, so a README can carry several matrices."""


class CellFailed(RuntimeError):
    """A subprocess of a cell failed; the message carries its log's tail."""


def _run(command: list[str], log: Path) -> float:
    """Run ``command`` with output to ``log``; returns the wall time; raises CellFailed on a non-zero exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as stream:
        code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        raise CellFailed(f"exit {code} (log {log}):\n" + "\n".join(tail))
    return time.perf_counter() - started


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-c", PYTHON_ENTRY.format(module=module), *args]


def _train_total(run_dir: Path) -> float | None:
    """nerfstudio's "Train Total (time)" scalar (written when training finishes), or None."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(run_dir.glob("events.out.tfevents.*")):
        return None
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "Train Total (time)" not in events.Tags()["scalars"]:
        return None
    return float(events.Scalars("Train Total (time)")[-1].value)


class Matrix:
    def __init__(self, config: MatrixConfig) -> None:
        self.config = config
        self.root = config.work_dir / config.name

    def scenes(self) -> list[Path]:
        scenes = list(self.config.scenes)
        for seed in self.config.generate_seeds:
            c = self.config
            folder = c.work_dir / "scenes" / f"{c.style}-s{seed}-{c.num_views}v-{c.size}px-{c.num_labeled}l"
            if not (folder / "transforms.json").is_file():
                views = {"num_views": c.num_views, "width": c.size, "height": c.size, "num_labeled": c.num_labeled}
                # overwrite: a folder without transforms.json is an interrupted generation
                generate_scene(SceneGenConfig(folder, seed, c.style, **views, overwrite=True, show_progress=False))
            scenes.append(folder)
        if not scenes:
            raise SystemExit("run_matrix: give --scenes and/or --generate-seeds")
        return scenes

    def cells(self) -> list[tuple[str, str]]:
        """(method, ablation) pairs, 3D methods first, the augmentation source's full run added when needed."""
        wanted = set(self.config.ablations)
        cells = [
            (method, ablation)
            for method in sorted(self.config.methods, key=lambda m: m not in METHODS_3D)
            for ablation in ABLATIONS[method]
            if "all" in wanted or ablation in wanted
        ]
        source = (self.config.augmentation_source, "full")
        if ("unet", AUGMENTATION) in cells and source not in cells:
            cells.insert(0, source)
        return cells

    def run_3d(self, scene: Path, method: str, ablation: str) -> dict:
        run_dir = self.root / "runs" / scene.name / method / ablation  # nerfstudio: output/experiment/method/stamp
        logs = self.root / "logs" / scene.name
        if not (self.config.resume and _train_total(run_dir) is not None):
            steps = self.config.iterations
            schedule = [] if steps is None else ["--max-num-iterations", str(steps)]
            if steps is not None and method == "rsseg-nerf-lite":
                schedule += ["--pipeline.model.semantic-stage-start", str(3 * steps // 4)]
            paths = ["--data", str(scene), "--output-dir", str(self.root / "runs"), "--experiment-name", scene.name]
            flags = shlex.split(f"{TRAIN_FLAGS} {ABLATIONS[method][ablation]}") + list(self.config.train_flags)
            command = _python("nerfstudio.scripts.train", method, *paths, "--timestamp", ablation, *schedule, *flags)
            _run(command, logs / f"{method}-{ablation}-train.log")
        if not (self.config.resume and (run_dir / "evaluation" / METRICS_FILE).is_file()):
            consistency = shlex.split(
                f"--consistency.visibility point-zbuffer --consistency.depth-tolerance {self.config.depth_tolerance} "
                f"--consistency.zbuffer-cell {self.config.zbuffer_cell}"
            )
            paths = ["--load-config", str(run_dir / "config.yml"), "--output-dir", str(run_dir / "evaluation")]
            _run(_python("nerfseg_plugin.evaluation.cli", *paths, *consistency), logs / f"{method}-{ablation}-eval.log")
        report = json.loads((run_dir / "evaluation" / METRICS_FILE).read_text(encoding="utf-8"))
        report["train_time_s"] = _train_total(run_dir)
        return report

    def run_baseline(self, scene: Path, method: str, ablation: str) -> dict:
        output = self.root / "baselines" / scene.name / method / ablation
        if self.config.resume and (output / METRICS_FILE).is_file():
            return json.loads((output / METRICS_FILE).read_text(encoding="utf-8"))
        extra_labels = None
        if ablation == AUGMENTATION:
            source_run = self.root / "runs" / scene.name / self.config.augmentation_source / "full"
            extra_labels = self.root / "exports" / scene.name / self.config.augmentation_source
            if not (self.config.resume and (extra_labels / "labels").is_dir()):
                _run(
                    _python(
                        "nerfseg_plugin.export.cli",
                        "--load-config",
                        str(source_run / "config.yml"),
                        "--output-dir",
                        str(extra_labels),
                        "--split",
                        "all",
                        "--no-gaussians-ply",
                    ),
                    self.root / "logs" / scene.name / f"export-{self.config.augmentation_source}.log",
                )
        run = BaselineRun(
            data=scene,
            method=method,
            output_dir=output,
            extra_labels=extra_labels,
            colour=self.config.colour,
            unet=self.config.unet,
            depth_tolerance=self.config.depth_tolerance,
            zbuffer_cell=self.config.zbuffer_cell,
        )
        return run_baseline(run, load_scene(scene))

    def pseudo_labels(self, scene: Path) -> dict | None:
        """Generate (or reuse the valid cache of) the scene's pseudo-label set and score it."""
        if self.config.pseudo_labels == "none":
            return None
        from nerfseg_plugin.pseudolabels.cli import PseudoLabelConfig
        from nerfseg_plugin.pseudolabels.cli import main as generate
        from nerfseg_plugin.pseudolabels.evaluation import score_pseudo_labels

        started = time.perf_counter()
        directory = generate(PseudoLabelConfig(data=scene, method=self.config.pseudo_labels, score=False))
        score = asdict(score_pseudo_labels(scene, directory))
        return {"scene": scene.name, "method": self.config.pseudo_labels, "seconds": time.perf_counter() - started,
                **score}  # fmt: skip

    def run(self) -> tuple[list[dict], list[dict]]:
        records, pseudo_scores = [], []
        for scene in self.scenes():
            score = self.pseudo_labels(scene)
            if score is not None:
                pseudo_scores.append(score)
            for method, ablation in self.cells():
                print(f"[run_matrix] {scene.name} / {method} / {ablation}", flush=True)
                record = {"scene": scene.name, "method": method, "ablation": ablation, "status": "ok"}
                try:
                    runner = self.run_3d if method in METHODS_3D else self.run_baseline
                    record["report"] = runner(scene, method, ablation)
                except Exception as err:  # one broken cell must not lose the others (finished cells are cached)
                    record["status"] = f"failed: {type(err).__name__}: {err}"
                    print(f"[run_matrix] FAILED {record['status']}", flush=True)
                records.append(record)
        return records, pseudo_scores


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _decibels(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def markdown(records: list[dict], command: str, machine: dict, pseudo_scores: list[dict] = ()) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {machine['cpu_count']} CPUs, load {machine['load_average']}, CUDA {machine['cuda']}; "
        f"{machine['date']}",
        "",
        "| scene | method | ablation | mIoU | total acc | avg acc | view consistency (GT) | RGB PSNR | train (s) "
        "| s / view |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['scene']} | {r['method']} | {r['ablation']} | {r['status'].splitlines()[0]} ||||||")
            continue
        m = r["report"]
        consistency = m.get("view_consistency") or {}
        reference = consistency.get("ground_truth") or {}
        lines.append(
            f"| {r['scene']} | {r['method']} | {r['ablation']} | {_pct(m['miou'])} | {_pct(m['total_accuracy'])} | "
            f"{_pct(m['average_accuracy'])} | {_pct(consistency.get('consistent_share'))} "
            f"({_pct(reference.get('consistent_share'))}) | {_decibels(m.get('rgb_psnr'))} | "
            f"{_seconds(m.get('train_time_s'))} | "
            f"{_seconds(m['render_time_per_view']['mean_s'])} |"
        )
    if pseudo_scores:
        lines += ["", "Pseudo-labels against the evaluation maps (%; B = pixels where they apply):", ""]
        lines += [
            "| scene | set | coverage | accuracy | mIoU | B share | coverage in B | accuracy in B | time (s) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        keys = ("coverage", "accuracy", "miou", "boundary_fraction", "coverage_in_boundary", "accuracy_in_boundary")
        for p in pseudo_scores:
            values = " | ".join(_pct(p[k]) for k in keys)
            lines.append(f"| {p['scene']} | {p['method']} | {values} | {_seconds(p['seconds'])} |")
    ok = [r for r in records if r["status"] == "ok"]
    for scene in dict.fromkeys(r["scene"] for r in ok):
        unet = {r["ablation"]: r["report"]["miou"] for r in ok if r["scene"] == scene and r["method"] == "unet"}
        if "full" in unet and AUGMENTATION in unet:
            gain = 100 * (unet[AUGMENTATION] - unet["full"])
            lines.append(
                f"\nData augmentation on {scene}: UNet mIoU {_pct(unet['full'])} (labeled views) -> "
                f"{_pct(unet[AUGMENTATION])} (+ rendered labels of all views), {gain:+.1f} points."
            )
    if ok:
        names = ok[0]["report"]["class_names"]
        lines += ["", "Per-class IoU (%):", "", "| scene | method | ablation | " + " | ".join(names) + " |"]
        lines.append("|---|---|---|" + "---:|" * len(names))
        for r in ok:
            per_class = r["report"]["per_class"]
            cells = " | ".join(_pct(per_class[n]["iou"]) if n in per_class else "–" for n in names)
            lines.append(f"| {r['scene']} | {r['method']} | {r['ablation']} | {cells} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    ok = [r for r in records if r["status"] == "ok"]
    labels = [f"{r['scene']}\n{r['method']}/{r['ablation']}" for r in ok]
    figure = Figure(figsize=(max(8.0, 1.1 * len(ok) + 5), 4.5), layout="constrained")
    bars, scatter = figure.subplots(1, 2, width_ratios=[max(1, len(ok)), 4])
    miou = [100 * r["report"]["miou"] for r in ok]
    colours = [f"C{list(ABLATIONS).index(r['method'])}" for r in ok]
    bars.bar(range(len(ok)), miou, color=colours)
    bars.set_xticks(range(len(ok)), labels, rotation=60, ha="right", fontsize=7)
    bars.set_ylabel("mIoU (%)")
    bars.set_ylim(0, 100)
    for r, value, colour in zip(ok, miou, colours, strict=True):
        seconds = r["report"].get("train_time_s")
        if seconds:
            scatter.scatter(seconds, value, color=colour)
            scatter.annotate(f"{r['method']}/{r['ablation']}", (seconds, value), fontsize=6)
    scatter.set_xscale("log")
    scatter.set_xlabel("train time (s, log)")
    scatter.set_ylabel("mIoU (%)")
    figure.savefig(path, dpi=110)


def update_readme(readme: Path, table: str, name: str) -> None:
    start, end = f"<!-- benchmark:{name}:start -->", f"<!-- benchmark:{name}:end -->"
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise SystemExit(f"{readme}: needs the markers {start} and {end} around the benchmark table")
    head, rest = text.split(start, 1)
    readme.write_text(head + start + "\n" + table + rest[rest.index(end) :], encoding="utf-8")


def main(config: MatrixConfig) -> None:
    command = "python benchmarks/run_matrix.py " + shlex.join(sys.argv[1:])
    machine = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "load_average": ", ".join(f"{v:.1f}" for v in os.getloadavg()),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    records, pseudo_scores = Matrix(config).run()
    config.results_dir.mkdir(parents=True, exist_ok=True)
    base = config.results_dir / config.name
    settings = json.loads(json.dumps(asdict(config), default=str))
    document = {
        "command": command,
        "machine": machine,
        "config": settings,
        "pseudo_labels": pseudo_scores,
        "results": records,
    }
    base.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    table = markdown(records, command, machine, pseudo_scores)
    base.with_suffix(".md").write_text(table, encoding="utf-8")
    plot(records, base.with_suffix(".png"))
    if config.readme is not None:
        update_readme(config.readme, table, config.name)
    print(table)
    print(f"[run_matrix] wrote {base}.md, .json and .png")


if __name__ == "__main__":
    main(tyro.cli(MatrixConfig))
