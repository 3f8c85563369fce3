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

from .config import ConfigError, KardiaConfig, OptionalModel, fail
from .reproduce import ReproduceConfig, quiet_libraries, recipe
from .data.audit import audit_dialogues
from .stages import run_stages

Size = Literal["tiny", "small", "medium"]

# The demo is `kardia reproduce` on the shipped sample data (samples/README.md): the same build, label
# reader, training profile and evaluation, sized so `small` (the default) fits 15 minutes with set-up on
# 2 CPU cores; `tiny` is for CI; `medium` builds every sample situation.
SIZES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny": ("tiny", {}),
    "small": ("demo", {}),
    "medium": ("demo", {"situations": 192, "sft_epochs": 3.0, "grpo_steps": 4, "skip_stages": ("curve",)}),
}
SAMPLE_PROFILES = "kardia:samples/profiles.jsonl"
SAMPLE_TRAIN = "kardia:samples/situations.jsonl"
SAMPLE_EVAL = "kardia:samples/eval_situations.csv"


class DemoConfig(KardiaConfig):
    out: str = "kardia-demo"
    size: Size = "small"
    model: str = "embedded"  # the base policy; also user simulator, responder, critic and judge
    judge: OptionalModel = "embedded"  # none/off: no judged eval
    seed: int = 0
    overrides: dict[str, Any] = Field(default_factory=dict)  # any reproduce size key, e.g. {situations: 96}


class DemoError(RuntimeError):
    pass


def reproduce_config(cfg: DemoConfig):
    size, over = SIZES[cfg.size]
    return ReproduceConfig(
        out=cfg.out, size=size, train_seeds=SAMPLE_TRAIN, eval_data=SAMPLE_EVAL, profiles=SAMPLE_PROFILES,
        profiles_kind="person", model=cfg.model, judge=cfg.judge, seed=cfg.seed, overrides={**over, **cfg.overrides},
    )


def stage_compare(out: Path) -> dict:
    from .eval.compare import compare_runs

    compare_runs([out / "eval" / "base", out / "eval" / "grpo"], out / "compare", n_boot=1000)
    head = headline(out)
    md = out / "compare" / "compare.md"
    md.write_text("\n".join(head["lines"]) + "\n\n" + md.read_text(encoding="utf-8"), encoding="utf-8")
    (out / "headline.json").write_text(json.dumps(head["figures"], indent=2), encoding="utf-8")
    return head["figures"]


# What the demo must show (its issue's targets), checked on its own files.
TARGETS = {"tuned_format": 0.90, "tuned_accuracy_x_chance": 4.0, "copies_share_max": 0.10}


