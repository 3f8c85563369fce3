"""The learning curve of `kardia reproduce`: emotion accuracy against SFT examples seen.

When the accuracy target is out of reach at a size, the question is what the next factor would cost.
The SFT stage keeps a checkpoint every `1/curve_points` of its run; this stage evaluates each one on
the first `curve_n` held-out situations (spans mode, no judge: only emotion and format are read), and
the final SFT model's answers on the same situations close the curve. A straight line in
log2(examples) gives points per doubling and the examples a target would need; the build's and the
SFT's own seconds per example turn that into CPU time.

Checkpoints sit on one learning-rate schedule: an early one has seen fewer examples AND a
not-yet-decayed learning rate, so the curve slightly understates what a run stopped there would reach.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable


MIN_FORMAT_FOR_FIT = 0.5


def checkpoints(sft_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for p in Path(sft_dir).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and (p / "config.json").exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _accuracy(rows: list[dict]) -> dict[str, Any]:
    from .eval.metrics import wilson

    n = len(rows)
    k = sum(bool(r.get("emotion_correct")) for r in rows)
    fmt = sum(bool(r.get("format_ok")) for r in rows)
    lo, hi = wilson(k, n)
    return {"n": n, "correct": k, "accuracy": k / n if n else None, "lo": lo, "hi": hi,
            "format_validity": fmt / n if n else None}


def fit_log2(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares acc = a + b * log2(examples); None with fewer than two distinct x."""
    pts = [(math.log2(x), y) for x, y in points if x > 0 and y is not None]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return my - b * mx, b


def examples_for(target: float, fit: tuple[float, float] | None) -> float | None:
    if not fit or fit[1] <= 0:
        return None
    a, b = fit
    return 2 ** ((target - a) / b)


def stage_curve(out: Path, batch: int, limit: int, evaluate: Callable[..., dict], final_step: int | None = None) -> dict[str, Any]:
    """Evaluate every kept SFT checkpoint on the first `limit` situations with `evaluate(model, name, limit)`.

    The checkpoint of the last step is the final model, already evaluated on every situation: skipped.
    """
    from .eval.run import read_results

    out = Path(out)
    points = []
    for step, path in checkpoints(out / "sft"):
        if step == final_step:
            continue
        name = f"curve/step-{step}"
        d = out / "eval" / name
        if not (d / "metrics.json").exists():
            evaluate(model=str(path), name=name, limit=limit)
        rows = read_results(d)
        points.append({"step": step, "examples": step * batch, **_accuracy(rows), "model": str(path)})
    return {"points": points, "limit": limit, "batch": batch}


