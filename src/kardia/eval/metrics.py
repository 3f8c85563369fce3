"""Every number of an eval report, computed from the per-item results alone, with bootstrap intervals.

Intervals are 95% percentile intervals of a *cluster* bootstrap: dialogues are resampled with
replacement (turns of one dialogue are not independent), and one set of resampling weights is
shared by all metrics of a report, so the per-group breakdowns and the headline agree.
`paired_bootstrap` resamples the dialogues common to two runs and gives intervals for differences.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .columns import ItemColumns, _failure_kind, judged_mean  # noqa: F401 (_failure_kind: its old home)
from ..emotions import LABELS, chance_levels

NONE_LABEL = "(none)"  # the prediction when no emotion could be read from the output


W_CHUNK_BYTES = 2 << 20  # the most bootstrap weights held at once (a whole matrix grew with the data)


class Resampler:
    """Cluster-bootstrap weights W (n_boot x n_clusters) for a set of items, drawn in chunks of replicates.

    The chunks are consecutive draws of ONE RNG stream, so stacked they are exactly the matrix a single
    draw gives, and only one chunk is held at a time. A report small enough for one chunk computes exactly
    what the whole-matrix version did; with several chunks, sums of integers (rates, macro-F1, integer
    scores) stay exact, and a mean of fractional values (judged_mean) can differ in the last bits, as BLAS
    sums a product of another shape in another order.
    """

    def __init__(self, clusters: Sequence[str], n_boot: int = 1000, seed: int = 0):
        self.keys = sorted(set(clusters))
        index = {k: i for i, k in enumerate(self.keys)}
        self.cluster_of = np.array([index[c] for c in clusters], dtype=np.int64)
        self.n_boot = n_boot
        self.seed = seed

    @classmethod
    def of_codes(cls, names: Sequence[str], codes: np.ndarray, n_boot: int = 1000, seed: int = 0) -> "Resampler":
        """From interned cluster names and one code per item (see `columns._Codes`)."""
        rs = cls([], n_boot=n_boot, seed=seed)
        rs.keys = sorted(names)
        rank = np.empty(len(names), dtype=np.int64)
        rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
        rs.cluster_of = rank[codes] if len(codes) else np.zeros(0, dtype=np.int64)
        return rs

    def chunks(self) -> Iterator[np.ndarray]:
        """The rows of W, a chunk at a time (at most W_CHUNK_BYTES; a multiple of 8 rows)."""
        c = len(self.keys)
        if c == 0 or self.n_boot <= 0:
            return
        rows = max(8, W_CHUNK_BYTES // (8 * c) // 8 * 8)
        rng = np.random.default_rng(self.seed)
        p = np.full(c, 1.0 / c)
        for start in range(0, self.n_boot, rows):
            yield rng.multinomial(c, p, size=min(rows, self.n_boot - start)).astype(np.float64)

    @property
    def W(self) -> np.ndarray:
        """The whole weight matrix (for small callers; reports go through `chunks`)."""
        if "_W" not in self.__dict__:
            parts = list(self.chunks())
            self._W = np.concatenate(parts) if parts else np.zeros((0, len(self.keys)))
        return self._W

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


class Bootstrap:
    """Statistics registered first, then computed together in one pass over the chunks of W.

    Each statistic is a function of a chunk of weights giving one value per replicate; it recomputes
    its per-cluster sums from the item columns rather than holding them (one chunk pass for all).
    """

    def __init__(self, rs: Resampler):
        self.rs = rs
        self._stats: list[tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]] = []

    def mean(self, v: np.ndarray, mask: Callable[[], np.ndarray] | None = None) -> dict[str, Any]:
        """Mean over the items where v is not NaN (and `mask()` holds); lo/hi filled in by `run`."""
        def ok() -> np.ndarray:
            keep = ~np.isnan(v)
            return keep & mask() if mask is not None else keep

        keep = ok()
        n = int(keep.sum())
        if n == 0:
            return {"value": None, "lo": None, "hi": None, "n": 0}
        entry = {"value": float(v[keep].mean()), "lo": None, "hi": None, "n": n}

        def stat(W: np.ndarray) -> np.ndarray:
            keep = ok()
            return _ratio(W @ self._sums(np.where(keep, v, 0.0)), W @ self._sums(keep.astype(np.float64)))

        self._stats.append((stat, entry))
        return entry

    def _sums(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.rs.cluster_of, weights=values, minlength=len(self.rs.keys))

    def add(self, stat: Callable[[np.ndarray], np.ndarray], entry: dict[str, Any]) -> None:
        self._stats.append((stat, entry))

    def run(self) -> None:
        parts: list[list[np.ndarray]] = [[] for _ in self._stats]
        for W in self.rs.chunks():
            for part, (stat, _) in zip(parts, self._stats):
                part.append(np.asarray(stat(W), dtype=float))
        for part, (_, entry) in zip(parts, self._stats):
            entry["lo"], entry["hi"] = _percentiles(np.concatenate(part) if part else np.zeros(0))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _interval(num: np.ndarray, den: np.ndarray) -> tuple[float | None, float | None]:
    return _percentiles(_ratio(num, den))


def _percentiles(stats: np.ndarray) -> tuple[float | None, float | None]:
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return None, None
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


# -- emotion -------------------------------------------------------------------------------------
def macro_f1(cols: "ItemColumns", boot: Bootstrap) -> dict[str, Any]:
    """Macro-F1 over the labels that occur as gold or prediction (an unreadable prediction is a miss).

    The per-replicate counts are integers, so taking them one label column at a time is exact."""
    names_g, names_p = cols.gold.names, cols.pred.names
    labels = sorted(set(names_g) | set(names_p)) + [NONE_LABEL]
    idx = {l: i for i, l in enumerate(labels)}
    gold = np.array([idx[x] for x in names_g] + [-1], dtype=np.int64)[cols.gold.array()]
    pred = np.array([idx[x] for x in names_p] + [idx[NONE_LABEL]], dtype=np.int64)[cols.pred.array()]
    ok = gold >= 0
    n = int(ok.sum())
    if n == 0:
        return {"value": None, "lo": None, "hi": None, "n": 0}
    k = len(labels)
    real = np.arange(k) != idx[NONE_LABEL]

    def f1(tp, g, p):
        den = g + p
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)
        f = f[..., real]
        return np.nanmean(f, axis=-1) if f.ndim > 1 else float(np.nanmean(f))

    def counts(W: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = []
        for hit in (lambda j: ok & (gold == j) & (pred == j), lambda j: ok & (gold == j), lambda j: ok & (pred == j)):
            cols_j = []
            for j in range(k):
                m = hit(j)
                cols_j.append(float(m.sum()) if W is None else W @ boot._sums(m.astype(np.float64)))
            out.append(np.array(cols_j) if W is None else np.stack(cols_j, axis=-1))
        return out[0], out[1], out[2]

    entry = {"value": float(f1(*counts(None))), "lo": None, "hi": None, "n": n}

    def stat(W: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"), _quiet():
            return f1(*counts(W))

    boot.add(stat, entry)
    return entry


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def confusion(cols: "ItemColumns") -> dict[str, Any]:
    """Counts of (gold, predicted) over items with a gold label; rows gold, columns predicted."""

    rows = [l for l in LABELS if l in cols.gold_count]
    cols_ = list(LABELS) + [NONE_LABEL]
    m = np.zeros((len(rows), len(cols_)), dtype=int)
    ri, ci = {l: i for i, l in enumerate(rows)}, {l: i for i, l in enumerate(cols_)}
    for (g, p), count in cols.pairs.items():
        if g in ri:
            m[ri[g], ci.get(p or NONE_LABEL, ci[NONE_LABEL])] += count
    used = [j for j, l in enumerate(cols_) if m[:, j].any() or l in ri]
    return {"rows": rows, "cols": [cols_[j] for j in used], "matrix": m[:, used].tolist()}


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
def compute_metrics(records: Iterable[dict], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """All headline numbers, breakdowns and the confusion matrix for one run's per-item records."""
    return metrics_of_columns(ItemColumns.of(records), n_boot=n_boot, seed=seed)


