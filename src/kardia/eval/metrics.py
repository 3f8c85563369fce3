"""Every number of an eval report, computed from the per-item results alone, with bootstrap intervals.

Intervals are 95% percentile intervals of a *cluster* bootstrap: dialogues are resampled with
replacement (turns of one dialogue are not independent), and one set of resampling weights is
shared by all metrics of a report, so the per-group breakdowns and the headline agree.
`paired_bootstrap` resamples the dialogues common to two runs and gives intervals for differences.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Sequence

import numpy as np

NONE_LABEL = "(none)"  # the prediction when no emotion could be read from the output


class Resampler:
    """One cluster-bootstrap weight matrix W (n_boot x n_clusters) for a set of items."""

    def __init__(self, clusters: Sequence[str], n_boot: int = 1000, seed: int = 0):
        self.keys = sorted(set(clusters))
        index = {k: i for i, k in enumerate(self.keys)}
        self.cluster_of = np.array([index[c] for c in clusters], dtype=np.int64)
        self.n_boot = n_boot
        c = len(self.keys)
        rng = np.random.default_rng(seed)
        if c == 0 or n_boot <= 0:
            self.W = np.zeros((0, c))
        else:
            self.W = rng.multinomial(c, np.full(c, 1.0 / c), size=n_boot).astype(np.float64)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per-cluster sums of `values` (items x ...)."""
        out = np.zeros((len(self.keys),) + values.shape[1:])
        np.add.at(out, self.cluster_of, values)
        return out

    def mean(self, values: Iterable[float | None], mask: np.ndarray | None = None) -> dict[str, Any]:
        """Mean over items with a value (None = not applicable), with its interval."""
        v = np.array([np.nan if x is None else float(x) for x in values], dtype=np.float64)
        ok = ~np.isnan(v)
        if mask is not None:
            ok &= mask
        n = int(ok.sum())
        if n == 0:
            return {"value": None, "lo": None, "hi": None, "n": 0}
        value = float(v[ok].mean())
        s = self.sums(np.where(ok, v, 0.0))
        c = self.sums(ok.astype(np.float64))
        lo, hi = _interval((self.W @ s), (self.W @ c))
        return {"value": value, "lo": lo, "hi": hi, "n": n}


def _interval(num: np.ndarray, den: np.ndarray) -> tuple[float | None, float | None]:
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    return _percentiles(stats)


def _percentiles(stats: np.ndarray) -> tuple[float | None, float | None]:
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return None, None
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


# -- emotion -------------------------------------------------------------------------------------
def _emotion_arrays(records: Sequence[dict], labels: list[str]):
    idx = {l: i for i, l in enumerate(labels)}
    gold = np.array([idx.get(r.get("gold_emotion") or "", -1) for r in records])
    pred = np.array([idx.get(r.get("pred_emotion") or NONE_LABEL, idx[NONE_LABEL]) for r in records])
    return gold, pred


