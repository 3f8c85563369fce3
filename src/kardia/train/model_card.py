"""The model card written next to every saved model: what it was trained from, on what, how, with what result.

Also `kardia_train.json` (the same facts, machine-readable), so a GRPO card can name the SFT stage
before it (the lineage) and a reader can reproduce the run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from .config import _RunBase

TRAIN_INFO = "kardia_train.json"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _base_name(model: str, resolved: str) -> str:
    if model == "embedded":
        from ..llm.embedded import BASE_MODEL_ID

        return BASE_MODEL_ID
    return model


def _lineage(resolved: str) -> list[dict[str, Any]]:
    p = Path(resolved) / TRAIN_INFO
    if not p.exists():
        return []
    prev = json.loads(p.read_text(encoding="utf-8"))
    return list(prev.get("lineage", [])) + [{k: prev.get(k) for k in ("stage", "base_model", "data", "final_metrics")}]


def write_model_card(
    out: str | Path,
    stage: str,
    cfg: _RunBase,
    data: dict[str, Any],
    metrics: dict[str, Any],
    base: str,
    rewards: list[dict[str, Any]] | None = None,
) -> Path:
    out = Path(out)
    base_model = _base_name(cfg.model, base)
    data_file = cfg.data.path or ""
    data_info = {
        "path": data_file,
        "sha256": file_sha256(data_file) if data_file and Path(data_file).exists() else None,
        "difficulty": cfg.difficulty(),  # type: ignore[attr-defined]
        "records": data.get("records"),
        "records_used": data.get("used_records"),
        "examples": data.get("examples"),
        "assistant_turns": data.get("assistant_turns"),
        "turns_not_four_spans": data.get("turns_not_four_spans"),
    }
    info = {
        "stage": stage,
        "base_model": base_model,
        "base_path": base,
        "data": data_info,
        "rewards": rewards,
        "settings": cfg.model_dump(mode="json"),
        "final_metrics": metrics,
        "lineage": _lineage(base),
    }
    (out / TRAIN_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")

    front = {
        "base_model": base_model,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["kardia", "kardia-r1", "emotional-support", "trl", stage],
    }
    shown = {k: v for k, v in metrics.items() if k == "loss" or k.startswith(("train_", "rewards/", "reward", "judge/", "kl", "global_step"))}
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# Kardia {stage.upper()} model",
        "",
        "Trained with kardia (Kardia-R1 made runnable): the model first writes what it",
        "understands, its reasoning, the person's emotion (one of 32 labels), then a short reply, each in its",
        "own span (`<|understanding_begin|>` ... `<|response_end|>`, ordinary added tokens so decoders keep them).",
        "Only the response span is meant to be shown to a person.",
        "",
        "**This model is not clinical treatment.** It does not diagnose and must not replace a professional;",
        "anyone in danger should contact a crisis line or emergency services.",
        "",
        "## Base model",
        f"- `{base_model}` (loaded from `{base}`)",
    ]
    for prev in info["lineage"]:
        lines.append(f"- earlier stage: {prev.get('stage')} from `{prev.get('base_model')}` on `{(prev.get('data') or {}).get('path')}`")
    lines += ["", "## Data", ""]
    lines += [f"- {k}: `{v}`" for k, v in data_info.items() if v is not None]
    if rewards:
        lines += ["", "## Rewards", ""]
        lines += [f"- {r['name']} (weight {r['weight']:.3g}){': ' + r['detail'] if r.get('detail') else ''}" for r in rewards]
    lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(shown.items())]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f"kardia chat --model {out}",
        f"transformers serve  # then request model {out}",
        f"vllm serve {out}",
        "```",
        "",
        "## Settings",
        "",
        "```yaml",
        cfg.to_yaml().strip(),
        "```",
        "",
    ]
    card = out / "README.md"
    card.write_text("\n".join(lines), encoding="utf-8")
    return card
