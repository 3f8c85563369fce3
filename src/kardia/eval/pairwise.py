"""`kardia eval-pairwise DIR_A DIR_B`: the judge compares two runs' replies to the same turns.

Labels are hidden and every pair is judged in both orders (`kardia.judge.pairwise.PairwiseJudge`);
a verdict that flips with the order counts as a tie. Outcomes (win / tie / loss for run A) are
appended per item to OUT/pairwise.jsonl, so an interrupted comparison resumes; the summary gives each
share with a 95% cluster-bootstrap interval. A judge failure is counted and excluded, never a tie.
Length bias is reported: of the decided pairs whose replies differ in length, the share the longer
one won (50% = none); `max_reply_chars` cuts both replies before judging, as EQ-Bench 3 does.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from ..jobs import JobBar, RetryLater, check_run_file, run_jobs, write_run_file
from ..records import JsonlAppender, done_keys, iter_jsonl
from .metrics import fmt_ci, proportions_with_intervals
from .report import STYLE, _html_table, _img, _md_table
from .results import read_results
from ..judge import JudgeItem
from ..judge.pairwise import PairwiseJudge, truncate_reply

OUTCOMES = ("win", "tie", "loss")


def _pairs(dir_a: Path, dir_b: Path, limit: int | None, seed: int) -> list[tuple[dict, dict]]:
    import random


    a = {r["id"]: r for r in read_results(dir_a)}
    b = {r["id"]: r for r in read_results(dir_b)}
    ids = sorted(set(a) & set(b))
    if not ids:
        raise ValueError(f"{dir_a} and {dir_b} share no scored items: were they run on the same data?")
    if limit is not None and limit < len(ids):
        ids = sorted(random.Random(seed).sample(ids, limit))
    return [(a[i], b[i]) for i in ids]


async def _judge_one(judge, ra: dict, rb: dict) -> dict:
    """One pair's record; a judge call that failed raises RetryLater (not written, retried next run)."""

    item = JudgeItem(profile=ra.get("profile", ""), situation=ra.get("situation", ""),
                     history=ra.get("history") or [], response="")
    res = await judge.acompare(item, ra.get("response", ""), rb.get("response", ""))
    if res.error_kind == "call":
        raise RetryLater(res.error)
    outcome = None if res.error else ("tie" if res.preferred is None else ("win" if res.preferred == "first" else "loss"))
    return {"id": ra["id"], "dialogue_id": ra["dialogue_id"], "outcome": outcome, "error": res.error,
            "first_as_a": res.first_as_a, "first_as_b": res.first_as_b, "flipped": res.flipped,
            "response_a": ra.get("response", ""), "response_b": rb.get("response", "")}


def run_pairwise(dir_a: str | Path, dir_b: str | Path, out: str | Path, judge: str = "embedded", rubric: str = "kardia",
                 scorer: str = "auto", limit: int | None = None, seed: int = 0, n_boot: int = 1000,
                 concurrency: int = 64, progress: bool = True, max_reply_chars: int | None = None) -> dict[str, Any]:
    """Judge every common item (or a seeded sample of `limit`), then summarise into OUT."""

    dir_a, dir_b, out = Path(dir_a), Path(dir_b), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"a": str(dir_a), "b": str(dir_b), "judge": judge, "rubric": rubric, "scorer": scorer, "limit": limit,
            "seed": seed, "max_reply_chars": max_reply_chars}
    meta_path = out / "pairwise_run.json"
    check_run_file(meta_path, meta, at=None, defaults={"max_reply_chars": None}, what="comparison")
    write_run_file(meta_path, meta)
    pairs = _pairs(dir_a, dir_b, limit, seed)
    path = out / "pairwise.jsonl"
    done = done_keys(path)
    pj = PairwiseJudge(model=judge, rubric=rubric, scorer=scorer, max_reply_chars=max_reply_chars)
    with JobBar("pairwise", len(pairs), completed=sum(1 for ra, _ in pairs if ra["id"] in done), enabled=progress,
                description="judge") as bar, JsonlAppender(path) as app:
        stats = asyncio.run(run_jobs(pairs, lambda pair: _judge_one(pj, *pair), app, key=lambda pair: pair[0]["id"],
                                     done=done, concurrency=concurrency, bar=bar))
    summary = summarise_pairwise(out, n_boot=n_boot, seed=seed)
    summary["call_failures_to_retry"] = len(stats.retried)
    return summary