def metrics_of_columns(cols: ItemColumns, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """`compute_metrics` from the compact columns (what a report streams results.jsonl into)."""
    dims = list(cols.dims)
    rs = Resampler.of_codes(cols.dialogues.names, cols.dialogues.array(), n_boot=n_boot, seed=seed)
    boot = Bootstrap(rs)
    criteria: dict[str, Any] = {}
    for name in ("emotion_accuracy", "near_miss_accuracy", "emotion_named"):
        criteria[name] = boot.mean(cols.column(name))
    criteria["macro_f1"] = macro_f1(cols, boot)
    criteria["format_validity"] = boot.mean(cols.column("format_validity"))
    for d in dims:
        criteria[d] = boot.mean(cols.column(d))
    criteria["judged_mean"] = boot.mean(cols.column("judged_mean"))
    criteria["crisis_handling"] = boot.mean(cols.column("crisis_handling"))

    breakdowns: dict[str, dict[str, Any]] = {}
    for key, codes in cols.groups.items():
        table = {}
        order = sorted(codes.names, key=lambda g: (int(g) if g.isdigit() else 10**9, g))
        for g in order:
            code = codes.code(g)

            def mask(code: int = code, codes: Any = codes) -> np.ndarray:
                return codes.array() == code

            table[g] = {
                "n": int(mask().sum()),
                "emotion_accuracy": boot.mean(cols.column("emotion_accuracy"), mask),
                "judged_mean": boot.mean(cols.column("judged_mean"), mask),
            }
        breakdowns[key] = table
    boot.run()

    return {
        "n_items": cols.n,
        "n_dialogues": len(rs.keys),
        "n_boot": n_boot,
        "seed": seed,
        "dims": dims,
        "criteria": criteria,
        "judge": {
            "ran": cols.judge_ran,
            "scored": cols.judge_scored,
            "failures": sum(cols.failure_kinds.values()),
            "failure_kinds": dict(cols.failure_kinds),
        },
        "no_response": cols.no_response,
        "judge_skipped": cols.judge_skipped,
        "emotion_parse": dict(cols.emotion_parse),
        "at_risk": cols.at_risk,
        "confusion": confusion(cols),
        "labels": label_distribution(cols),
        "breakdowns": breakdowns,
    }


def label_distribution(cols: ItemColumns) -> dict[str, Any]:
    """Predicted vs gold label counts and what guessing would score on this very sample.

    A reader that answers one label for everything shows up here at once (top share near 1), and the
    accuracy reads against `chance` rather than against zero.
    """

    pred, gcount = cols.pred_count, cols.gold_count
    n = sum(gcount.values())
    expected = sum((gcount[k] / n) * (pred.get(k, 0) / n) for k in gcount) if n else 0.0
    top = pred.most_common(1)[0] if pred else (None, 0)
    return {
        "predicted": dict(pred.most_common()),
        "gold": dict(gcount.most_common()),
        "distinct_predicted": len([k for k in pred if k != "(none)"]),
        "top_predicted_share": (top[1] / n) if n else None,
        "chance": {**chance_levels(list(gcount.elements())), "same_distribution": expected},
    }


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
