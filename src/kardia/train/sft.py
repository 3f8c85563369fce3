"""Stage 1: supervised fine-tuning on the easy split with TRL's SFTTrainer.

One example per dialogue; the loss covers assistant turns only (our chat template's `{% generation %}`
markers, TRL's `assistant_only_loss`). Full fine-tuning or LoRA (adapters on the linear layers; the span-token rows keep their
initialisation, see chat_format); LoRA is merged on save so the folder is a plain model.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

from . import datasets as kd
from .common import TrainError, common_trainer_args, final_metrics, plot_curves, resolve_resume, save_final, write_json
from .config import SFTRunConfig


def plan(cfg: SFTRunConfig) -> dict[str, Any]:
    """What a run would do, without torch: the --dry-run numbers."""
    if not cfg.data.path:
        raise TrainError("no data: pass --data FILE.jsonl or set data.path")
    stats = kd.count(cfg.data.path, "sft", cfg.difficulty(), cfg.data.system_prompt)  # type: ignore[arg-type]
    world = cfg.world_size()
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world
    batches = math.ceil(stats.examples / (cfg.per_device_train_batch_size * world))
    steps_per_epoch = max(1, math.ceil(batches / cfg.gradient_accumulation_steps))
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.num_train_epochs)
    return {
        "stage": "sft",
        "data": stats.as_dict(),
        "examples": stats.examples,
        "processes": world,
        "examples_per_step": per_step,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
    }


def run_sft(
    cfg: SFTRunConfig, resume: bool | str | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train, save `<output_dir>/model` (+ model card, curves.png, metrics.json). Returns a summary."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from .chat_format import load_model_and_tokenizer
    from .model_card import write_model_card

    t0 = time.time()
    info = plan(cfg)
    checkpoint = resolve_resume(cfg.output_dir, resume)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "run_config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")

    # the arguments first: under DeepSpeed ZeRO-3 they make from_pretrained load the weights sharded
    args = SFTConfig(
        **common_trainer_args(cfg),
        max_length=cfg.max_length,
        assistant_only_loss=True,
        packing=False,
        dataset_num_proc=None,
    )
    dtype = "float32" if cfg.use_cpu() else cfg.dtype
    model, tok, tinfo = load_model_and_tokenizer(cfg.model, cfg.chat_template, dtype=dtype)
    log(f"model {tinfo['path']}: +{tinfo['tokens_added']} span tokens, +{tinfo['embedding_rows_added']} embedding rows")
    dataset = kd.build_dataset(cfg.data.path, "sft", cfg.difficulty(), cfg.data.system_prompt)  # type: ignore[arg-type]
    peft_config = None
    if cfg.lora.enabled:
        peft_config = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules,
            task_type="CAUSAL_LM",
            # No adapter on the embeddings: TRL 1.16 computes the loss from `lm_head.weight` directly (fused
            # LM head), which PEFT token adapters break. The span rows start from their words' embeddings.
        )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=peft_config)
    log(f"SFT: {info['examples']} dialogues, {info['total_steps']} steps" + (f", resuming from {checkpoint}" if checkpoint else ""))
    result = trainer.train(resume_from_checkpoint=checkpoint)
    out = save_final(trainer, tok, cfg)
    history = trainer.state.log_history
    metrics = final_metrics(history)
    metrics.update({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
    metrics["global_step"] = trainer.state.global_step
    write_json(Path(cfg.output_dir) / "metrics.json", {"final": metrics, "log_history": history})
    curves = plot_curves(history, Path(cfg.output_dir) / "curves.png", f"SFT {Path(cfg.output_dir).name}")
    write_model_card(out, stage="sft", cfg=cfg, data=info["data"], metrics=metrics, base=tinfo["path"])
    summary = {
        "model_dir": str(out),
        "global_step": trainer.state.global_step,
        "resumed_from": checkpoint,
        "metrics": metrics,
        "curves": curves,
        "wall_s": round(time.time() - t0, 1),
    }
    return summary
