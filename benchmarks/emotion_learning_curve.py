"""Learning curve of a `kardia reproduce` run: emotion accuracy and format validity against SFT examples seen.

Every `checkpoint-N` of `DIR/sft` (and the final model) answers the same first `--n` held-out situations
of `DIR/eval_data.csv` in four-span mode, greedy, no judge; the table and `DIR/learning_curve.png` show
where the curve is going, which is what says what the next factor of data or steps would buy.

    python benchmarks/emotion_learning_curve.py DIR [--n 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    from kardia.eval.run import EvalConfig, run_eval
    from kardia.prompts import PROFILE_FILE

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=100)
    a = ap.parse_args()
    run = Path(a.run_dir)
    sft = run / "sft"
    state = json.loads((sft / "metrics.json").read_text())
    final = state.get("final", {})
    cfg_text = (sft / "run_config.yaml").read_text()
    per_step = next((int(x.split(":")[1]) for x in cfg_text.splitlines() if x.startswith("per_device_train_batch_size")), 1)
    points = sorted(((int(p.name.split("-")[1]), p) for p in sft.glob("checkpoint-*")), key=lambda t: t[0])
    points.append((int(final.get("global_step", points[-1][0] if points else 0)), sft / "model"))
    rows = []
    for step, folder in points:
        if not (folder / PROFILE_FILE).exists():  # checkpoints written before the profile was saved with them
            shutil.copy2(sft / "model" / PROFILE_FILE, folder / PROFILE_FILE)
        out = run / "curve" / f"step-{step}"
        ecfg = EvalConfig(model=str(folder), data=str(run / "eval_data.csv"), out=str(out), mode="spans", judge="none",
                          limit=a.n, max_tokens=112, concurrency=48, n_boot=500, safety=False)
        m = run_eval(ecfg, progress=False)["metrics"]["criteria"]
        rows.append({"step": step, "examples": step * per_step, "emotion_accuracy": m["emotion_accuracy"],
                     "format_validity": m["format_validity"]})
        print(f"step {step}: acc {m['emotion_accuracy']['value']:.3f} format {m['format_validity']['value']:.3f}", flush=True)
    print("\n| SFT step | examples seen | emotion accuracy [95% CI] | format validity |\n|---:|---:|---|---:|")
    for r in rows:
        e, f = r["emotion_accuracy"], r["format_validity"]
        print(f"| {r['step']} | {r['examples']} | {100 * e['value']:.1f}% [{100 * e['lo']:.1f}, {100 * e['hi']:.1f}] | {100 * f['value']:.1f}% |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["examples"] for r in rows]
    ax.errorbar(xs, [r["emotion_accuracy"]["value"] for r in rows],
                yerr=[[r["emotion_accuracy"]["value"] - r["emotion_accuracy"]["lo"] for r in rows],
                      [r["emotion_accuracy"]["hi"] - r["emotion_accuracy"]["value"] for r in rows]],
                marker="o", label="emotion accuracy")
    ax.plot(xs, [r["format_validity"]["value"] for r in rows], marker="s", label="format validity")
    ax.axhline(1 / 32, ls=":", c="grey", label="chance (1/32)")
    ax.set_xlabel("SFT examples seen")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(f"Learning curve ({a.n} held-out ED situations)")
    fig.tight_layout()
    fig.savefig(run / "learning_curve.png", dpi=120)
    (run / "learning_curve.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
