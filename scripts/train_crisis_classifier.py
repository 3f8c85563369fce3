"""Train the crisis guard's learned layer: writes src/kardia/resources/safety/crisis_classifier.npz.

    HF_HUB_OFFLINE=1 PYTHONPATH=src python scripts/train_crisis_classifier.py [--check]

Training data (all written for kardia; provenance in docs/safety_data.md): the corpus
`resources/safety/crisis_corpus.jsonl`, the k-NN prototypes `resources/safety/prototypes.jsonl`, and the
test sets that are no longer blind (tests/data/crisis_set, noncrisis_set, *_holdout, *_holdout2).
NEVER the blind set (tests/data/*_blind4.jsonl; v3 was blind for round 1 only) and never ED/ESConv text: those measure it.

The threshold: the lowest one at which the layer (with its gate, on messages the patterns leave alone)
flags at most CALIB_FPR of the ED *training* situations (../shared/data; read here, never stored: only
the scalar threshold ships). ED *validation* situations and the blind set are kept for measurement.
Leave-one-source-out cross-validation (each source written at a different time, in a different voice)
is printed as a check of how the layer transfers to a new voice; it measured weak on its own (see
docs/safety_learned.md), which is why the layer is gated and combined with the patterns.
Deterministic (seeded, full-batch); `--check` retrains and fails if the shipped weights differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from kardia.paths import kardia_home, resource_path  # noqa: E402
from kardia.safety.types import CATEGORIES  # noqa: E402

LABELS = ("none",) + CATEGORIES
HIDDEN = 64
EPOCHS = 400
LR = 0.01
WEIGHT_DECAY = 1e-3
SEED = 0
CALIB_FPR = 0.008
CALIB_ROWS = 3000  # the first rows of the file: enough for a 0.8% rate (24 allowed), and fast to encode
CALIB = ROOT.parent / "shared" / "data" / "empatheticdialogues" / "ed_situations_train.csv"
LEVEL_HIGH = 0.98  # the learned layer says "high" only when nearly certain; patterns name high risk precisely
CONTEXT_FLOOR_RATIO = 0.5  # history counts only when the newest message alone scores >= ratio * threshold
OUT = resource_path("safety", "crisis_classifier.npz")
DATA = ROOT / "tests" / "data"
SOURCES = {
    "corpus": [resource_path("safety", "crisis_corpus.jsonl")],
    "sets": [DATA / "crisis_set.jsonl", DATA / "noncrisis_set.jsonl", resource_path("safety", "prototypes.jsonl")],
    "holdout_v1": [DATA / "crisis_holdout.jsonl", DATA / "noncrisis_holdout.jsonl"],
    "holdout_v2": [DATA / "crisis_holdout2.jsonl", DATA / "noncrisis_holdout2.jsonl"],
    # blind set v3 was measured once (docs/results/safety_learned_round1.md), then joined the training data
    "blind3_seen": [DATA / "crisis_blind3.jsonl", DATA / "noncrisis_blind3.jsonl"],
}


def load_rows() -> list[dict]:
    """(text, label, source), first source wins on duplicate text."""
    rows, seen = [], set()
    for source, paths in SOURCES.items():
        for p in paths:
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                label = obj.get("category") or "none"
                if label not in LABELS:
                    raise ValueError(f"{p}:{n}: field category: {label!r} not in {LABELS}")
                text = str(obj["text"]).strip()
                if text and text not in seen:
                    seen.add(text)
                    rows.append({"text": text, "label": LABELS.index(label), "source": source})
    return rows


def embed(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Classifier inputs, cached under $KARDIA_HOME/cache by the texts' and feature files' digest."""
    from kardia.safety.learned import Featurizer

    fz = Featurizer()
    files = [resource_path("safety", "learned_markers.yaml"), resource_path("safety", "patterns.yaml")]
    digest = hashlib.sha256(("\n".join(texts) + "".join(f.read_text() for f in files)).encode()).hexdigest()[:16]
    cache = kardia_home() / "cache" / f"crisis-train-x-{digest}.npy"
    if cache.exists():
        return np.load(cache), fz.names
    x = fz(texts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, x)
    return x, fz.names


