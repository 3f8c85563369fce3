"""Crisis guard: recall and false-positive rate per set and category, with a naive keyword baseline.

    python benchmarks/safety_eval.py [--model MODEL_STRING] [--out report.md]

Sets: tests/data/crisis_set.jsonl (recall), tests/data/noncrisis_set.jsonl (false positives); held-out
sets: *_holdout.jsonl (v1: written before tuning, then used for ONE round of fixes, so no longer blind)
and *_holdout2.jsonl (v2: written after that round, not tuned on); and the ED validation situations from ../shared/data (false positives; lines reviewed as
genuine risk are listed in tests/data/ed_reviewed_risk.json and reported apart). The baseline is a plain
keyword list (what a guard without negation/idiom/third-party handling does), run in the same process.

This measures the pattern and context layers. The default guard adds the learned layer: its comparison
with the patterns-only guard (blind sets, ED, ESConv, threshold curve, latency) is
benchmarks/safety_learned_eval.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared" / "data"

KEYWORDS = re.compile(
    r"\b(suicid\w*|kill (?:myself|me|him|her)|die|dying|dead|end it|hurt(?:ing)? myself|cut(?:ting)? myself|overdose\w*|"
    r"pills|abuse\w*|hits? me|beat\w* me|rape\w*|heart attack|stroke|seizure|not breathing|can'?t breathe|bleeding|"
    r"better off without me|no point|kms)\b",
    re.I,
)


def load(name: str) -> list[dict]:
    p = DATA / name
    return [json.loads(l) for l in p.read_text(encoding="utf-8").splitlines() if l.strip()] if p.exists() else []


def ed_rows() -> tuple[list[dict], dict[int, str]]:
    reviewed = json.loads((DATA / "ed_reviewed_risk.json").read_text())
    path = SHARED / reviewed["file"]
    if not path.exists():
        return [], {}
    with path.open(encoding="utf-8") as fh:
        rows = [{"id": f"ed:{i}", "text": r["text"], "kind": "ed_valid", "line": i} for i, r in enumerate(csv.DictReader(fh), start=2)]
    return rows, {int(k): v for k, v in reviewed["lines"].items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="also run the model-based check with this model string")
    ap.add_argument("--semantic", action="store_true", help="add the embedding k-NN layer (loads torch: use the CPU lock)")
    ap.add_argument("--out", default=None, help="write the Markdown report here")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from kardia.safety import assess

    def guard(r):
        return assess(r["text"], r.get("history"), model=args.model, semantic=args.semantic)

    def keyword(r):
        return bool(KEYWORDS.search(r["text"]))

    crisis, noncrisis = load("crisis_set.jsonl"), load("noncrisis_set.jsonl")
    c_hold, n_hold = load("crisis_holdout.jsonl"), load("noncrisis_holdout.jsonl")
    c_hold2, n_hold2 = load("crisis_holdout2.jsonl"), load("noncrisis_holdout2.jsonl")
    ed, ed_genuine = ed_rows()

    lines: list[str] = []
    out = lines.append
    layers = "patterns + context" + (" + semantic k-NN" if args.semantic else "") + (f" + model check ({args.model})" if args.model else "")
    out(f"# Crisis guard evaluation: {layers}\n")
    if args.semantic:
        out("Note: the semantic layer's examples are crisis_set + noncrisis_set, so those two rows measure")
        out("nothing new for it; read the held-out and ED rows.\n")

    # recall
    out("## Recall on crisis statements\n")
    out("| set | slice | n | guard recall | category right | keyword baseline recall |")
    out("|---|---|---:|---:|---:|---:|")
    t_guard = t_kw = 0.0
    n_calls = 0
    misses: dict[str, list[str]] = defaultdict(list)
    for set_name, rows in (("crisis_set", crisis), ("crisis_holdout_v1", c_hold), ("crisis_holdout_v2", c_hold2)):
        if not rows:
            continue
        slices: dict[str, list] = defaultdict(list)
        for r in rows:
            t0 = time.perf_counter()
            a = guard(r)
            t_guard += time.perf_counter() - t0
            t0 = time.perf_counter()
            k = keyword(r)
            t_kw += time.perf_counter() - t0
            n_calls += 1
            rec = (a.at_risk, a.category == r["category"], k)
            if not a.at_risk:
                misses[set_name].append(r["text"])
            for key in ("all", f"category={r['category']}", f"kind={r.get('kind', '?')}"):
                slices[key].append(rec)
        for key in sorted(slices, key=lambda s: (s != "all", s)):
            v = slices[key]
            n = len(v)
            out(f"| {set_name} | {key} | {n} | {sum(x[0] for x in v) / n:.3f} | {sum(x[1] for x in v) / n:.3f} | {sum(x[2] for x in v) / n:.3f} |")

    # false positives
    out("\n## False positives on non-crisis text\n")
    out("| set | slice | n | guard FPR | keyword baseline FPR |")
    out("|---|---|---:|---:|---:|")
    flagged: dict[str, list[str]] = defaultdict(list)
    ed_review_hits = []
    for set_name, rows in (
        ("noncrisis_set", noncrisis),
        ("noncrisis_holdout_v1", n_hold),
        ("noncrisis_holdout_v2", n_hold2),
        ("ed_valid_situations", ed),
    ):
        if not rows:
            continue
        slices = defaultdict(list)
        for r in rows:
            if r.get("line") in ed_genuine:
                ed_review_hits.append((r["line"], ed_genuine[r["line"]], guard(r).at_risk))
                continue
            t0 = time.perf_counter()
            a = guard(r)
            t_guard += time.perf_counter() - t0
            t0 = time.perf_counter()
            k = keyword(r)
            t_kw += time.perf_counter() - t0
            n_calls += 1
            if a.at_risk:
                flagged[set_name].append(f"{r.get('line', r['id'])}: {r['text'][:110]} -> {a.category}/{a.level} {a.rules}")
            for key in ("all", f"kind={r.get('kind', '?')}"):
                slices[key].append((a.at_risk, k))
        for key in sorted(slices, key=lambda s: (s != "all", s)):
            v = slices[key]
            n = len(v)
            if set_name == "ed_valid_situations" and key != "all":
                continue
            out(f"| {set_name} | {key} | {n} | {sum(x[0] for x in v) / n:.4f} | {sum(x[1] for x in v) / n:.4f} |")

    out("\n## Speed (same process)\n")
    out("| checker | messages | ms per message | ratio vs keyword baseline |")
    out("|---|---:|---:|---:|")
    out(f"| guard | {n_calls} | {1000 * t_guard / n_calls:.3f} | {t_guard / max(t_kw, 1e-9):.0f}x |")
    out(f"| keyword baseline | {n_calls} | {1000 * t_kw / n_calls:.4f} | 1x |")

    if ed_review_hits:
        out("\n## ED situations reviewed as genuine risk (reported, not counted as false positives)\n")
        for line, why, hit in ed_review_hits:
            out(f"- line {line}: {why} (guard flags it: {hit})")
    for name, items in misses.items():
        out(f"\n## Missed in {name} ({len(items)})\n")
        out("\n".join(f"- {t}" for t in items) or "- none")
    for name, items in flagged.items():
        out(f"\n## Flagged in {name} ({len(items)})\n")
        out("\n".join(f"- {t}" for t in items))

    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
