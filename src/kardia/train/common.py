"""Pieces SFT and GRPO share: resume resolution, TRL argument mapping, final save, curves and metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .config import _RunBase

MODEL_SUBDIR = "model"


class TrainError(RuntimeError):
    """A run that cannot start or finish, said plainly."""


def resolve_resume(output_dir: str | Path, resume: bool | str | None) -> str | None:
    """`True`: the newest checkpoint in output_dir (an error if there is none); a path: that checkpoint."""
    if not resume:
        return None
    if isinstance(resume, str):
        p = Path(resume)
        if not (p / "trainer_state.json").exists():
            raise TrainError(f"--resume-from {p}: not a checkpoint folder (no trainer_state.json)")
        return str(p)
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(output_dir)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last is None:
        raise TrainError(f"--resume: no checkpoint-N folder in {out}; start without --resume")
    return last


def checkpoint_step(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return int(state.get("global_step", 0))


def common_trainer_args(cfg: _RunBase) -> dict[str, Any]:
    """Our config -> the TrainingArguments fields TRL's SFT and GRPO configs share."""
    args: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        optim=cfg.optim,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a value < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        report_to=cfg.resolved_report_to() or "none",
        use_cpu=cfg.use_cpu(),
        **cfg.precision(),
    )
    args.update(cfg.extra)
    return args


def tensorboard_dirs(output_dir: str | Path) -> list[str]:
    return sorted(str(p.parent) for p in Path(output_dir).rglob("events.out.tfevents.*"))


def final_metrics(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last logged value of each metric, plus the train summary (train_runtime, train_loss...)."""
    out: dict[str, Any] = {}
    for row in log_history:
        for k, v in row.items():
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                out[k] = v
    return out


def _curve_key(k: str) -> bool:
    if k in ("loss", "reward", "kl", "entropy"):
        return True
    if k.startswith("rewards/"):
        return k.endswith("/mean")
    return "reward" in k and not k.endswith(("/std", "failures", "gated", "vetoed"))


def plot_curves(log_history: list[dict[str, Any]], path: str | Path, title: str) -> str | None:
    """One PNG: loss, and every reward/<name> and judge/<dimension> curve TRL or the rewards logged."""
    rows = [r for r in log_history if "step" in r]
    keys = sorted(
        {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and _curve_key(k)}
    )
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(keys)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None, lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def save_final(trainer: Any, tokenizer: Any, cfg: _RunBase) -> Path:
    """Merged weights + tokenizer + chat template in `<output_dir>/model`: loads in chat, serve, vLLM unchanged."""
    out = Path(cfg.output_dir) / MODEL_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    model = trainer.accelerator.unwrap_model(trainer.model) if hasattr(trainer, "accelerator") else trainer.model
    try:
        from peft import PeftModel

        is_peft = isinstance(model, PeftModel)
    except ImportError:  # pragma: no cover
        is_peft = False
    if is_peft and cfg.lora.merge:
        model = model.merge_and_unload()
        model.save_pretrained(out)
        is_peft = False
    elif is_peft:
        model.save_pretrained(out)  # adapter only, by request
    else:
        trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    cfg.prompt_profile().save(out)  # eval, chat and serve send exactly the prompt it was trained with
    gen = getattr(model, "generation_config", None)
    if gen is not None and not is_peft:
        gen.pad_token_id = tokenizer.pad_token_id
        gen.save_pretrained(out)
    return out


def prompt_profile_callback(cfg: _RunBase) -> Any:
    """Writes the training profile into every checkpoint too, so any checkpoint evaluates like the final model."""
    from transformers import TrainerCallback

    profile = cfg.prompt_profile()

    class SavePromptProfile(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                profile.save(ckpt)

    return SavePromptProfile()


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
