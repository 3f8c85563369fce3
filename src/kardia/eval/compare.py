"""`kardia compare DIR1 DIR2 ...`: the paper's table side by side, a radar overlay, paired differences.

Differences are each run minus the first (the baseline), over the items both runs scored, with a
paired cluster bootstrap (the same dialogues drawn for both runs), so shared item difficulty cancels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .metrics import compute_metrics, criterion_keys, fmt_ci, paired_bootstrap, radar_values
from .report import PCT, STYLE, _html_table, _img, _md_table, bars_png, nice, radar_png
from .results import read_results, run_info


def _name(d: Path, metrics: dict) -> str:
    run = metrics.get("run") or {}
    mode = run.get("mode")
    if mode == "plain" and run.get("emotion_reader") == "probs":
        mode = "plain, emotion by probs"
    return f"{d.name}: {run.get('model')} ({mode})"


def compare_runs(dirs: Sequence[str | Path], out: str | Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Write OUT/compare.md, compare.html, compare.json, radar_overlay.png, compare_bars.png."""

    if len(dirs) < 2:
        raise ValueError("compare needs at least two eval folders")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for d in map(Path, dirs):
        if not (d / "results.jsonl").exists():
            raise FileNotFoundError(f"{d}: not an eval folder (no results.jsonl)")
        recs = read_results(d)
        m = compute_metrics(recs, n_boot=n_boot, seed=seed)
        m["run"] = run_info(d)
        runs.append((d, recs, m))
    names = []
    for d, _, m in runs:
        n = _name(d, m)
        while n in names:
            n += "'"
        names.append(n)
    dims = [d for d in runs[0][2]["dims"] if all(d in m["dims"] for _, _, m in runs[1:])]
    keys = criterion_keys(dims)
    table = [[nice(k)] + [fmt_ci(m["criteria"].get(k), pct=k in PCT) for _, _, m in runs] for k in keys]
    table.append(["judge failures"] + [str(m["judge"]["failures"]) for _, _, m in runs])
    table.append(["items scored"] + [str(m["n_items"]) for _, _, m in runs])

    base_dir, base_recs, base_m = runs[0]
    diffs = {}
    for (d, recs, m), name in zip(runs[1:], names[1:]):
        diffs[name] = paired_bootstrap(base_recs, recs, n_boot=n_boot, seed=seed)

    judges = {m["run"].get("judge") for _, _, m in runs}
    datas = {m["run"].get("data") for _, _, m in runs}
    warnings = []
    if len(judges) > 1:
        warnings.append(f"runs were judged by different judges ({sorted(map(str, judges))}): judged scores are not comparable")
    if len(datas) > 1:
        warnings.append(f"runs used different data ({sorted(map(str, datas))}): paired differences cover common ids only")

    figs = {}
    if dims:
        radar_png({n: {k: v for k, v in radar_values({**m, "dims": dims}).items()} for n, (_, _, m) in zip(names, runs)},
                  out / "radar_overlay.png", title="Six criteria, overlay")
        figs["radar"] = "radar_overlay.png"
        bars_png({n: m["criteria"] for n, (_, _, m) in zip(names, runs)}, dims, out / "compare_judged.png",
                 "Judged dimensions (1-5), 95% intervals", ylim=(1, 5))
        figs["judged"] = "compare_judged.png"
    bars_png({n: m["criteria"] for n, (_, _, m) in zip(names, runs)}, ["emotion_accuracy", "near_miss_accuracy", "macro_f1"],
             out / "compare_rates.png", "Emotion (0-1), 95% intervals", ylim=(0, 1))
    figs["rates"] = "compare_rates.png"

    diff_rows = []
    for name, dd in diffs.items():
        common = dd["_common_items"]
        for k in keys:
            v = dd.get(k)
            if not v or v["diff"] is None:
                continue
            scale = 100 if k in PCT else 1
            unit = " pts" if k in PCT else ""
            sig = "" if v["lo"] is None or (v["lo"] <= 0 <= v["hi"]) else " *"
            ci = "" if v["lo"] is None else f" [{scale * v['lo']:+.2f}, {scale * v['hi']:+.2f}]"
            diff_rows.append([name, nice(k), f"{scale * v['diff']:+.2f}{unit}{ci}{sig}", v["n"], f"{common['n']}"])
    result = {"runs": [{"dir": str(d), "name": n, "metrics": m} for (d, _, m), n in zip(runs, names)],
              "baseline": names[0], "differences": diffs, "warnings": warnings}
    (out / "compare.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")

    diff_header = ["run (minus baseline)", "criterion", "difference [95% CI]", "n paired", "common items"]
    md = ["# Compare", "", f"Baseline: **{names[0]}**. Differences are paired over common items; `*` marks an "
          "interval that excludes 0. Intervals: 95% cluster bootstrap over dialogues.", ""]
    md += [f"> warning: {w}" for w in warnings]
    md += ["", "## Side by side", "", _md_table(["criterion", *names], table), ""]
    if "radar" in figs:
        md += [f"![radar overlay]({figs['radar']})", "", f"![judged]({figs['judged']})", ""]
    md += [f"![rates]({figs['rates']})", "", "## Paired differences", "", _md_table(diff_header, diff_rows), ""]
    (out / "compare.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>kardia compare</title>", STYLE, "</head><body>",
         "<h1>Compare</h1>", f"<p>Baseline: <b>{names[0]}</b>. Differences are paired over common items; * marks an "
         "interval that excludes 0.</p>"]
    h += [f"<p><b>warning:</b> {w}</p>" for w in warnings]
    h += ["<h2>Side by side</h2>", _html_table(["criterion", *names], table)]
    h += [_img(out, f) for f in figs.values()]
    h += ["<h2>Paired differences</h2>", _html_table(diff_header, diff_rows), "</body></html>"]
    (out / "compare.html").write_text("\n".join(h), encoding="utf-8")
    return result
