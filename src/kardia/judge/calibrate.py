"""How far can the judge be trusted? Agreement with people, position bias and length bias on ESConv.

- Agreement: the judge scores the supporter's turns of each conversation; per conversation, the mean
  judge empathy / relevance is compared with the seeker's own 1-5 survey ratings (Spearman, with a
  bootstrap interval).
- Position bias: the real reply against a reply taken from another conversation, judged in both
  orders; the flip rate is how often the verdict follows the position instead of the content.
- Length bias: the same reply padded with content-free filler sentences; the score change and the
  within-item correlation of score with length (content held equal).

Every judged item is one line of `items.jsonl` (resumable: a rerun skips done keys); the report is
computed from that file only.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterator

from pydantic import Field

from ..config import KardiaConfig
from ..corpora import esconv, shared_data_file
from ..jobs import JobBar, run_jobs
from ..records import JsonlAppender, RecordError, done_keys, iter_jsonl
from .core import Judge, JudgeItem, result_record
from .pairwise import PairwiseJudge
from .rubric import Rubric, load_rubric


class CalibrateConfig(KardiaConfig):
    data: str | None = None  # ESConv JSONL; default $KARDIA_SHARED_DATA or ../shared/data esconv_valid.jsonl
    out: str = "runs/judge-calibration"
    model: str = "embedded"
    rubric: str = "kardia"
    mode: str = "single"
    scorer: str = "auto"
    dimensions: list[str] = Field(default_factory=lambda: ["empathy", "relevance"])  # scored (subset keeps it cheap)
    conversations: int = 40
    turns_per_conversation: int = 1
    max_history: int = 4  # earlier turns shown to the judge
    position_pairs: int = 10
    length_items: int = 8
    pad_levels: list[int] = Field(default_factory=lambda: [2])
    filler: list[str] = Field(
        default_factory=lambda: [
            "Anyway, that is what I wanted to say about it for now.",
            "So, yes, there it is, in any case, more or less.",
            "Well, I suppose that is about all there is to it at this point.",
        ]
    )
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 16


def default_data_path() -> Path:
    return shared_data_file("esconv", "esconv_valid.jsonl")


def _rating(seeker: dict, key: str) -> int | None:
    v = seeker.get(key)
    try:
        v = int(str(v).strip())
    except (TypeError, ValueError):
        return None
    return v if 1 <= v <= 5 else None


def load_conversations(path: Path, limit: int) -> list[dict]:
    """The first `limit` conversations with both seeker ratings and at least one judgeable supporter turn."""
    out = []
    for n, rec in esconv.read_dialogues(path):
        if rec.dialog is None:
            raise RecordError(path, n, "dialog", "Field required")
        emp, rel = _rating(rec.seeker_survey, "empathy"), _rating(rec.seeker_survey, "relevance")
        if emp is None or rel is None:
            continue
        turns = rec.turns(" ")
        eligible = [i for i, (r, _) in enumerate(turns) if r == "assistant" and any(x[0] == "user" for x in turns[:i])]
        if not eligible:
            continue
        out.append({"line": n, "rec": rec, "turns": turns, "eligible": eligible, "empathy": emp, "relevance": rel})
        if len(out) >= limit:
            break
    return out


def _pick(eligible: list[int], k: int) -> list[int]:
    if k >= len(eligible):
        return list(eligible)
    step = len(eligible) / k
    return [eligible[int(step * i + step / 2)] for i in range(k)]


def _item(conv: dict, ti: int, max_history: int, response: str | None = None) -> JudgeItem:
    rec = conv["rec"]
    turns = conv["turns"]
    history = [{"role": r, "content": t} for r, t in turns[max(0, ti - max_history) : ti]]
    return JudgeItem(
        profile=f"A person seeking emotional support (feeling: {rec.emotion_type}; problem: {rec.problem_type}).",
        situation=rec.situation,
        history=history,
        response=turns[ti][1] if response is None else response,
    )


def _words(text: str) -> int:
    return len(text.split())


def _jobs(cfg: CalibrateConfig, convs: list[dict]) -> Iterator[tuple[str, dict, Any]]:
    """(key, meta, what to judge) for each judged item: turns, padded turns, position pairs."""
    for ci, conv in enumerate(convs):
        picked = _pick(conv["eligible"], cfg.turns_per_conversation)
        for ti in picked:
            meta = {"kind": "turn", "conv": ci, "line": conv["line"], "turn": ti, "seeker_empathy": conv["empathy"], "seeker_relevance": conv["relevance"]}
            yield (f"turn:{ci}:{ti}", meta, ("score", _item(conv, ti, cfg.max_history)))
        ti = picked[0]
        base = conv["turns"][ti][1]
        if ci < cfg.length_items:
            for level in cfg.pad_levels:
                padded = base + " " + " ".join(cfg.filler[j % len(cfg.filler)] for j in range(level))
                meta = {"kind": "pad", "conv": ci, "turn": ti, "pad": level}
                yield (f"pad{level}:{ci}:{ti}", meta, ("score", _item(conv, ti, cfg.max_history, padded)))
        if ci < cfg.position_pairs:
            other = convs[(ci + len(convs) // 2) % len(convs)]
            oti = other["eligible"][min(len(other["eligible"]) - 1, len(other["eligible"]) // 2)]
            meta = {"kind": "pair", "conv": ci, "turn": ti, "other_conv": (ci + len(convs) // 2) % len(convs)}
            yield (f"pair:{ci}:{ti}", meta, ("pair", _item(conv, ti, cfg.max_history), base, other["turns"][oti][1]))


async def _run(cfg: CalibrateConfig, out: Path, progress: bool = False) -> None:
    data = Path(cfg.data) if cfg.data else default_data_path()
    convs = load_conversations(data, cfg.conversations)
    if len(convs) < 3:
        raise ValueError(f"{data}: only {len(convs)} usable conversations; calibration needs at least 3")
    rubric = _subset(load_rubric(cfg.rubric), cfg.dimensions)
    judge = Judge(cfg.model, rubric=rubric, mode=cfg.mode, scorer=cfg.scorer)  # type: ignore[arg-type]
    pair_judge = PairwiseJudge(cfg.model, rubric=rubric, scorer=cfg.scorer, llm=judge.llm)  # type: ignore[arg-type]
    items_path = out / "items.jsonl"
    done = done_keys(items_path, "key")
    total = sum(1 for _ in _jobs(cfg, convs))  # streamed (the plan is cheap to remake): counted for the bar, then run

    async def run_one(job) -> dict:
        key, meta, spec = job
        if spec[0] == "score":
            res = await judge.ascore(spec[1])
            rec = result_record(key, res)
            rec.pop("id")
            rec["length_words"] = _words(spec[1].response)
            return {"key": key, **meta, **rec}
        res = await pair_judge.acompare(spec[1], spec[2], spec[3])
        return {"key": key, **meta, **res.model_dump(exclude={"probs"})}

    with JobBar("calibrate", total, completed=sum(1 for j in _jobs(cfg, convs) if j[0] in done), enabled=progress,
                description="judging") as bar, JsonlAppender(items_path) as w:
        # every failure is written (a calibration counts them); nothing is left to retry
        await run_jobs(_jobs(cfg, convs), run_one, w, key=lambda job: job[0], done=done, concurrency=cfg.batch_size, retry_on=(),
                       ordered=True, bar=bar)
    meta_path = out / "run.json"
    meta_path.write_text(json.dumps({"config": cfg.model_dump(), "data": str(data), "conversations": len(convs), "scorer": judge.scorer}, indent=2))


def _subset(rubric: Rubric, keys: list[str] | None) -> Rubric:
    if not keys:
        return rubric
    dims = [rubric.dimension(k) for k in keys]
    return rubric.model_copy(update={"dimensions": dims, "name": rubric.name + "[" + ",".join(d.key for d in dims) + "]"})


# -- analysis -------------------------------------------------------------------------------------
def _spearman_ci(x: list[float], y: list[float], n_boot: int, seed: int) -> dict:
    import numpy as np
    from scipy import stats

    out: dict[str, Any] = {"n": len(x)}
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        out.update(rho=None, p=None, ci=None, note="too few points or a constant variable")
        return out
    res = stats.spearmanr(x, y)
    out.update(rho=float(res.statistic), p=float(res.pvalue))
    rng = np.random.default_rng(seed)
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(xs), len(xs))
        bx, by = xs[idx], ys[idx]
        if np.ptp(bx) == 0 or np.ptp(by) == 0:
            continue
        boots.append(stats.spearmanr(bx, by).statistic)
    boots = [b for b in boots if not math.isnan(b)]
    out["ci"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if len(boots) >= 20 else None
    out["bootstrap_resamples"] = len(boots)
    return out


def analyse(out: Path, n_boot: int = 1000, seed: int = 0) -> dict:
    """All figures, computed from items.jsonl only."""
    from scipy import stats

    recs = [r for _, r in iter_jsonl(out / "items.jsonl")]
    turns = [r for r in recs if r["kind"] == "turn"]
    pads = [r for r in recs if r["kind"] == "pad"]
    pairs = [r for r in recs if r["kind"] == "pair"]
    dims = sorted({k for r in turns if r.get("scores") for k in r["scores"]})
    report: dict[str, Any] = {"dimensions": dims}
    # agreement with seekers, per conversation
    by_conv: dict[int, list[dict]] = {}
    for r in turns:
        if r.get("scores"):
            by_conv.setdefault(r["conv"], []).append(r)
    report["turns"] = {"judged": len(turns), "failed": sum(1 for r in turns if not r.get("scores"))}
    agreement = {}
    for dim, seeker_key in (("empathy", "seeker_empathy"), ("relevance", "seeker_relevance")):
        if dim not in dims:
            continue
        xs, ys = [], []
        for rs in by_conv.values():
            xs.append(statistics.fmean(r["scores"][dim] for r in rs))
            ys.append(float(rs[0][seeker_key]))
        agreement[dim] = _spearman_ci(xs, ys, n_boot, seed)
        agreement[dim]["judge_mean"] = statistics.fmean(xs) if xs else None
        agreement[dim]["seeker_mean"] = statistics.fmean(ys) if ys else None
    report["agreement"] = agreement
    # position bias
    valid = [p for p in pairs if not p.get("error")]
    first_pos_wins = sum((p["first_as_a"] == "first") + (p["first_as_b"] == "second") for p in valid)
    report["position"] = {
        "pairs": len(pairs),
        "failed": len(pairs) - len(valid),
        "flip_rate": (sum(1 for p in valid if p["flipped"]) / len(valid)) if valid else None,
        "shown_first_wins_rate": (first_pos_wins / (2 * len(valid))) if valid else None,
        "prefers_matched_reply_rate": (sum(1 for p in valid if p["preferred"] == "first") / len(valid)) if valid else None,
    }
    # length bias: padded vs original of the same reply
    base = {(r["conv"], r["turn"]): r for r in turns if r.get("scores")}
    length: dict[str, Any] = {"pairs": 0, "failed": sum(1 for r in pads if not r.get("scores"))}
    per_dim: dict[str, Any] = {}
    for dim in dims:
        deltas, cl, cs = [], [], []
        groups: dict[tuple, list[tuple[int, float]]] = {}
        for r in pads:
            b = base.get((r["conv"], r["turn"]))
            if not r.get("scores") or b is None:
                continue
            deltas.append(r["scores"][dim] - b["scores"][dim])
            groups.setdefault((r["conv"], r["turn"]), [(b["length_words"], b["scores"][dim])]).append((r["length_words"], r["scores"][dim]))
        for g in groups.values():
            ml = statistics.fmean(x for x, _ in g)
            ms = statistics.fmean(s for _, s in g)
            cl += [x - ml for x, _ in g]
            cs += [s - ms for _, s in g]
        rho = None
        if len(cl) >= 3 and len(set(cs)) > 1:
            rho = float(stats.spearmanr(cl, cs).statistic)
        per_dim[dim] = {
            "mean_delta_padded_minus_original": statistics.fmean(deltas) if deltas else None,
            "share_scored_higher_when_padded": (sum(1 for d in deltas if d > 0) / len(deltas)) if deltas else None,
            "within_item_spearman_length_vs_score": rho,
            "n": len(deltas),
        }
        length["pairs"] = max(length["pairs"], len(deltas))
    length["per_dimension"] = per_dim
    report["length"] = length
    return report


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x, nd) for x in v) + "]"
    return str(v)


def write_report(out: Path, report: dict, run: dict) -> Path:
    lines = [
        "# Judge calibration on ESConv",
        "",
        f"Judge model: `{run['config']['model']}`, scorer `{run.get('scorer')}`, mode `{run['config']['mode']}`, rubric `{run['config']['rubric']}` "
        f"(dimensions scored: {', '.join(report['dimensions'])}). Data: `{run['data']}`, {run['conversations']} conversations. "
        "Every number below is computed from `items.jsonl` next to this file.",
        "",
        "## Agreement with the seekers' own ratings (per conversation)",
        "",
        "| judge dimension | seeker rating | n | Spearman rho | 95% bootstrap CI | p | judge mean | seeker mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dim, a in report["agreement"].items():
        lines.append(f"| {dim} | {dim} | {a['n']} | {_fmt(a.get('rho'))} | {_fmt(a.get('ci'))} | {_fmt(a.get('p'))} | {_fmt(a.get('judge_mean'), 2)} | {_fmt(a.get('seeker_mean'), 2)} |")
    t = report["turns"]
    lines += ["", f"Supporter turns judged: {t['judged']}, judge failures (excluded, never scored): {t['failed']}.", ""]
    p = report["position"]
    lines += [
        "## Position bias (pairwise, both orders)",
        "",
        "| pairs | failed | flip rate | reply shown first wins | prefers the matched reply |",
        "|---|---|---|---|---|",
        f"| {p['pairs']} | {p['failed']} | {_fmt(p['flip_rate'])} | {_fmt(p['shown_first_wins_rate'])} | {_fmt(p['prefers_matched_reply_rate'])} |",
        "",
        "A flip is a verdict that follows the position rather than the reply; an unbiased judge flips 0% and"
        " wins 50% from the first slot. Each real reply is paired with a reply from another conversation.",
        "",
        "## Length bias (same reply, padded with content-free filler)",
        "",
        "| dimension | n | mean score change (padded - original) | share scored higher when padded | within-item Spearman(length, score) |",
        "|---|---|---|---|---|",
    ]
    for dim, d in report["length"]["per_dimension"].items():
        lines.append(f"| {dim} | {d['n']} | {_fmt(d['mean_delta_padded_minus_original'])} | {_fmt(d['share_scored_higher_when_padded'])} | {_fmt(d['within_item_spearman_length_vs_score'])} |")
    lines += ["", "![judge vs seeker](agreement.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def plot(out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for _, r in iter_jsonl(out / "items.jsonl") if r["kind"] == "turn" and r.get("scores")]
    dims = [d for d in ("empathy", "relevance") if recs and d in recs[0]["scores"]]
    if not dims:
        return None
    fig, axes = plt.subplots(1, len(dims), figsize=(5 * len(dims), 4), squeeze=False)
    for ax, dim in zip(axes[0], dims):
        by: dict[int, list] = {}
        for r in recs:
            by.setdefault(r["conv"], []).append(r)
        xs = [rs[0][f"seeker_{dim}"] + 0.08 * ((i % 5) - 2) for i, rs in enumerate(by.values())]
        ys = [statistics.fmean(r["scores"][dim] for r in rs) for rs in by.values()]
        ax.scatter(xs, ys, alpha=0.7)
        ax.set_xlabel(f"seeker {dim} rating (1-5, jittered)")
        ax.set_ylabel(f"judge {dim} (mean over judged turns)")
        ax.set_title(dim)
    fig.tight_layout()
    path = out / "agreement.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def calibrate(cfg: CalibrateConfig, show_progress: bool = True) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(_run(cfg, out, show_progress))
    report = analyse(out, cfg.bootstrap, cfg.seed)
    run = json.loads((out / "run.json").read_text())
    (out / "report.json").write_text(json.dumps(report, indent=2))
    write_report(out, report, run)
    plot(out)
    return report