def macro_f1(records: Sequence[dict], rs: Resampler, mask: np.ndarray | None = None) -> dict[str, Any]:
    """Macro-F1 over the labels that occur as gold or prediction (an unreadable prediction is a miss)."""
    labels = sorted({r["gold_emotion"] for r in records if r.get("gold_emotion")} |
                    {r["pred_emotion"] for r in records if r.get("pred_emotion")}) + [NONE_LABEL]
    gold, pred = _emotion_arrays(records, labels)
    ok = gold >= 0
    if mask is not None:
        ok &= mask
    n = int(ok.sum())
    if n == 0:
        return {"value": None, "lo": None, "hi": None, "n": 0}
    k = len(labels)
    eye = np.eye(k)
    g1 = np.where(ok[:, None], eye[np.maximum(gold, 0)], 0.0)
    p1 = np.where(ok[:, None], eye[pred], 0.0)
    tp1 = g1 * p1
    real = np.arange(k) != labels.index(NONE_LABEL)

    def f1(tp, g, p):
        den = g + p
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)
        f = f[..., real]
        return np.nanmean(f, axis=-1) if f.ndim > 1 else float(np.nanmean(f))

    value = f1(tp1.sum(0), g1.sum(0), p1.sum(0))
    if rs.W.shape[0]:
        with np.errstate(invalid="ignore"), _quiet():
            stats = f1(rs.W @ rs.sums(tp1), rs.W @ rs.sums(g1), rs.W @ rs.sums(p1))
        lo, hi = _percentiles(np.asarray(stats, dtype=float))
    else:
        lo = hi = None
    return {"value": float(value), "lo": lo, "hi": hi, "n": n}


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def confusion(records: Sequence[dict]) -> dict[str, Any]:
    """Counts of (gold, predicted) over items with a gold label; rows gold, columns predicted."""
    from ..emotions import LABELS

    rows = [l for l in LABELS if any(r.get("gold_emotion") == l for r in records)]
    cols = list(LABELS) + [NONE_LABEL]
    m = np.zeros((len(rows), len(cols)), dtype=int)
    ri, ci = {l: i for i, l in enumerate(rows)}, {l: i for i, l in enumerate(cols)}
    for r in records:
        g = r.get("gold_emotion")
        if g in ri:
            m[ri[g], ci.get(r.get("pred_emotion") or NONE_LABEL, ci[NONE_LABEL])] += 1
    used = [j for j, l in enumerate(cols) if m[:, j].any() or l in ri]
    return {"rows": rows, "cols": [cols[j] for j in used], "matrix": m[:, used].tolist()}


# -- the criteria, in the order every table shows them ------------------------------------------------
RATES = ("emotion_accuracy", "macro_f1", "near_miss_accuracy", "emotion_named", "format_validity")  # 0-1 shares


def criterion_keys(dims: Sequence[str]) -> list[str]:
    """Every headline criterion: the rates, the judged dimensions, their mean, crisis handling."""
    return [*RATES, *dims, "judged_mean", "crisis_handling"]


# -- per-item helpers --------------------------------------------------------------------------------
def dims_of(records: Iterable[dict]) -> list[str]:
    """The judged dimensions, in the order the judge wrote them."""
    dims: list[str] = []
    for r in records:
        scores = (r.get("judge") or {}).get("scores") or {}
        for d in scores:
            if d not in dims:
                dims.append(d)
    return dims


def judged_mean(r: dict) -> float | None:
    """Mean of an item's judged dimensions (None when the judge failed or did not run)."""
    scores = (r.get("judge") or {}).get("scores")
    if not scores:
        return None
    return float(sum(scores.values()) / len(scores))


def _score(r: dict, d: str) -> float | None:
    scores = (r.get("judge") or {}).get("scores") or {}
    v = scores.get(d)
    return None if v is None else float(v)


def _bool(x: Any) -> float | None:
    return None if x is None else float(bool(x))


def item_values(records: Sequence[dict], dims: Sequence[str]) -> dict[str, list[float | None]]:
    """Per-item value of every averaged metric (None = not applicable to that item)."""
    vals: dict[str, list[float | None]] = {
        "emotion_accuracy": [_bool(r.get("emotion_correct")) if r.get("gold_emotion") else None for r in records],
        "near_miss_accuracy": [_bool(r.get("family_correct")) if r.get("gold_emotion") else None for r in records],
        # Tells "named no label" apart from "named the wrong one": small untrained models mostly do the first.
        "emotion_named": [float(bool(r.get("pred_emotion"))) if r.get("gold_emotion") else None for r in records],
        "format_validity": [_bool(r.get("format_ok")) for r in records],
    }
    for d in dims:
        vals[d] = [_score(r, d) for r in records]
    vals["judged_mean"] = [judged_mean(r) for r in records]
    vals["crisis_handling"] = [
        _bool(r.get("crisis_handled")) if (r.get("risk") or {}).get("at_risk") else None for r in records
    ]
    return vals


