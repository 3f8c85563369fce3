"""The eval report: report.md + report.html + PNG figures, every number from results.jsonl next to it.

Figures: the radar over the paper's six criteria (emotion accuracy mapped to the judge's 1-5 scale
as 1 + 4 x accuracy, so all six share one axis), bars with 95% intervals, the confusion matrix.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Sequence

from .columns import read_columns
from .metrics import RATES, criterion_keys, fmt_ci, judged_mean, metrics_of_columns, radar_values
from ..config import optional_model
from .results import run_info

PCT = {*RATES, "crisis_handling"}
LABELS = {
    "emotion_accuracy": "Emotion accuracy",
    "near_miss_accuracy": "Near-miss accuracy (same family)",
    "macro_f1": "Emotion macro-F1",
    "emotion_named": "Emotion answer is one of the 32 labels",
    "format_validity": "Format validity",
    "judged_mean": "Mean of judged dimensions",
    "crisis_handling": "Crisis handling (at-risk turns)",
}
RADAR_NOTE = "Radar scale: 1-5; emotion accuracy is drawn as 1 + 4 x accuracy, the five judged dimensions as scored."


def nice(key: str) -> str:
    return LABELS.get(key, key.replace("_", " ").title())


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def radar_png(series: dict[str, dict[str, float | None]], path: Path, title: str = "") -> None:
    """One polygon per run over the six criteria on a shared 1-5 scale."""
    import numpy as np

    plt = _plt()
    axes_names = list(next(iter(series.values())).keys())
    n = len(axes_names)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False).tolist()
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(111, polar=True)
    for name, vals in series.items():
        v = [vals.get(k) if vals.get(k) is not None else 1.0 for k in axes_names]
        ax.plot(angles + angles[:1], v + v[:1], linewidth=2, label=name)
        ax.fill(angles + angles[:1], v + v[:1], alpha=0.12)
    ax.set_xticks(angles)
    ax.set_xticklabels([nice(k).replace(" (", "\n(") for k in axes_names], fontsize=9)
    ax.set_ylim(1, 5)
    ax.set_yticks([1, 2, 3, 4, 5])
    ax.set_title(title or "Six criteria (1-5)", pad=20)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=8, ncol=1, frameon=False)
    fig.text(0.5, -0.02 - 0.03 * len(series), RADAR_NOTE, ha="center", fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def bars_png(groups: dict[str, dict[str, dict[str, Any]]], keys: Sequence[str], path: Path, title: str, ylim=None) -> None:
    """Grouped bars (one group per key, one bar per run) with 95% interval error bars."""
    import numpy as np

    plt = _plt()
    runs = list(groups)
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys) * max(1, len(runs)) ** 0.5), 4))
    for i, run in enumerate(runs):
        vals, lo, hi = [], [], []
        for k in keys:
            m = groups[run].get(k) or {}
            v = m.get("value")
            vals.append(np.nan if v is None else v)
            lo.append(0 if v is None or m.get("lo") is None else v - m["lo"])
            hi.append(0 if v is None or m.get("hi") is None else m["hi"] - v)
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=3, label=run)
    ax.set_xticks(x)
    ax.set_xticklabels([nice(k) for k in keys], rotation=20, ha="right", fontsize=8)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    if len(runs) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_png(conf: dict[str, Any], path: Path) -> None:
    import numpy as np

    plt = _plt()
    m = np.array(conf["matrix"], dtype=float)
    if m.size == 0:
        m = np.zeros((1, 1))
    fig, ax = plt.subplots(figsize=(max(5, 0.32 * len(conf["cols"]) + 2), max(4, 0.32 * len(conf["rows"]) + 2)))
    ax.imshow(m, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(conf["cols"])))
    ax.set_xticklabels(conf["cols"], rotation=90, fontsize=7)
    ax.set_yticks(range(len(conf["rows"])))
    ax.set_yticklabels(conf["rows"], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title("Emotion confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def criteria_rows(metrics: dict[str, Any]) -> list[tuple[str, str, int]]:
    c = metrics["criteria"]
    return [(k, fmt_ci(c[k], pct=k in PCT), c[k]["n"]) for k in criterion_keys(metrics["dims"]) if k in c]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(x).replace("|", "\\|").replace("\n", " ") for x in r) + " |" for r in rows]
    return "\n".join(out)


def _breakdown_rows(table: dict[str, Any]) -> list[list[Any]]:
    return [[g, v["n"], fmt_ci(v["emotion_accuracy"], pct=True), fmt_ci(v["judged_mean"])] for g, v in table.items()]


def build_report(out: str | Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Recompute metrics from OUT/results.jsonl and write metrics.json, PNGs, report.md, report.html."""
    out = Path(out)
    cols = read_columns(out)  # one streaming pass: memory stays flat in the number of items
    metrics = metrics_of_columns(cols, n_boot=n_boot, seed=seed)
    n_items, worst = cols.n, cols.worst()
    del cols  # the figures below are the report's peak: they need none of the columns
    metrics["run"] = run_info(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    if not n_items:
        (out / "report.md").write_text("# Eval report\n\nNo items scored yet.\n", encoding="utf-8")
        (out / "report.html").write_text("<html><body><h1>Eval report</h1><p>No items scored yet.</p></body></html>",
                                         encoding="utf-8")
        return metrics

    label = f"{metrics['run']['model']} ({metrics['run']['mode']})"
    figs = {}
    if metrics["dims"]:
        radar_png({label: radar_values(metrics)}, out / "radar.png", title="Six criteria (paper Figure 1)")
        figs["radar"] = "radar.png"
        bars_png({label: metrics["criteria"]}, metrics["dims"] + ["judged_mean"], out / "judged_bars.png",
                 "Judged dimensions (1-5), 95% intervals", ylim=(1, 5))
        figs["judged_bars"] = "judged_bars.png"
    rate_keys = [k for k in criterion_keys([]) if k in PCT and metrics["criteria"].get(k, {}).get("value") is not None]
    bars_png({label: metrics["criteria"]}, rate_keys, out / "rate_bars.png", "Rates (0-1), 95% intervals", ylim=(0, 1))
    figs["rate_bars"] = "rate_bars.png"
    if metrics["confusion"]["rows"]:
        confusion_png(metrics["confusion"], out / "confusion.png")
        figs["confusion"] = "confusion.png"
    md = render_markdown(metrics, figs, worst)
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(render_html(metrics, figs, worst, out), encoding="utf-8")
    return metrics


def _no_response_lines(metrics: dict[str, Any]) -> list[str]:
    n = metrics.get("no_response", 0)
    if not n:
        return []
    how = {"min": "scored at the scale minimum on every dimension, judge not called",
           "exclude": "left out of the judged means", "fallback": "the fallback sentence the user saw was judged"}
    policy = metrics["run"]["no_response"]
    return [f"- Turns with no response span (the user saw only the fallback sentence): **{n}** of "
            f"{metrics['n_items']}, {how.get(policy, policy)} (`no_response={policy}`)"]


def _judge_line(r: dict[str, Any], j: dict[str, Any]) -> str:
    if optional_model(r.get("judge")) is None:  # older runs stored "off"/"none"
        return "- Judge: none (judged dimensions not run)"
    return (f"- Judge: `{r['judge']}` (rubric `{r['rubric']}`): {j['scored']} scored, **{j['failures']} judge failures**"
            + (f" ({', '.join(f'{k}: {v}' for k, v in j['failure_kinds'].items())})" if j["failure_kinds"] else "")
            + " (failures are excluded from the means, never scored)"
            + (f"; **only the first {r['judge_limit']} items were judged** (`judge_limit`): judged means are over "
               f"those, emotion and format over all" if r.get("judge_limit") else ""))


def _header_lines(metrics: dict[str, Any]) -> list[str]:
    r, j = metrics["run"], metrics["judge"]
    reader = {"probs": "read as the most probable of the 32 labels", "text": "read from the label it wrote"}
    mode_note = {"spans": "spans (four-span output; emotion read from the emotion span)",
                 "plain": "plain (answers normally; emotion asked in a separate call, "
                          f"{reader.get(r.get('emotion_reader') or 'text')}; format validity n/a)"}
    return [
        f"- Model: `{r['model']}`; mode: **{mode_note.get(r['mode'], r['mode'])}**",
        f"- Data: `{r['data']}`: {metrics['n_items']} turns scored of {r['total_items']}, {metrics['n_dialogues']} dialogues",
        _judge_line(r, j),
        *_no_response_lines(metrics),
        "- How the emotion answers were read: "
        + (", ".join(f"{k}: {v}" for k, v in sorted(metrics.get("emotion_parse", {}).items())) or "n/a"),
        f"- Turns at risk (kardia.safety): {metrics['at_risk']}",
        f"- Intervals: 95% percentile, cluster bootstrap over dialogues, {metrics['n_boot']} resamples (seed {metrics['seed']})",
        f"- Eval wall time: {r['wall_s']:.1f} s",
    ]


def label_lines(metrics: dict[str, Any]) -> list[str]:
    """The predicted-label distribution next to the gold one, and the chance levels of this sample."""
    lab = metrics.get("labels")
    if not lab or not lab.get("gold"):
        return []
    ch = lab["chance"]
    n = sum(lab["gold"].values())
    rows = [[k, lab["predicted"].get(k, 0), lab["gold"].get(k, 0)]
            for k in sorted(set(lab["predicted"]) | set(lab["gold"]), key=lambda k: (-lab["predicted"].get(k, 0), k))]
    return ["## Predicted labels", "",
            f"- {lab['distinct_predicted']} distinct labels predicted over {n} turns; the commonest takes "
            f"{100 * (lab['top_predicted_share'] or 0):.1f}%",
            f"- Chance on this sample: uniform guess {100 * ch['uniform']:.1f}%; always the commonest gold label "
            f"({ch['majority_label']}) {100 * ch['majority']:.1f}%; guessing with the predicted distribution "
            f"{100 * ch['same_distribution']:.1f}%", "",
            _md_table(["label", "predicted", "gold"], rows), ""]


def render_markdown(metrics: dict[str, Any], figs: dict[str, str], worst: Sequence[dict]) -> str:
    parts = ["# Eval report", "", *_header_lines(metrics), "", "## Criteria", "",
             _md_table(["criterion", "value [95% CI]", "n"], [(nice(k), v, n) for k, v, n in criteria_rows(metrics)]), ""]
    if "radar" in figs:
        parts += [f"![radar]({figs['radar']})", "", f"_{RADAR_NOTE}_", "", f"![judged]({figs['judged_bars']})", ""]
    parts += [f"![rates]({figs['rate_bars']})", ""]
    parts += label_lines(metrics)
    for key, title in (("emotion", "By gold emotion"), ("mbti", "By MBTI type"), ("turn", "By turn index")):
        parts += [f"## {title}", "", _md_table([key, "n", "emotion accuracy", "judged mean"],
                                               _breakdown_rows(metrics["breakdowns"][key])), ""]
    if "confusion" in figs:
        parts += ["## Confusion matrix", "", f"![confusion]({figs['confusion']})", "",
                  "Counts per (gold row, predicted column) are in `metrics.json` under `confusion`.", ""]
    if worst:
        parts += ["## Worst-scored examples", ""]
        for r in worst:
            parts += _example_md(r)
    return "\n".join(parts) + "\n"


def _example_md(r: dict) -> list[str]:
    last = r["history"][-1]["content"] if r.get("history") else ""
    judge = r.get("judge") or {}
    lines = [f"### `{r['id']}`: judged mean {judged_mean(r):.2f}", "",
             f"- gold emotion: {r.get('gold_emotion')}; predicted: {r.get('pred_emotion')}",
             f"- scores: {', '.join(f'{k} {v:g}' for k, v in (judge.get('scores') or {}).items())}",
             f"- person said: > {last}", f"- reply: > {r.get('response', '')}"]
    for k, why in (judge.get("reasons") or {}).items():
        if why:
            lines.append(f"- judge on {k}: {why}")
    return lines + [""]


def _img(out: Path, name: str) -> str:
    data = base64.b64encode((out / name).read_bytes()).decode("ascii")
    return f'<img alt="{name}" src="data:image/png;base64,{data}" style="max-width:100%">'


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


STYLE = ("<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
         "th{background:#f3f3f3}blockquote{color:#333;border-left:3px solid #ccc;margin:0;padding-left:8px}</style>")


def render_html(metrics: dict[str, Any], figs: dict[str, str], worst: Sequence[dict], out: Path) -> str:
    import re

    def md_inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", s)

    p = ["<!doctype html><html><head><meta charset='utf-8'><title>kardia eval report</title>", STYLE, "</head><body>",
         "<h1>Eval report</h1><ul>"]
    p += [f"<li>{md_inline(line[2:])}</li>" for line in _header_lines(metrics)]
    p += ["</ul><h2>Criteria</h2>",
          _html_table(["criterion", "value [95% CI]", "n"], [(nice(k), v, n) for k, v, n in criteria_rows(metrics)])]
    if "radar" in figs:
        p += [_img(out, figs["radar"]), f"<p><i>{html.escape(RADAR_NOTE)}</i></p>", _img(out, figs["judged_bars"])]
    p += [_img(out, figs["rate_bars"])]
    for key, title in (("emotion", "By gold emotion"), ("mbti", "By MBTI type"), ("turn", "By turn index")):
        p += [f"<h2>{title}</h2>", _html_table([key, "n", "emotion accuracy", "judged mean"],
                                                _breakdown_rows(metrics["breakdowns"][key]))]
    if "confusion" in figs:
        p += ["<h2>Confusion matrix</h2>", _img(out, figs["confusion"])]
    if worst:
        p += ["<h2>Worst-scored examples</h2>"]
        for r in worst:
            judge = r.get("judge") or {}
            last = r["history"][-1]["content"] if r.get("history") else ""
            p += [f"<h3><code>{html.escape(r['id'])}</code>: judged mean {judged_mean(r):.2f}</h3><ul>",
                  f"<li>gold emotion: {html.escape(str(r.get('gold_emotion')))}; predicted: "
                  f"{html.escape(str(r.get('pred_emotion')))}</li>",
                  "<li>scores: " + html.escape(", ".join(f"{k} {v:g}" for k, v in (judge.get('scores') or {}).items()))
                  + "</li>", f"<li>person said:<blockquote>{html.escape(last)}</blockquote></li>",
                  f"<li>reply:<blockquote>{html.escape(r.get('response', ''))}</blockquote></li>"]
            p += [f"<li>judge on {html.escape(k)}: {html.escape(why)}</li>"
                  for k, why in (judge.get("reasons") or {}).items() if why]
            p += ["</ul>"]
    p += ["</body></html>"]
    return "\n".join(p)
