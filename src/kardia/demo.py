"""`kardia demo`: the whole Kardia-R1 method, end to end, on the embedded model, on a CPU.

A plain recipe over the real components (torchtune style): build -> sft -> grpo -> eval (base and
tuned) -> compare. Each stage writes `DIR/stages/<stage>.json` when it finishes, so a rerun resumes at
the first unfinished stage (and the stages themselves resume inside: build and eval per item, training
from its last checkpoint).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import Field

from .config import KardiaConfig

Size = Literal["tiny", "small", "medium"]

# Sizes are chosen so `small` (the default) fits 15 minutes on 2 CPU cores; `tiny` is for CI.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(profiles=4, dialogues_per_profile=1, max_exchanges=2, max_revisions=1, sft_steps=2,
                 grpo_steps=1, num_generations=2, completion_tokens=32, eval_turns=2, build_tokens=20),
    "small": dict(profiles=8, dialogues_per_profile=2, max_exchanges=2, max_revisions=1, sft_steps=6,
                  grpo_steps=1, num_generations=4, completion_tokens=64, eval_turns=6, build_tokens=24),
    "medium": dict(profiles=8, dialogues_per_profile=4, max_exchanges=4, max_revisions=2, sft_steps=80,
                   grpo_steps=10, num_generations=4, completion_tokens=128, eval_turns=48, build_tokens=60),
}

STAGES = ("build", "sft", "grpo", "eval_base", "eval_tuned", "compare")


class DemoConfig(KardiaConfig):
    out: str = "kardia-demo"
    size: Size = "small"
    model: str = "embedded"  # the base policy; also user simulator, responder, critic and judge
    judge: str = "embedded"
    profiles: Optional[int] = None
    dialogues_per_profile: Optional[int] = None
    max_exchanges: Optional[int] = None
    max_revisions: Optional[int] = None
    sft_steps: Optional[int] = None
    grpo_steps: Optional[int] = None
    num_generations: Optional[int] = None
    completion_tokens: Optional[int] = None
    eval_turns: Optional[int] = None
    build_tokens: Optional[int] = None  # max tokens of each free-text call while building
    seed: int = 0
    extra: dict[str, Any] = Field(default_factory=dict)

    def sized(self, key: str) -> Any:
        value = getattr(self, key)
        return SIZES[self.size][key] if value is None else value


class DemoError(RuntimeError):
    pass


def _console():
    from rich.console import Console

    return Console()


def _done(out: Path, stage: str) -> dict | None:
    p = out / "stages" / f"{stage}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _mark(out: Path, stage: str, summary: dict) -> dict:
    d = out / "stages"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{stage}.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(d / f"{stage}.json")
    return summary


def stage_build(cfg: DemoConfig, out: Path) -> dict:
    from .data.config import BuildConfig
    from .data.engine import run_build

    bcfg = BuildConfig.load(
        None,
        [
            "profiles=[{kind: person, path: 'kardia:samples/profiles.jsonl'}]",
            "seeds=[{kind: jsonl, path: 'kardia:samples/situations.jsonl'}]",
            f"max_profiles={cfg.sized('profiles')}",
            f"dialogues_per_profile={cfg.sized('dialogues_per_profile')}",
            "distribution=balanced",
            "assign_mbti=true",
            f"models={{user: '{cfg.model}', responder: '{cfg.model}', critic: '{cfg.judge}'}}",
            "responder_mode=guided",
            "first_user_turn=situation",
            "user_drift=end",
            "critic_scorer=probs",
            f"max_exchanges={cfg.sized('max_exchanges')}",
            f"max_revisions={cfg.sized('max_revisions')}",
            "sampling.temperature=0.0",
            f"sampling.user_max_tokens={cfg.sized('build_tokens')}",
            f"sampling.span_max_tokens={cfg.sized('build_tokens')}",
            f"sampling.response_max_tokens={cfg.sized('build_tokens')}",
            "concurrency=16",
            "split.test_fraction=0.25",
            f"seed={cfg.seed}",
        ],
    )
    result = run_build(bcfg, out / "data", progress=True)
    counts = _split_counts(out / "data")
    if counts["train"] == 0 or counts["test"] == 0:
        raise DemoError(f"the build left an empty split ({counts}); run a bigger size (--size medium)")
    return {"dataset": str(out / "data"), "counts": counts, "generation": result.get("generation", {})}


def _split_counts(data: Path) -> dict[str, int]:
    counts = {"train": 0, "test": 0, "train_easy": 0, "train_hard": 0}
    for split in ("train", "test"):
        p = data / f"{split}.jsonl"
        if not p.exists():
            continue
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                counts[split] += 1
                if split == "train":
                    diff = json.loads(line).get("meta", {}).get("difficulty")
                    if diff in ("easy", "hard"):
                        counts[f"train_{diff}"] += 1
    return counts


def _difficulty_for(counts: dict, wanted: str, console) -> str:
    """The paper's subset when it has data; otherwise all training dialogues, said out loud."""
    if counts[f"train_{wanted}"] > 0:
        return wanted
    console.print(
        f"[yellow]the {wanted} subset of this small build is empty: this stage uses all "
        f"{counts['train']} training dialogues instead (recorded in the summary)[/yellow]"
    )
    return "all"


