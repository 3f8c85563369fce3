"""The crisis guard with and without its learned layer, in one run: recall per category on the blind set
(Wilson 95% intervals), false positives on hard non-crisis text, ED validation situations and ESConv
seeker turns, the learned layer's threshold curve, and per-message latency.

    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/safety_learned_eval.py [--threads 2] [--out report.md]

Blind set: tests/data/crisis_blind5.jsonl + noncrisis_blind5.jsonl (written by an author who saw no project
file, in many voices and 11 languages; never used for training or for the threshold). v3 and v4 (--blind 3,
--blind 4) were blind for rounds 1 and 2 only (docs/results/safety_learned_round1.md, round2.md) and are
training data since. ED and ESConv text is read from ../shared/data and never
written to the report beyond line numbers. Layers compared: "patterns" = patterns + context (the guard
before the learned layer); "guard" = the default Guard layers (patterns + context + learned).
The curve recomputes "guard" at other thresholds from the same scores (flag = patterns or gate and
risk >= t), which is exactly the guard's rule for single messages.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


def rate(k: int, n: int) -> str:
    from kardia.eval.metrics import wilson

    lo, hi = wilson(k, n)
    return f"{k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}]" if n else "-"


def load(name: str) -> list[dict]:
    return [json.loads(l) for l in (DATA / name).read_text(encoding="utf-8").splitlines() if l.strip()]


def ed_rows() -> list[dict]:
    reviewed = json.loads((DATA / "ed_reviewed_risk.json").read_text())
    genuine = {int(k) for k in reviewed["lines"]}
    from kardia.corpora import shared_data_file

    with shared_data_file(reviewed["file"]).open(encoding="utf-8") as fh:
        return [{"text": r["text"], "id": f"ed:{i}"} for i, r in enumerate(csv.DictReader(fh), start=2) if i not in genuine]


def esconv_rows(limit: int) -> list[dict]:
    from kardia.corpora import esconv, shared_data_file

    rows = []
    for line, rec in esconv.read_dialogues(shared_data_file("esconv", "esconv_valid.jsonl")):
        for j, turn in enumerate(rec.dialog or []):
            if turn.speaker == "usr" and len(turn.text.split()) >= 4:
                rows.append({"text": turn.text, "id": f"esconv:{line - 1}:{j}"})
    return rows[:limit]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for the latency figure")
    ap.add_argument("--esconv", type=int, default=1500, help="ESConv seeker turns to score (the first N)")
    ap.add_argument("--latency-n", type=int, default=200)
    ap.add_argument("--blind", default="5", help="blind set version: 5 (blind now); 3 and 4 were blind once and are trained on since")
    ap.add_argument("--blind-only", action="store_true", help="only the blind set (no ED/ESConv/latency): a quick look on a busy machine")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    torch.set_num_threads(args.threads)
    from kardia.safety import Guard, assess
    from kardia.safety.learned import load_learned

    lc = load_learned()
    crisis, hard = load(f"crisis_blind{args.blind}.jsonl"), load(f"noncrisis_blind{args.blind}.jsonl")
    older_hard = load("noncrisis_set.jsonl") + load("noncrisis_holdout.jsonl") + load("noncrisis_holdout2.jsonl")
    sets = {"blind crisis": crisis, "blind hard non-crisis": hard}
    if not args.blind_only:
        sets.update({"ED valid situations": ed_rows(), "ESConv seeker turns": esconv_rows(args.esconv), "older hard non-crisis (trained on)": older_hard})
    scored: dict[str, list[tuple[bool, float, bool]]] = {}
    for name, rows in sets.items():
        texts = [r["text"] for r in rows]
        pat = [assess(t).at_risk for t in texts]
        risk = [s.risk for s in lc.scores(texts)]
        gate = [lc.gate_open(t) for t in texts]
        scored[name] = list(zip(pat, risk, gate))
    thr = lc.threshold

    def flag(x, t=thr):
        return x[0] or (x[2] and x[1] >= t)

    lines: list[str] = []
    out = lines.append
    out(f"# Crisis guard: patterns vs patterns + learned (threshold {thr:.4f}, corpus {lc.corpus_sha})\n")
    out("## Recall on the blind set (Wilson 95% intervals)\n")
    out("| slice | n | patterns | guard (patterns + learned) |\n|---|---:|---:|---:|")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(crisis):
        for key in ("all", f"category={r['category']}", f"family={r['sub']}", f"lang={r['lang']}"):
            groups[key].append(i)
    sc = scored["blind crisis"]
    for key in sorted(groups, key=lambda k: (k != "all", k.split("=")[0] != "category", k)):
        idx = groups[key]
        out(f"| {key} | {len(idx)} | {rate(sum(sc[i][0] for i in idx), len(idx))} | {rate(sum(flag(sc[i]) for i in idx), len(idx))} |")
    out("\n## False positives (Wilson 95% intervals)\n")
    out("| set | n | patterns | guard (patterns + learned) |\n|---|---:|---:|---:|")
    for name in list(sets)[1:]:
        v = scored[name]
        out(f"| {name} | {len(v)} | {rate(sum(x[0] for x in v), len(v))} | {rate(sum(flag(x) for x in v), len(v))} |")
    hk = defaultdict(list)
    for r, x in zip(hard, scored["blind hard non-crisis"]):
        hk[r["kind"]].append(flag(x))
    out("\nblind hard non-crisis by kind (guard flags): " + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(hk.items())))
    if args.blind_only:
        missed = [r for r, x in zip(crisis, sc) if not flag(x)]
        out(f"\n## Missed blind crises ({len(missed)})\n")
        out("\n".join(f"- {r['id']} {r['category']}/{r['sub']}/{r['lang']}: {r['text']}" for r in missed) or "- none")
        print("\n".join(lines))
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return 0
    out("\n## Threshold curve (guard = patterns or gate and risk >= t)\n")
    out("| t | blind recall | blind hard FPR | ED FPR | ESConv FPR |\n|---:|---:|---:|---:|---:|")
    for t in (0.5, 0.7, 0.8, 0.9, thr, 0.95, 0.97, 0.99):
        cells = [sum(flag(x, t) for x in scored[n]) / len(scored[n]) for n in ("blind crisis", "blind hard non-crisis", "ED valid situations", "ESConv seeker turns")]
        out(f"| {t:.4f}{' (shipped)' if t == thr else ''} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    out("\n## Latency per message (Guard.check, one message at a time)\n")
    guards = {"patterns + context": Guard(learned=False, semantic=False), "patterns + context + learned (default)": Guard(semantic=False)}
    msgs = [r["text"] for r in (sets["ED valid situations"][: args.latency_n // 2] + crisis + hard)][: args.latency_n]
    out(f"torch threads: {args.threads}\n\n| layers | n | median ms | p90 ms |\n|---|---:|---:|---:|")
    for name, g in guards.items():
        g.check("warm up")
        ts = []
        for m in msgs:
            t0 = time.perf_counter()
            g.check(m)
            ts.append(1000 * (time.perf_counter() - t0))
        ts.sort()
        out(f"| {name} | {len(ts)} | {statistics.median(ts):.1f} | {ts[int(0.9 * len(ts))]:.1f} |")
    missed = [r for r, x in zip(crisis, sc) if not flag(x)]
    out(f"\n## Missed blind crises ({len(missed)})\n")
    out("\n".join(f"- {r['id']} {r['category']}/{r['sub']}/{r['lang']}: {r['text']}" for r in missed) or "- none")
    fl = [r for r, x in zip(hard, scored["blind hard non-crisis"]) if flag(x)]
    out(f"\n## Flagged blind hard non-crisis ({len(fl)})\n")
    out("\n".join(f"- {r['id']} {r['kind']}: {r['text']}" for r in fl) or "- none")
    out("\nED / ESConv flags by id (text stays in ../shared/data): " + ", ".join(r["id"] for n in ("ED valid situations", "ESConv seeker turns") for r, x in zip(sets[n], scored[n]) if flag(x)))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
