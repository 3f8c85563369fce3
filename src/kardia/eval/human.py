"""People in the loop: a blind sample for human raters, their ratings back, agreement with the judge.

`export_sample` draws a seeded random sample of scored items from one or more eval folders,
shuffles them together and writes `ratings_template.csv` (no model names, no judge scores: raters
see the profile, situation, conversation and reply only) plus `key.jsonl` (kept from raters) that
maps each opaque rating id back to its run, item and judge scores.
`import_ratings` reads one filled CSV per rater, validates every cell (file, line, field on error)
and reports Krippendorff's alpha (ordinal) among raters and with the judge, and Spearman's rho
between the raters' mean and the judge, per dimension.
"""

from __future__ import annotations

import csv
import json
import random
import secrets
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..records import RecordError, iter_jsonl
from .results import RUN_FILE, read_results

FIXED_COLUMNS = ("rating_id", "profile", "situation", "conversation", "reply")


def krippendorff_alpha(data: Sequence[Sequence[float | None]], level: str = "ordinal") -> float | None:
    """Krippendorff's alpha for a raters x units matrix (None = missing), nominal/ordinal/interval.

    Coincidence-matrix form (Krippendorff 2011, "Computing Krippendorff's alpha-reliability").
    Units with fewer than two values are not pairable and are ignored. None when undefined.
    """
    units = []
    for u in range(max((len(r) for r in data), default=0)):
        vals = [r[u] for r in data if u < len(r) and r[u] is not None and not (isinstance(r[u], float) and np.isnan(r[u]))]
        if len(vals) >= 2:
            units.append(vals)
    if not units:
        return None
    values = sorted({v for u in units for v in u})
    if len(values) < 2:
        return 1.0 if sum(len(u) for u in units) else None
    idx = {v: i for i, v in enumerate(values)}
    k = len(values)
    o = np.zeros((k, k))
    for u in units:
        m = len(u)
        counts = np.zeros(k)
        for v in u:
            counts[idx[v]] += 1
        o += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if level == "nominal":
        delta = 1.0 - np.eye(k)
    elif level == "interval":
        v = np.array(values, dtype=float)
        delta = (v[:, None] - v[None, :]) ** 2
    elif level == "ordinal":
        cum = np.cumsum(n_c)
        delta = np.zeros((k, k))
        for c in range(k):
            for e in range(c, k):
                s = cum[e] - (cum[c - 1] if c > 0 else 0.0)
                delta[c, e] = delta[e, c] = (s - (n_c[c] + n_c[e]) / 2.0) ** 2
    else:
        raise ValueError(f"level must be nominal, ordinal or interval, got {level!r}")
    d_o = (o * delta).sum() / n
    d_e = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    if d_e == 0:
        return None
    return float(1.0 - d_o / d_e)


def _conversation(history: Sequence[dict]) -> str:
    return "\n".join(f"{'Person' if m['role'] == 'user' else 'Listener'}: {m['content']}" for m in history)