def _has_checkpoint(run_dir: Path) -> bool:
    """A stage killed half-way resumes from its last checkpoint."""
    return run_dir.is_dir() and any(run_dir.glob("checkpoint-*"))


def stage_sft(cfg: DemoConfig, out: Path, build: dict, console) -> dict:
    from .train.config import SFTRunConfig, load_config
    from .train.sft import run_sft

    difficulty = _difficulty_for(build["counts"], "easy", console)
    scfg = load_config(
        SFTRunConfig,
        None,
        [f"data.difficulty={difficulty}", "lora.enabled=true", "report_to=[tensorboard]", "save_steps=8",
         "learning_rate=0.0003"],
        preset="cpu",
        model=cfg.model,
        output_dir=str(out / "sft"),
        max_steps=cfg.sized("sft_steps"),
        **{"data.path": str(out / "data" / "train.jsonl")},
    )
    summary = run_sft(scfg, resume=_has_checkpoint(out / "sft"), log=console.print)
    summary["difficulty_used"] = difficulty
    return summary


def stage_grpo(cfg: DemoConfig, out: Path, build: dict, console) -> dict:
    from .train.config import GRPORunConfig, load_config
    from .train.grpo import run_grpo

    difficulty = _difficulty_for(build["counts"], "hard", console)
    n = cfg.sized("num_generations")
    gcfg = load_config(
        GRPORunConfig,
        None,
        [f"data.difficulty={difficulty}", "lora.enabled=true", "report_to=[tensorboard]", "save_steps=1",
         f"judge.model={cfg.judge}", "judge.scorer=probs", "learning_rate=0.00001"],
        preset="cpu",
        model=str(out / "sft" / "model"),
        output_dir=str(out / "grpo"),
        max_steps=cfg.sized("grpo_steps"),
        num_generations=n,
        per_device_train_batch_size=n,
        max_completion_length=cfg.sized("completion_tokens"),
        **{"data.path": str(out / "data" / "train.jsonl")},
    )
    summary = run_grpo(gcfg, resume=_has_checkpoint(out / "grpo"), log=console.print)
    summary["difficulty_used"] = difficulty
    return summary


def stage_eval(cfg: DemoConfig, out: Path, model: str, name: str) -> dict:
    from .eval.run import EvalConfig, run_eval

    ecfg = EvalConfig(
        model=model,
        data=str(out / "data" / "test.jsonl"),
        out=str(out / "eval" / name),
        judge=cfg.judge,
        judge_scorer="probs",
        limit=cfg.sized("eval_turns"),
        max_tokens=cfg.sized("completion_tokens") + 64,
        plain_max_tokens=64,
        n_boot=500,
    )
    return run_eval(ecfg, progress=True)


def stage_compare(out: Path) -> dict:
    from .eval.compare import compare_runs

    return compare_runs([out / "eval" / "base", out / "eval" / "tuned"], out / "compare", n_boot=500)


def run_demo(cfg: DemoConfig) -> dict:
    console = _console()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}
    steps = {
        "build": lambda: stage_build(cfg, out),
        "sft": lambda: stage_sft(cfg, out, results["build"], console),
        "grpo": lambda: stage_grpo(cfg, out, results["build"], console),
        "eval_base": lambda: stage_eval(cfg, out, cfg.model, "base"),
        "eval_tuned": lambda: stage_eval(cfg, out, str(out / "grpo" / "model"), "tuned"),
        "compare": lambda: stage_compare(out),
    }
    for i, stage in enumerate(STAGES, 1):
        previous = _done(out, stage)
        if previous is not None:
            console.rule(f"[dim]{i}/{len(STAGES)} {stage}: done earlier, skipped")
            results[stage] = previous["result"]
            timings[stage] = previous["seconds"]
            continue
        console.rule(f"[bold]{i}/{len(STAGES)} {stage}")
        t0 = time.monotonic()
        result = steps[stage]()
        timings[stage] = round(time.monotonic() - t0, 1)
        results[stage] = result
        _mark(out, stage, {"seconds": timings[stage], "result": result})
        console.print(f"[green]{stage} finished in {timings[stage]:.0f} s")
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
    for name in ("base", "tuned"):
        p = out / "eval" / name / "metrics.json"
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
        set_: Optional[list[str]] = typer.Option(None, "--set", help="override key=value (repeatable), e.g. sft_steps=60"),
    ) -> None:
        """Build data, SFT, GRPO, evaluate base vs tuned and write the comparison report, on the embedded model."""
        cfg = DemoConfig.load(config, [f"out={out}", f"size={size}", *(set_ or [])])
        run_demo(cfg)