def headline(out: Path) -> dict[str, Any]:
    """The figures the demo is about, each with its target: leads compare.md and the summary line."""

    def load(name: str) -> dict:
        p = out / "eval" / name / "metrics.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}

    base, tuned, base_spans = load("base"), load("grpo"), load("base_spans")
    comp = json.loads((out / "compare" / "compare.json").read_text(encoding="utf-8"))
    diff = next(iter(comp["differences"].values()), {})
    chance = (tuned.get("labels") or {}).get("chance", {}).get("uniform") or 1 / 32
    acc_b, acc_t = _metric(base, "emotion_accuracy"), _metric(tuned, "emotion_accuracy")
    fmt_t, fmt_bs = _metric(tuned, "format_validity"), _metric(base_spans, "format_validity")
    d = diff.get("emotion_accuracy") or {}
    dims = [k for k in tuned.get("dims", []) if k in base.get("dims", [])]
    below = [k for k in dims if (diff.get(k) or {}).get("hi") is not None and diff[k]["hi"] < 0]
    audit = audit_dialogues(out / "data" / "dialogues.jsonl") if (out / "data" / "dialogues.jsonl").exists() else {}
    want_acc = TARGETS["tuned_accuracy_x_chance"] * chance

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "**MISSED**")

    checks = [
        (f"tuned format validity >= {pct(TARGETS['tuned_format'])}", f"{pct(fmt_t)} (base, four-span prompt: {pct(fmt_bs)})",
         None if fmt_t is None else fmt_t >= TARGETS["tuned_format"]),
        (f"tuned emotion accuracy >= {TARGETS['tuned_accuracy_x_chance']:.0f}x chance ({pct(want_acc)})",
         f"{pct(acc_t)} (base {pct(acc_b)}; chance {pct(chance)})", None if acc_t is None else acc_t >= want_acc),
        ("tuned above base, paired 95% interval excluding 0",
         "n/a" if d.get("diff") is None else f"{100 * d['diff']:+.1f} points [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]",
         None if d.get("lo") is None else d["lo"] > 0),
        ("judged dimensions not below base (no paired interval below 0)",
         ", ".join(f"{k} {diff[k]['diff']:+.2f}" for k in dims if diff.get(k, {}).get("diff") is not None) or "n/a",
         None if not dims else not below),
        ("tuned turns with no response span (scored at the minimum)",
         str(tuned.get("no_response", "n/a")), None if not tuned else not tuned.get("no_response")),
        ("built data: emotion span = gold label on every kept turn",
         f"{audit.get('emotion_is_gold', 'n/a')} of {audit.get('assistant_turns', 'n/a')}",
         None if not audit else audit["emotion_is_gold"] == audit["assistant_turns"]),
        ("built data: no span cut mid-sentence", f"{audit.get('whole_sentences', 'n/a')} of {audit.get('assistant_turns', 'n/a')} whole",
         None if not audit else audit["whole_sentences"] == audit["assistant_turns"]),
        ("built data: role slips of the user simulator after filtering", str(audit.get("role_slips", "n/a")),
         None if not audit else audit["role_slips"] == 0),
        (f"built data: understanding copies the user's turn < {pct(TARGETS['copies_share_max'])}",
         pct(audit.get("understanding_copies_share")),
         None if not audit or audit["understanding_copies_share"] is None else audit["understanding_copies_share"] < TARGETS["copies_share_max"]),
    ]
    lines = ["# kardia demo: does the method make the model better?", "",
             f"Held-out turns: {tuned.get('n_items', '?')} (situations and profiles never trained on). "
             f"Base: plain replies, emotion read by the calibrated label reader; tuned: SFT + GRPO, four spans.", "",
             "| target | measured | |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {verdict(ok)} |" for t, m, ok in checks]
    figures = {"base_accuracy": acc_b, "tuned_accuracy": acc_t, "chance": chance, "accuracy_diff": d,
               "tuned_format": fmt_t, "base_spans_format": fmt_bs, "judged_below_base": below, "audit": audit,
               "targets": {t: ok for t, _, ok in checks}}
    return {"lines": lines, "figures": figures}


def run_demo(cfg: DemoConfig) -> dict:
    from rich.console import Console


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
    head = out / "headline.json"
    if head.exists():
        f = json.loads(head.read_text(encoding="utf-8"))
        d = f.get("accuracy_diff") or {}
        pct = (lambda v: "n/a" if v is None else f"{100 * v:.1f}%")  # noqa: E731
        paired = "" if d.get("diff") is None else f" (paired {100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] points)"
        missed = [t for t, ok in f["targets"].items() if ok is False]
        return (f"base -> tuned: emotion acc {pct(f['base_accuracy'])} -> {pct(f['tuned_accuracy'])}{paired}, "
                f"chance {pct(f['chance'])}; format {pct(f['base_spans_format'])} -> {pct(f['tuned_format'])}; "
                + (f"targets missed: {'; '.join(missed)}" if missed else "all targets met"))
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
        out: Optional[str] = typer.Option(None, "--out", "-o", help="output folder (a rerun resumes it; default kardia-demo)"),
        size: Optional[str] = typer.Option(None, "--size", help="tiny (CI), small (default, ~15 min on 2 cores), medium"),
        config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML DemoConfig"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="override key=value (repeatable), e.g. overrides.sft_epochs=3"),
    ) -> None:
        """Build data, SFT, GRPO, evaluate base vs tuned and write the comparison report, on the embedded model."""
        try:
            cfg = DemoConfig.from_cli(config, set_ or [], {"out": out, "size": size})
        except ConfigError as exc:
            fail(exc)
        run_demo(cfg)
