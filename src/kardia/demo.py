"""`kardia demo`: the whole Kardia-R1 method, end to end, on the embedded model, on a CPU.

The `kardia reproduce` recipe (build -> SFT -> GRPO -> evaluate base and tuned) on the sample data
shipped with the package, then compare (report, radar, paired differences) and one summary line. Every
stage resumes (stages.py); the evaluated situations are never trained on (samples/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import Field

from .config import KardiaConfig

Size = Literal["tiny", "small", "medium"]

# The demo is `kardia reproduce` on the shipped sample data (samples/README.md): the same build, label
# reader, training profile and evaluation, sized so `small` (the default) fits 15 minutes with set-up on
# 2 CPU cores; `tiny` is for CI; `medium` builds every sample situation.
SIZES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny": ("tiny", {}),
    "small": ("demo", {}),
    "medium": ("demo", {"situations": 192, "sft_epochs": 3.0, "grpo_steps": 4, "skip_stages": ()}),
}
SAMPLE_PROFILES = "kardia:samples/profiles.jsonl"
SAMPLE_TRAIN = "kardia:samples/situations.jsonl"
SAMPLE_EVAL = "kardia:samples/eval_situations.csv"


class DemoConfig(KardiaConfig):
    out: str = "kardia-demo"
    size: Size = "small"
    model: str = "embedded"  # the base policy; also user simulator, responder, critic and judge
    judge: str = "embedded"
    seed: int = 0
    overrides: dict[str, Any] = Field(default_factory=dict)  # any reproduce size key, e.g. {situations: 96}


class DemoError(RuntimeError):
    pass


def reproduce_config(cfg: DemoConfig):
    from .reproduce import ReproduceConfig

    size, over = SIZES[cfg.size]
    return ReproduceConfig(
        out=cfg.out, size=size, train_seeds=SAMPLE_TRAIN, eval_data=SAMPLE_EVAL, profiles=SAMPLE_PROFILES,
        profiles_kind="person", model=cfg.model, judge=cfg.judge, seed=cfg.seed, overrides={**over, **cfg.overrides},
    )


def stage_compare(out: Path) -> dict:
    from .eval.compare import compare_runs

    return compare_runs([out / "eval" / "base", out / "eval" / "grpo"], out / "compare", n_boot=1000)


def run_demo(cfg: DemoConfig) -> dict:
    from rich.console import Console

    from .reproduce import quiet_libraries, recipe
    from .stages import run_stages

    console = Console()
    out = Path(cfg.out)
    quiet_libraries(out)
    (out / "demo_config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    rcfg = reproduce_config(cfg)
    steps = recipe(rcfg, out, console) + [("compare", lambda r: stage_compare(out))]
    results, timings = run_stages(out, steps, console)
    summary = summary_line(out)
    (out / "summary.json").write_text(json.dumps({"timings_s": timings, "summary": summary}, indent=2))
    _print_end(console, out, timings, summary)
    return {"timings_s": timings, "summary": summary, "report": str(out / "compare" / "compare.md")}


def _metric(metrics: dict, key: str) -> float | None:
    m = metrics.get("criteria", {}).get(key)
    return m.get("value") if isinstance(m, dict) else None


def summary_line(out: Path) -> str:
    """Before / after on the held-out turns, read from the eval folders' own metrics files."""
    parts = []
    per = {}
    for name, folder in (("base", "base"), ("tuned", "grpo")):
        p = out / "eval" / folder / "metrics.json"
        per[name] = json.loads(p.read_text()) if p.exists() else {}
    for key, label, scale in (
        ("emotion_accuracy", "emotion acc", 100.0),
        ("format_validity", "format", 100.0),
        ("empathy", "empathy", 1.0),
        ("relevance", "relevance", 1.0),
    ):
        b, t = _metric(per["base"], key), _metric(per["tuned"], key)
        if b is None and t is None:
            continue
        fmt = (lambda v: "n/a" if v is None else (f"{v * scale:.1f}%" if scale == 100.0 else f"{v:.2f}"))
        parts.append(f"{label} {fmt(b)} -> {fmt(t)}")
    return "base -> tuned: " + "; ".join(parts) if parts else "no metrics found"


def _print_end(console, out: Path, timings: dict, summary: str) -> None:
    from rich.table import Table

    table = Table(title="kardia demo: time per stage")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for k, v in timings.items():
        table.add_row(k, f"{v:.0f}")
    table.add_row("total", f"{sum(timings.values()):.0f}")
    console.print(table)
    console.print(f"[bold]report:[/bold] {out / 'compare' / 'compare.md'} (and compare.html, radar_overlay.png)")
    console.print(f"[bold]{summary}[/bold]")


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: str = typer.Option("kardia-demo", "--out", "-o", help="output folder (a rerun resumes it)"),
        size: str = typer.Option("small", "--size", help="tiny (CI), small (default, ~15 min on 2 cores), medium"),
        config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML DemoConfig"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="override key=value (repeatable), e.g. overrides.sft_epochs=3"),
    ) -> None:
        """Build data, SFT, GRPO, evaluate base vs tuned and write the comparison report, on the embedded model."""
        cfg = DemoConfig.load(config, [f"out={out}", f"size={size}", *(set_ or [])])
        run_demo(cfg)