# -- the whole report ------------------------------------------------------------------------------
def compute_metrics(records: Sequence[dict], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """All headline numbers, breakdowns and the confusion matrix for one run's per-item records."""
    records = list(records)
    dims = dims_of(records)
    rs = Resampler([r["dialogue_id"] for r in records], n_boot=n_boot, seed=seed)
    vals = item_values(records, dims)
    criteria: dict[str, Any] = {}
    for name in ("emotion_accuracy", "near_miss_accuracy", "emotion_named"):
        criteria[name] = rs.mean(vals[name])
    criteria["macro_f1"] = macro_f1(records, rs)
    criteria["format_validity"] = rs.mean(vals["format_validity"])
    for d in dims:
        criteria[d] = rs.mean(vals[d])
    criteria["judged_mean"] = rs.mean(vals["judged_mean"])
    criteria["crisis_handling"] = rs.mean(vals["crisis_handling"])

    judge_ran = [r for r in records if r.get("judge") is not None and not r["judge"].get("skipped")]
    judge_failures = Counter(
        _failure_kind(r["judge"]) for r in judge_ran if not r["judge"].get("scores")
    )

    breakdowns: dict[str, dict[str, Any]] = {}
    for key, getter in (
        ("emotion", lambda r: r.get("gold_emotion") or "(no gold)"),
        ("mbti", lambda r: r.get("mbti") or "(unknown)"),
        ("turn", lambda r: str(r.get("turn_index"))),
    ):
        groups = [getter(r) for r in records]
        table = {}
        order = sorted(set(groups), key=lambda g: (int(g) if g.isdigit() else 10**9, g))
        for g in order:
            mask = np.array([x == g for x in groups])
            table[g] = {
                "n": int(mask.sum()),
                "emotion_accuracy": rs.mean(vals["emotion_accuracy"], mask),
                "judged_mean": rs.mean(vals["judged_mean"], mask),
            }
        breakdowns[key] = table

    return {
        "n_items": len(records),
        "n_dialogues": len(rs.keys),
        "n_boot": n_boot,
        "seed": seed,
        "dims": dims,
        "criteria": criteria,
        "judge": {
            "ran": len(judge_ran),
            "scored": sum(1 for r in judge_ran if (r["judge"] or {}).get("scores")),
            "failures": sum(judge_failures.values()),
            "failure_kinds": dict(judge_failures),
        },
        "no_response": sum(1 for r in records if r.get("no_response")),
        "judge_skipped": sum(1 for r in records if (r.get("judge") or {}).get("skipped")),
        "emotion_parse": dict(Counter(r.get("emotion_parse") or "none" for r in records if r.get("gold_emotion"))),
        "at_risk": sum(1 for r in records if (r.get("risk") or {}).get("at_risk")),
        "confusion": confusion([r for r in records if r.get("gold_emotion")]),
        "labels": label_distribution(records),
        "breakdowns": breakdowns,
    }


def label_distribution(records: Sequence[dict]) -> dict[str, Any]:
    """Predicted vs gold label counts and what guessing would score on this very sample.

    A reader that answers one label for everything shows up here at once (top share near 1), and the
    accuracy reads against `chance` rather than against zero.
    """
    from ..emotions import chance_levels

    gold = [r["gold_emotion"] for r in records if r.get("gold_emotion")]
    pred = Counter(r.get("pred_emotion") or "(none)" for r in records if r.get("gold_emotion"))
    gcount = Counter(gold)
    n = len(gold)
    expected = sum((gcount[k] / n) * (pred.get(k, 0) / n) for k in gcount) if n else 0.0
    top = pred.most_common(1)[0] if pred else (None, 0)
    return {
        "predicted": dict(pred.most_common()),
        "gold": dict(gcount.most_common()),
        "distinct_predicted": len([k for k in pred if k != "(none)"]),
        "top_predicted_share": (top[1] / n) if n else None,
        "chance": {**chance_levels(gold), "same_distribution": expected},
    }


def _failure_kind(judgement: dict[str, Any]) -> str:
    """call or parse, from the record's `error_kind` (records written before the field: from the message)."""
    from ..judge.core import legacy_error_kind

    error = judgement.get("error")
    if not error:
        return "no scores"
    return judgement.get("error_kind") or legacy_error_kind(error) or "parse"


def radar_values(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The six criteria of the paper's Figure 1 on one 1-5 scale: emotion accuracy mapped as 1 + 4 x acc."""
    c = metrics["criteria"]
    acc = c["emotion_accuracy"]["value"]
    out: dict[str, float | None] = {"emotion_accuracy": None if acc is None else 1 + 4 * acc}
    for d in metrics["dims"]:
        out[d] = c[d]["value"]
    return out


# -- paired differences ----------------------------------------------------------------------------------
def paired_bootstrap(
    a: Sequence[dict], b: Sequence[dict], n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Differences b - a for every averaged metric over the items both runs scored (same ids).

    Only items where both runs have a value count for a metric (a judge failure on either side
    drops that item from that metric). Dialogues are resampled, the same draw for both runs.
    """
    by_id_a = {r["id"]: r for r in a}
    common = [r["id"] for r in b if r["id"] in by_id_a]
    by_id_b = {r["id"]: r for r in b}
    ra = [by_id_a[i] for i in common]
    rb = [by_id_b[i] for i in common]
    dims = [d for d in dims_of(ra) if d in dims_of(rb)]
    va, vb = item_values(ra, dims), item_values(rb, dims)
    rs = Resampler([r["dialogue_id"] for r in ra], n_boot=n_boot, seed=seed)
    out: dict[str, dict[str, Any]] = {}
    for name in [k for k in criterion_keys(dims) if k in va]:  # macro-F1 is not a per-item mean
        x = np.array([np.nan if v is None else v for v in va[name]], dtype=float)
        y = np.array([np.nan if v is None else v for v in vb[name]], dtype=float)
        ok = ~np.isnan(x) & ~np.isnan(y)
        n = int(ok.sum())
        if n == 0:
            out[name] = {"diff": None, "lo": None, "hi": None, "n": 0, "a": None, "b": None}
            continue
        d = np.where(ok, y - x, 0.0)
        s, c = rs.sums(d), rs.sums(ok.astype(float))
        lo, hi = _interval(rs.W @ s, rs.W @ c) if rs.W.shape[0] else (None, None)
        out[name] = {
            "diff": float((y - x)[ok].mean()),
            "lo": lo,
            "hi": hi,
            "n": n,
            "a": float(x[ok].mean()),
            "b": float(y[ok].mean()),
        }
    out["_common_items"] = {"n": len(common), "a_total": len(a), "b_total": len(b)}
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """95% Wilson interval of a proportion k/n, for small counts and rates near 0 or 1 where no
    bootstrap or normal interval is worth much (a learning-curve point, a blind set of 55 messages).
    (None, None) when n is 0."""
    if n == 0:
        return None, None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def proportions_with_intervals(
    outcomes: Sequence[str], clusters: Sequence[str], categories: Sequence[str], n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Share of each category (e.g. win / tie / loss) with cluster-bootstrap intervals."""
    rs = Resampler(list(clusters), n_boot=n_boot, seed=seed)
    return {c: rs.mean([1.0 if o == c else 0.0 for o in outcomes]) for c in categories}


def fmt_ci(m: dict[str, Any] | None, pct: bool = False, digits: int = 2) -> str:
    """'0.53 [0.41, 0.66]' or '53.0% [41.0, 66.0]' or 'n/a'."""
    if not m or m.get("value") is None:
        return "n/a"
    f: Callable[[float], str] = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.{digits}f}")
    unit = "%" if pct else ""
    if m.get("lo") is None or (isinstance(m.get("lo"), float) and math.isnan(m["lo"])):
        return f"{f(m['value'])}{unit}"
    return f"{f(m['value'])}{unit} [{f(m['lo'])}, {f(m['hi'])}]"


def group_records(records: Iterable[dict], key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        out[str(r.get(key))].append(r)
    return out