def export_sample(dirs: Sequence[str | Path], out: str | Path, n: int = 50, seed: int = 0) -> dict[str, Any]:
    """Write OUT/ratings_template.csv (for raters) and OUT/key.jsonl (not for raters)."""
    from .metrics import dims_of

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "key.jsonl").exists():
        raise FileExistsError(f"{out / 'key.jsonl'} exists: an export is already there (ratings would lose their key)")
    pool = []
    dims: list[str] = []
    for d in map(Path, dirs):
        recs = read_results(d)
        info = json.loads((d / RUN_FILE).read_text(encoding="utf-8")) if (d / RUN_FILE).exists() else {}
        model = info.get("identity", {}).get("model")
        for dim in dims_of(recs):
            if dim not in dims:
                dims.append(dim)
        # sorted by id: the sample depends on the seed only, not on the order items finished in
        pool += [(str(d), model, r) for r in sorted(recs, key=lambda r: r["id"]) if r.get("response")]
    if not dims:
        from ..judge import load_rubric

        dims = load_rubric("kardia").keys()
    rng = random.Random(seed)
    sample = rng.sample(pool, min(n, len(pool)))
    rng.shuffle(sample)
    with (out / "ratings_template.csv").open("w", encoding="utf-8", newline="") as fh, \
            (out / "key.jsonl").open("w", encoding="utf-8") as key:
        w = csv.writer(fh)
        w.writerow([*FIXED_COLUMNS, *dims, "comment"])
        for d, model, r in sample:
            rid = secrets.token_hex(4) if seed is None else "%08x" % rng.getrandbits(32)
            w.writerow([rid, r.get("profile", ""), r.get("situation", ""), _conversation(r.get("history") or []),
                        r.get("response", ""), *([""] * len(dims)), ""])
            key.write(json.dumps({"rating_id": rid, "dir": d, "model": model, "item_id": r["id"],
                                  "judge_scores": (r.get("judge") or {}).get("scores")}, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(
        "# Human rating sample\n\nGive raters `ratings_template.csv` only (one copy each, named after the rater, e.g. "
        "`alice.csv`). Each dimension column takes an integer 1-5 (blank = not rated). Keep `key.jsonl` away from "
        "raters: it says which model wrote each reply. Import with `kardia human import "
        f"{out} --ratings alice.csv --ratings bob.csv`.\n\nDimensions: {', '.join(dims)}.\n", encoding="utf-8")
    return {"out": str(out), "n": len(sample), "dims": dims}


def read_ratings(path: str | Path, dims: Sequence[str], known_ids: set[str]) -> dict[str, dict[str, int | None]]:
    """rating_id -> {dim: 1-5 or None} from one rater's CSV; bad cells raise with file, line, field."""
    p = Path(path)
    out: dict[str, dict[str, int | None]] = {}
    with p.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for col in ("rating_id", *dims):
            if col not in header:
                raise RecordError(p, 1, col, "missing column")
        while True:
            line = reader.line_num + 1  # where this record starts (a quoted cell may span lines)
            try:
                row = next(reader)
            except StopIteration:
                break
            rid = (row.get("rating_id") or "").strip()
            if rid not in known_ids:
                raise RecordError(p, line, "rating_id", f"{rid!r} is not in this export's key")
            if rid in out:
                raise RecordError(p, line, "rating_id", f"{rid!r} rated twice")
            vals: dict[str, int | None] = {}
            for dim in dims:
                cell = (row.get(dim) or "").strip()
                if not cell:
                    vals[dim] = None
                    continue
                try:
                    v = int(float(cell))
                    if float(cell) != v:
                        raise ValueError
                except ValueError:
                    raise RecordError(p, line, dim, f"{cell!r} is not an integer 1-5") from None
                if not 1 <= v <= 5:
                    raise RecordError(p, line, dim, f"{v} is outside 1-5")
                vals[dim] = v
            out[rid] = vals
    return out


def import_ratings(export_dir: str | Path, rating_files: Sequence[str | Path]) -> dict[str, Any]:
    """Agreement among raters and between raters and the judge; writes OUT/human_agreement.{json,md}."""
    from scipy.stats import spearmanr

    from .report import _md_table

    out = Path(export_dir)
    key = {r["rating_id"]: r for _, r in iter_jsonl(out / "key.jsonl")}
    with (out / "ratings_template.csv").open("r", encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh))
    dims = [c for c in header if c not in FIXED_COLUMNS and c != "comment"]
    raters = {Path(f).stem: read_ratings(f, dims, set(key)) for f in rating_files}
    if not raters:
        raise ValueError("no ratings given: pass --ratings FILE (one CSV per rater)")
    ids = sorted(set().union(*(set(r) for r in raters.values())))
    result: dict[str, Any] = {"raters": sorted(raters), "items_rated": len(ids), "dims": {}}
    rows = []
    for dim in dims:
        human = [[raters[name].get(i, {}).get(dim) for i in ids] for name in sorted(raters)]
        judge = [(key[i].get("judge_scores") or {}).get(dim) for i in ids]
        judge_rounded = [None if j is None else float(round(j)) for j in judge]
        means = [np.mean([h[u] for h in human if h[u] is not None]) if any(h[u] is not None for h in human) else None
                 for u in range(len(ids))]
        pairs = [(m, j) for m, j in zip(means, judge) if m is not None and j is not None]
        rho = p_value = None
        if len(pairs) >= 3 and len({p[0] for p in pairs}) > 1 and len({p[1] for p in pairs}) > 1:
            res = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
            rho, p_value = float(res.statistic), float(res.pvalue)
        entry = {
            "n_human_values": sum(v is not None for h in human for v in h),
            "alpha_humans": krippendorff_alpha(human, "ordinal") if len(human) >= 2 else None,
            "alpha_humans_and_judge": krippendorff_alpha(human + [judge_rounded], "ordinal"),
            "spearman_mean_human_vs_judge": rho, "spearman_p": p_value, "n_paired": len(pairs),
            "human_mean": float(np.mean([m for m in means if m is not None])) if any(m is not None for m in means) else None,
            "judge_mean": float(np.mean([j for j in judge if j is not None])) if any(j is not None for j in judge) else None,
        }
        result["dims"][dim] = entry

        def f(x):
            return "n/a" if x is None else f"{x:.3f}"

        rows.append([dim, entry["n_paired"], f(entry["alpha_humans"]), f(entry["alpha_humans_and_judge"]),
                     f(rho), f(entry["human_mean"]), f(entry["judge_mean"])])
    (out / "human_agreement.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    md = ["# Human ratings vs the judge", "",
          f"Raters: {', '.join(sorted(raters))}; items rated: {len(ids)}. Krippendorff's alpha is ordinal (judge scores "
          "rounded to integers for alpha); Spearman's rho compares the raters' mean with the judge's score.", "",
          _md_table(["dimension", "n paired", "alpha (raters)", "alpha (raters + judge)", "Spearman rho",
                     "human mean", "judge mean"], rows), ""]
    (out / "human_agreement.md").write_text("\n".join(md), encoding="utf-8")
    return result