def longer_reply_wins(judged: list[dict], max_chars: int | None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Of the decided pairs (win or loss) whose replies, as judged, differ in length: the share the longer won."""

    outcomes, clusters = [], []
    for r in judged:
        if r["outcome"] not in ("win", "loss"):
            continue
        la = len(truncate_reply(r.get("response_a", ""), max_chars))
        lb = len(truncate_reply(r.get("response_b", ""), max_chars))
        if la == lb:
            continue
        a_won = r["outcome"] == "win"
        outcomes.append("longer" if a_won == (la > lb) else "shorter")
        clusters.append(r["dialogue_id"])
    if not outcomes:
        return {"value": None, "lo": None, "hi": None, "n": 0}
    return proportions_with_intervals(outcomes, clusters, ["longer"], n_boot=n_boot, seed=seed)["longer"]


def _length_sentence(summary: dict[str, Any]) -> str:
    lw = summary["longer_wins"]
    cut = f" Replies cut to {summary['max_reply_chars']} characters before judging." if summary["max_reply_chars"] else ""
    if not lw["n"]:
        return "Length bias: no decided pair with replies of different length." + cut
    return (f"Length bias: the longer reply won {fmt_ci(lw, pct=True)} of {lw['n']} decided pairs of different "
            f"length (50% = no bias)." + cut)


def summarise_pairwise(out: str | Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Recompute the win / tie / loss table from OUT/pairwise.jsonl and write pairwise.md/html/png."""
    out = Path(out)
    meta = json.loads((out / "pairwise_run.json").read_text(encoding="utf-8"))
    recs = [r for _, r in iter_jsonl(out / "pairwise.jsonl")] if (out / "pairwise.jsonl").exists() else []
    judged = [r for r in recs if r["outcome"] is not None]
    shares = proportions_with_intervals([r["outcome"] for r in judged], [r["dialogue_id"] for r in judged], OUTCOMES,
                                        n_boot=n_boot, seed=seed)
    flips = [r for r in judged if r.get("flipped")]
    summary = {"a": meta["a"], "b": meta["b"], "judge": meta["judge"], "n_pairs": len(recs), "n_judged": len(judged),
               "judge_failures": len(recs) - len(judged), "shares": shares,
               "counts": {o: sum(1 for r in judged if r["outcome"] == o) for o in OUTCOMES},
               "flip_rate": (len(flips) / len(judged)) if judged else None,
               "first_position_wins": sum((r.get("first_as_a") == "first") + (r.get("first_as_b") == "second") for r in judged),
               "max_reply_chars": meta.get("max_reply_chars"),
               "longer_wins": longer_reply_wins(judged, meta.get("max_reply_chars"), n_boot=n_boot, seed=seed)}
    (out / "pairwise_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    rows = [[o, summary["counts"][o], fmt_ci(shares[o], pct=True)] for o in OUTCOMES]
    figs = []
    if judged:
        from .report import _plt

        plt = _plt()
        fig, ax = plt.subplots(figsize=(5, 3))
        vals = [shares[o]["value"] for o in OUTCOMES]
        err = [[v - shares[o]["lo"] if shares[o]["lo"] is not None else 0 for o, v in zip(OUTCOMES, vals)],
               [shares[o]["hi"] - v if shares[o]["hi"] is not None else 0 for o, v in zip(OUTCOMES, vals)]]
        ax.bar(OUTCOMES, vals, yerr=err, capsize=4, color=["#2a9d8f", "#bbbbbb", "#e76f51"])
        ax.set_ylim(0, 1)
        ax.set_title("A vs B: win / tie / loss for A (95% CI)")
        fig.tight_layout()
        fig.savefig(out / "pairwise.png", dpi=110)
        plt.close(fig)
        figs.append("pairwise.png")
    intro = (f"A = `{meta['a']}`, B = `{meta['b']}`, judge `{meta['judge']}`. Each pair judged in both orders with "
             f"labels hidden; a verdict that flips with the order is a tie. {summary['n_judged']} pairs judged, "
             f"{summary['judge_failures']} judge failures (excluded). Flip rate: "
             + (f"{100 * summary['flip_rate']:.1f}%" if summary["flip_rate"] is not None else "n/a") + ". "
             + _length_sentence(summary))
    md = ["# Pairwise comparison", "", intro, "", _md_table(["outcome for A", "count", "share [95% CI]"], rows), ""]
    md += [f"![pairwise]({f})" for f in figs]
    (out / "pairwise.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>kardia pairwise</title>", STYLE, "</head><body>",
         "<h1>Pairwise comparison</h1>", f"<p>{intro.replace('`', '')}</p>",
         _html_table(["outcome for A", "count", "share [95% CI]"], rows)] + [_img(out, f) for f in figs] + ["</body></html>"]
    (out / "pairwise.html").write_text("\n".join(h), encoding="utf-8")
    return summary
