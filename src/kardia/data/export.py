"""From generated dialogues to the published dataset, streaming and rerunnable.

`finalize` reads the engine's append-only `work/generated*.jsonl` (one whole dialogue + its trace per
line), visits dialogues in id order (deterministic whatever the generation order), scrubs every text
field, filters, removes near-duplicates, assigns train/test by profile and easy/hard by verdicts, and
writes (each through a temporary file renamed at the end):
  dialogues.jsonl  train.jsonl  test.jsonl   the records (KardiaBench fields + id + meta)
  trace.jsonl                                every user turn, draft and critique, one event per line
  dropped.jsonl                              what was dropped and why
  hf/                                        a `datasets` DatasetDict (train/test), streamed in
  README.md  emotion_histogram.png           the dataset card with Table-3 statistics
  build_summary.json                         every count the card shows
Memory holds an id index and the dedup signatures, never the records.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .anonymise import scrub_all, scrub_record
from .config import BuildConfig
from .dedup import NearDupIndex, dialogue_text
from .filters import apply_filters
from ..dataset import DialogueRecord
from .split import difficulty, pick_test_profiles
from ..emotions import LABELS
from ..prompts import fill
from ..spans import parse

SPLITS = ("train", "test")


@dataclass
class SplitStats:
    dialogues: int = 0
    qa_pairs: int = 0
    words: Counter = field(default_factory=Counter)  # query / understanding / reasoning / response
    profiles: set = field(default_factory=set)
    emotions: Counter = field(default_factory=Counter)
    difficulty: Counter = field(default_factory=Counter)
    verdicts: Counter = field(default_factory=Counter)
    span_emotions: Counter = field(default_factory=Counter)  # what the assistant turns' emotion spans say
    span_agrees: int = 0  # emotion spans equal to their dialogue's gold label

    def add(self, rec: dict) -> None:
        self.dialogues += 1
        self.profiles.add(rec["meta"].get("profile_id") or rec["anon_username"])
        self.emotions[rec["emotion"]] += 1
        self.difficulty[str(rec["meta"].get("difficulty"))] += 1
        self.verdicts.update(rec["meta"].get("verdict_counts") or {})
        for m in rec["messages"][1:]:
            if m["role"] == "user":
                self.words["query"] += len(m["content"].split())
            else:
                self.qa_pairs += 1
                p = parse(m["content"])
                self.span_emotions[p.emotion or "(none)"] += 1
                self.span_agrees += int(p.emotion == rec["emotion"])
                for name in ("understanding", "reasoning", "response"):
                    self.words[name] += len((getattr(p, name) or "").split())

    def row(self) -> dict:
        q = max(self.qa_pairs, 1)
        return {
            "dialogues": self.dialogues,
            "qa_pairs": self.qa_pairs,
            "avg_turns": round(self.qa_pairs / max(self.dialogues, 1), 2),
            "avg_query_words": round(self.words["query"] / q, 1),
            "avg_understanding_words": round(self.words["understanding"] / q, 1),
            "avg_reasoning_words": round(self.words["reasoning"] / q, 1),
            "avg_response_words": round(self.words["response"] / q, 1),
            "labels": len(self.emotions),
            "profiles": len(self.profiles),
            "easy": self.difficulty.get("easy", 0),
            "hard": self.difficulty.get("hard", 0),
            "no_verdict": self.difficulty.get("None", 0),
        }


def generated_files(work: Path) -> list[Path]:
    return sorted(work.glob("generated*.jsonl"))


def _index(files: list[Path]) -> tuple[list[tuple[str, int, int, str]], int]:
    """(id, file number, byte offset, profile id) for every complete line; duplicates counted."""
    seen: set[str] = set()
    out = []
    dup = 0
    for fi, path in enumerate(files):
        with path.open("rb") as fh:
            offset = 0
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # torn tail of a killed writer: not a dialogue
                try:
                    obj = json.loads(raw)
                    rid = obj["id"]
                    pid = obj["record"]["meta"].get("profile_id") or obj["record"]["anon_username"]
                except (ValueError, KeyError, TypeError):
                    offset += len(raw)
                    continue
                if rid in seen:
                    dup += 1
                else:
                    seen.add(rid)
                    out.append((rid, fi, offset, pid))
                offset += len(raw)
    out.sort()
    return out, dup


def _read_at(path: Path, offset: int) -> dict:
    with path.open("rb") as fh:
        fh.seek(offset)
        return json.loads(fh.readline())


class _Writers:
    """Temporary files renamed into place only when everything was written."""

    def __init__(self, out: Path, names: list[str]):
        self.out = out
        self.fhs = {n: (out / f"{n}.tmp").open("w", encoding="utf-8") for n in names}

    def write(self, name: str, obj: Any) -> None:
        self.fhs[name].write(json.dumps(obj, ensure_ascii=False) + "\n")

    def commit(self) -> None:
        for n, fh in self.fhs.items():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(self.out / f"{n}.tmp", self.out / n)


def finalize(out: Path, cfg: BuildConfig, progress: bool = False) -> dict:
    out = Path(out)
    work = out / "work"
    files = generated_files(work)
    index, dup_ids = _index(files)
    test_set = pick_test_profiles((pid for *_, pid in index), cfg.split.test_fraction, cfg.split.seed if cfg.split.seed is not None else cfg.seed)
    dedup = NearDupIndex(cfg.dedup.method, cfg.dedup.threshold, cfg.dedup.num_perm) if cfg.dedup.method != "none" else None
    w = _Writers(out, ["dialogues.jsonl", "train.jsonl", "test.jsonl", "trace.jsonl", "dropped.jsonl"])
    stats = {s: SplitStats() for s in SPLITS}
    drops: Counter = Counter()
    for rid, fi, offset, _pid in index:
        line = _read_at(files[fi], offset)
        rec = scrub_record(line["record"])
        for ev in line.get("trace", []):
            w.write("trace.jsonl", {"id": rid, **scrub_all(ev)})
        reasons = apply_filters(rec, cfg)
        if not reasons:
            try:
                DialogueRecord.model_validate(rec)
            except Exception as exc:
                reasons = [f"structure: {str(exc).splitlines()[0]}"]
        if not reasons and dedup is not None:
            other = dedup.check_and_add(rid, dialogue_text(rec))
            if other:
                reasons = [f"near-duplicate: of {other}"]
        if reasons:
            drops.update({r.split(":")[0] for r in reasons})
            w.write("dropped.jsonl", {"id": rid, "reasons": reasons})
            continue
        meta = rec["meta"]
        meta["difficulty"] = difficulty(meta.get("verdict_counts") or {})
        meta["split"] = "test" if _pid in test_set else "train"
        DialogueRecord.model_validate(rec)
        w.write("dialogues.jsonl", rec)
        w.write(f"{meta['split']}.jsonl", rec)
        stats[meta["split"]].add(rec)
    w.commit()
    total = SplitStats()
    for s in SPLITS:
        st = stats[s]
        total.dialogues += st.dialogues
        total.qa_pairs += st.qa_pairs
        total.words.update(st.words)
        total.profiles |= st.profiles
        total.emotions.update(st.emotions)
        total.difficulty.update(st.difficulty)
        total.verdicts.update(st.verdicts)
        total.span_emotions.update(st.span_emotions)
        total.span_agrees += st.span_agrees
    summary = {
        "generated": len(index),
        "duplicate_ids_in_generated": dup_ids,
        "kept": total.dialogues,
        "dropped": dict(drops),
        "crisis_filter": "on" if cfg.filters.crisis else "off",
        "dedup": f"{cfg.dedup.method}" + (f" (threshold {dedup.threshold})" if dedup else ""),
        "table": {"train": stats["train"].row(), "test": stats["test"].row(), "all": total.row()},
        "emotions": {s: dict(stats[s].emotions) for s in SPLITS},
        "span_emotions": dict(total.span_emotions),
        "span_agrees_with_gold": {"turns": total.qa_pairs, "agree": total.span_agrees},
        "verdicts": dict(total.verdicts),
        "models": cfg.models.model_dump(),
    }
    if cfg.export.plot:
        plot_emotions(stats, out / "emotion_histogram.png")
    if cfg.export.hf:
        export_hf(out)
    (out / "build_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if cfg.export.card:
        write_card(out, cfg, summary)
    return summary


# -- Hugging Face datasets ---------------------------------------------------------------------------


def hf_features():
    from datasets import Features, List, Value

    s, i = Value("string"), Value("int64")
    return Features(
        {
            "id": s, "person": s, "mbti": s, "emotion": s, "situation": s, "anon_username": s,
            "messages": List({"role": s, "content": s}),
            "meta": {
                "seed": i,
                "models": {"user": s, "responder": s, "critic": s},
                "verdict_counts": {"FAIL": i, "PASS": i, "SOLVED": i},
                "difficulty": s, "split": s, "mbti_assigned": Value("bool"), "source": s,
                "profile_id": s, "seed_id": s, "exchanges": i, "revisions": i, "critic_unparsed": i,
                "critic_unparsed_policy": s, "emotion_unparsed": i, "responder_mode": s, "ended": s,
            },
        }
    )


def _records(path: str) -> Iterator[dict]:
    feats = hf_features()["meta"]
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            rec["meta"] = {k: rec["meta"].get(k) for k in feats}  # the documented meta keys, in order
            yield rec


def export_hf(out: Path) -> None:
    """A `datasets` folder (train/test), written by `Dataset.from_generator` so nothing is held in memory."""
    from datasets import Dataset, DatasetDict

    cache = out / "work" / "hf_cache"
    parts = {}
    for s in SPLITS:
        path = out / f"{s}.jsonl"
        if path.exists() and path.stat().st_size > 0:
            parts[s] = Dataset.from_generator(
                _records, gen_kwargs={"path": str(path)}, features=hf_features(), cache_dir=str(cache)
            )
    target = out / "hf"
    tmp = out / "hf.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if parts:
        DatasetDict(parts).save_to_disk(str(tmp))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    shutil.rmtree(cache, ignore_errors=True)


# -- card and plot -------------------------------------------------------------------------------


def plot_emotions(stats: dict[str, SplitStats], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(12, 4.5))
    bottom = [0] * len(LABELS)
    for s, color in zip(SPLITS, ("#4C72B0", "#DD8452")):
        vals = [stats[s].emotions.get(lab, 0) for lab in LABELS]
        ax.bar(LABELS, vals, bottom=bottom, label=s, color=color)
        bottom = [a + b for a, b in zip(bottom, vals)]
    ax.set_ylabel("dialogues")
    ax.set_title("Target emotion per dialogue (kept dialogues)")
    ax.legend()
    plt.xticks(rotation=70, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


_TABLE_ROWS = (
    ("Dialogues", "dialogues"), ("QA pairs (assistant turns)", "qa_pairs"), ("Avg. turns per dialogue", "avg_turns"),
    ("Avg. query length (words)", "avg_query_words"), ("Avg. understanding length", "avg_understanding_words"),
    ("Avg. reasoning length", "avg_reasoning_words"), ("Avg. response length", "avg_response_words"),
    ("Emotion labels", "labels"), ("Profiles", "profiles"), ("Easy / hard / no verdict", None),
)


def stats_table(table: dict) -> str:
    lines = ["| | train | test | all |", "|---|---:|---:|---:|"]
    for title, key in _TABLE_ROWS:
        if key is None:
            cells = [f"{table[s]['easy']} / {table[s]['hard']} / {table[s]['no_verdict']}" for s in ("train", "test", "all")]
        else:
            cells = [str(table[s][key]) for s in ("train", "test", "all")]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_card(out: Path, cfg: BuildConfig, summary: dict) -> None:


    dropped = summary["dropped"]
    gold = Counter()
    for split in summary["emotions"].values():
        gold.update(split)
    spans = summary.get("span_emotions", {})
    label_lines = "\n".join(f"| {lab} | {gold.get(lab, 0)} | {spans.get(lab, 0)} |" for lab in LABELS
                             if gold.get(lab) or spans.get(lab))
    agree = summary.get("span_agrees_with_gold", {})
    drop_lines = "\n".join(f"| {k} | {v} |" for k, v in sorted(dropped.items())) or "| (none) | 0 |"
    text = fill(
        "build/card",
        stats_table=stats_table(summary["table"]),
        label_table=label_lines or "| (none) | 0 | 0 |",
        span_agree=f"{agree.get('agree', 0)} of {agree.get('turns', 0)}",
        generated=summary["generated"],
        kept=summary["kept"],
        drop_table=drop_lines,
        crisis=summary["crisis_filter"],
        dedup=summary["dedup"],
        verdicts=", ".join(f"{k} {v}" for k, v in sorted(summary["verdicts"].items())) or "none",
        user_model=cfg.models.user,
        responder_model=cfg.models.responder,
        critic_model=cfg.models.critic,
        responder_mode=cfg.responder_mode,
        max_exchanges=cfg.max_exchanges,
        max_revisions=cfg.max_revisions,
        critic_unparsed=cfg.critic_unparsed,
        seed=cfg.seed,
        distribution=cfg.distribution,
        test_fraction=cfg.split.test_fraction,
    )
    (out / "README.md").write_text(text, encoding="utf-8")