def curve_table(out: Path, curve: dict[str, Any], stages: dict[str, Any], build_s: float | None,
                target: float) -> tuple[list[str], dict]:
    """Markdown lines for results.md (and the plot); the final SFT model closes the curve."""
    from .eval.run import read_results

    out = Path(out)
    points = [dict(p) for p in curve.get("points", [])]
    sft = stages.get("sft", {})
    final_rows = read_results(out / "eval" / "sft") if (out / "eval" / "sft" / "results.jsonl").exists() else []
    if points:  # the final model on the same situations as the checkpoints
        ids = {r["id"] for r in read_results(out / "eval" / f"curve/step-{points[0]['step']}")}
        final_rows = [r for r in final_rows if r["id"] in ids]
    if not points and not final_rows:
        return [], {}
    steps_done = sft.get("global_step")
    if final_rows and steps_done and all(p["step"] != steps_done for p in points):
        points.append({"step": steps_done, "examples": steps_done * curve["batch"], **_accuracy(final_rows), "model": "sft/model"})
    points.sort(key=lambda p: p["examples"])
    # a checkpoint that does not write the format yet has no emotion span to read: it measures format
    # learning, not label learning, so the fit takes only points with at least half the turns well formed
    fitted = [p for p in points if (p["format_validity"] or 0) >= MIN_FORMAT_FOR_FIT]
    fit = fit_log2([(p["examples"], p["accuracy"]) for p in fitted])
    need = examples_for(target, fit)

    counts = stages.get("build", {}).get("counts", {})
    easy = counts.get("train_easy") or counts.get("train")
    sft_s = sft.get("wall_s")
    examples_trained = (steps_done or 0) * curve["batch"]
    per_build = build_s / easy if build_s and easy else None
    per_sft = sft_s / examples_trained if sft_s and examples_trained else None

    lines = ["## Learning curve (emotion accuracy against SFT examples seen)", "",
             f"First {curve['limit']} held-out situations; each SFT checkpoint, then the final SFT model. 95% Wilson intervals.", "",
             "| SFT step | examples seen | emotion accuracy | 95% interval | format validity |",
             "|---:|---:|---:|---|---:|"]
    for p in points:
        acc = "n/a" if p["accuracy"] is None else f"{100 * p['accuracy']:.1f}%"
        ci = "n/a" if p["lo"] is None else f"[{100 * p['lo']:.1f}, {100 * p['hi']:.1f}]"
        fmt = "n/a" if p["format_validity"] is None else f"{100 * p['format_validity']:.1f}%"
        lines.append(f"| {p['step']} | {p['examples']} | {acc} | {ci} | {fmt} |")
    lines.append("")
    summary: dict[str, Any] = {"points": points, "fit": fit, "fitted_steps": [p["step"] for p in fitted],
                               "target": target, "examples_for_target": need,
                               "build_s_per_sft_example": per_build, "sft_s_per_example": per_sft}
    skipped = [p["step"] for p in points if p not in fitted]
    if skipped:
        lines.append(f"Left out of the fit (format validity under {100 * MIN_FORMAT_FOR_FIT:.0f}%: no emotion span to read "
                     f"yet): step {', '.join(map(str, skipped))}.")
    if per_build and per_sft and examples_trained:
        hours = examples_trained * (per_build + per_sft) / 3600
        summary["cpu_hours_per_doubling"] = hours
        lines.append(f"The next factor of data (2x, {2 * examples_trained} SFT examples) costs about {hours:.1f} more CPU "
                     f"hours on this machine ({per_build:.1f} s of build per kept SFT example, {per_sft:.2f} s of SFT per example).")
    if fit:
        lines.append(f"Fit: accuracy = {100 * fit[0]:.1f} + {100 * fit[1]:.1f} x log2(examples) points, "
                     f"i.e. {100 * fit[1]:+.1f} points per doubling of the SFT data.")
        if need:
            cost = ""
            if per_build and per_sft:
                more = max(0.0, need - examples_trained)
                cost = (f" At this run's measured cost ({per_build:.1f} s of build per kept SFT example, "
                        f"{per_sft:.2f} s of SFT per example) that is about {more * (per_build + per_sft) / 3600:.1f} "
                        f"more CPU hours on this machine.")
                summary["extra_cpu_hours_for_target"] = more * (per_build + per_sft) / 3600
            lines.append(f"Extrapolated, {100 * target:.0f}% needs about {need:,.0f} SFT examples "
                         f"(this run: {examples_trained}).{cost} An extrapolation, not a measurement.")
        else:
            lines.append("The fitted slope is not positive: no extrapolation.")
    lines += ["", "![learning curve](learning_curve.png)", ""]
    _plot(points, fit, target, out / "learning_curve.png")
    (out / "curve.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return lines, summary


def _plot(points: list[dict], fit, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["examples"] for p in points]
    ys = [100 * (p["accuracy"] or 0) for p in points]
    lo = [100 * (p["accuracy"] - p["lo"]) if p["lo"] is not None else 0 for p in points]
    hi = [100 * (p["hi"] - p["accuracy"]) if p["hi"] is not None else 0 for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label="SFT checkpoints")
    if fit:
        import numpy as np

        grid = np.geomspace(max(1, min(xs)), max(xs) * 8, 50)
        ax.plot(grid, 100 * (fit[0] + fit[1] * np.log2(grid)), "--", color="grey", label="log2 fit (extrapolated)")
    ax.axhline(100 * target, color="red", lw=0.8, label=f"target {100 * target:.0f}%")
    ax.axhline(100 / 32, color="black", lw=0.6, ls=":", label="chance (1/32)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("SFT examples seen")
    ax.set_ylabel("emotion accuracy (%)")
    ax.set_title("Learning curve on held-out ED situations")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