def fit(x: np.ndarray, y: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """One hidden layer, softmax, class-balanced cross-entropy, full-batch Adam: deterministic."""
    rng = np.random.default_rng(seed)
    d, k = x.shape[1], len(LABELS)
    p = {
        "W1": (rng.standard_normal((d, HIDDEN)) * np.sqrt(2 / d)).astype(np.float64),
        "b1": np.zeros(HIDDEN),
        "W2": (rng.standard_normal((HIDDEN, k)) * np.sqrt(1 / HIDDEN)).astype(np.float64),
        "b2": np.zeros(k),
    }
    counts = np.bincount(y, minlength=k).astype(np.float64)
    # half the weight on "none", half shared by the crisis categories
    cw = np.where(np.arange(k) == 0, 0.5 / max(counts[0], 1), 0.5 / max(counts[1:].sum(), 1))
    sw = cw[y]
    onehot = np.eye(k)[y]
    m = {n: np.zeros_like(v) for n, v in p.items()}
    v2 = {n: np.zeros_like(v) for n, v in p.items()}
    xd = x.astype(np.float64)
    for t in range(1, EPOCHS + 1):
        a = xd @ p["W1"] + p["b1"]
        h = np.maximum(a, 0)
        logits = h @ p["W2"] + p["b2"]
        logits -= logits.max(1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(1, keepdims=True)
        g = (prob - onehot) * sw[:, None]
        grads = {"W2": h.T @ g, "b2": g.sum(0)}
        gh = (g @ p["W2"].T) * (a > 0)
        grads["W1"] = xd.T @ gh
        grads["b1"] = gh.sum(0)
        for n in p:
            gr = grads[n] + (WEIGHT_DECAY * p[n] if n.startswith("W") else 0)
            m[n] = 0.9 * m[n] + 0.1 * gr
            v2[n] = 0.999 * v2[n] + 0.001 * gr * gr
            p[n] -= LR * (m[n] / (1 - 0.9**t)) / (np.sqrt(v2[n] / (1 - 0.999**t)) + 1e-8)
    return p


def risk(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = np.maximum(x @ p["W1"] + p["b1"], 0)
    logits = h @ p["W2"] + p["b2"]
    logits -= logits.max(1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(1, keepdims=True)
    return 1 - prob[:, 0]


def choose_threshold(neg: np.ndarray, max_fpr: float) -> float:
    """The lowest t with mean(neg >= t) <= max_fpr (neg: the scores of negatives)."""
    neg = np.sort(neg)
    allowed = int(np.floor(max_fpr * len(neg)))
    t = float(neg[len(neg) - allowed - 1]) + 1e-6 if allowed < len(neg) else 0.0
    return round(min(max(t, 0.05), 0.999), 4)


def calibration_scores(p: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """Risk on the calibration situations, 0 where the gate is closed or the patterns already decide."""
    import csv

    from kardia.safety.learned import Featurizer

    if not path.exists():
        raise SystemExit(f"{path}: calibration situations missing (the ED training split; see docs/safety_learned.md)")
    with path.open(encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh) if r.get("text", "").strip()][:CALIB_ROWS]
    fz = Featurizer()
    keep = [t for t in texts if not fz.patterns.find(t)]
    x, _ = embed(keep)
    gate = np.array([fz.gate_open(t) for t in keep])
    return risk(p, x) * gate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="retrain and compare with the shipped weights; write nothing")
    args = ap.parse_args()
    rows = load_rows()
    texts = [r["text"] for r in rows]
    y = np.array([r["label"] for r in rows])
    src = np.array([r["source"] for r in rows])
    x, marker_names = embed(texts)
    print(f"{len(rows)} texts: " + ", ".join(f"{s} {int((src == s).sum())}" for s in SOURCES))
    p = fit(x, y)
    calib = calibration_scores(p, CALIB)
    thr = choose_threshold(calib, CALIB_FPR)
    print(f"threshold {thr}: the lowest flagging <= {CALIB_FPR} of {len(calib)} ED training situations the patterns leave alone")
    oof = np.zeros(len(rows))
    for s in SOURCES:
        test = src == s
        oof[test] = risk(fit(x[~test], y[~test]), x[test])
    print("leave-one-source-out, no gate, at that threshold:")
    print("| held-out source | crisis n | recall | non-crisis n | FPR |\n|---|---:|---:|---:|---:|")
    for s in SOURCES:
        c, n = (src == s) & (y > 0), (src == s) & (y == 0)
        print(f"| {s} | {c.sum()} | {(oof[c] >= thr).mean() if c.any() else float('nan'):.3f} | {n.sum()} | {(oof[n] >= thr).mean() if n.any() else float('nan'):.3f} |")
    corpus_sha = hashlib.sha256("\n".join(f"{r['label']}\t{r['text']}" for r in rows).encode()).hexdigest()[:16]
    out = {
        **{k: v.astype(np.float32) for k, v in p.items()},
        "labels": np.array(LABELS),
        "markers": np.array(marker_names),
        "threshold": np.float32(thr),
        "level_high": np.float32(LEVEL_HIGH),
        "context_threshold": np.float32(thr),
        "context_floor": np.float32(thr * CONTEXT_FLOOR_RATIO),
        "corpus_sha": np.array(corpus_sha),
    }
    if args.check:
        z = np.load(OUT)
        same = str(z["corpus_sha"]) == corpus_sha and all(np.allclose(z[k], out[k], atol=1e-4) for k in ("W1", "b1", "W2", "b2", "threshold"))
        print("shipped weights match a fresh training run" if same else "shipped weights DIFFER from a fresh training run")
        return 0 if same else 1
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB), corpus {corpus_sha}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
