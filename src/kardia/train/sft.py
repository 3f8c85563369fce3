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
from .common import (TrainError, common_trainer_args, final_metrics, plot_curves, prompt_profile_callback, resolve_resume,
                     save_final, write_json)
from .config import SFTRunConfig
from .chat_format import load_model_and_tokenizer
from .model_card import write_model_card


def plan(cfg: SFTRunConfig) -> dict[str, Any]:
    """What a run would do, without torch: the --dry-run numbers."""
    if not cfg.data.path:
        raise TrainError("no data: pass --data FILE.jsonl or set data.path")
    stats = kd.count(cfg.data.path, "sft", cfg.difficulty(), cfg.data.system_prompt, cfg.prompt_profile())  # type: ignore[arg-type]
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


def freeze_below_top_layers(model: Any, top: int | None) -> int:
    """Freeze every decoder layer below the top `top` (None: freeze nothing). Returns tensors frozen.

    The backward pass then stops at the lowest trainable layer: on a CPU most of a step's time is saved,
    while the layers that map the situation to a label, the output head and the format still learn.
    """
    if top is None:
        return 0
    layers = model.get_decoder().layers
    if not 0 < top <= len(layers):
        raise TrainError(f"train_top_layers={top}: the model has {len(layers)} decoder layers")
    keep = {id(p) for layer in list(layers)[len(layers) - top:] for p in layer.parameters()}
    keep |= {id(p) for p in model.get_decoder().norm.parameters()}
    # the output rows stay trainable (tied with the input embeddings in small models): the span markers are
    # new tokens, and rows frozen at their words' mean leave "begin" and "<|..._begin|>" hard to tell apart
    keep |= {id(p) for p in model.get_output_embeddings().parameters()}
    frozen = 0
    for p in model.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)
            frozen += 1
    return frozen


def emotion_token_weights(input_ids: Any, begin: int, end: int, weight: float) -> Any:
    """Per next-token weights ([B, L-1], aligned with shifted labels): `weight` inside the emotion span
    (its label tokens and the closing marker), 1 elsewhere."""
    ids = input_ids[:, 1:]
    opened = (ids == begin).long().cumsum(1) - (ids == end).long().cumsum(1) > 0
    inside = (opened & (ids != begin)) | (ids == end)
    return 1.0 + (weight - 1.0) * inside.float()


def _emotion_weighted(base: type) -> type:
    """SFTTrainer whose token loss weighs the emotion span up (TRL's fused LM head; metrics as TRL logs them)."""

    class EmotionWeightedSFTTrainer(base):
        emotion_weight: float = 1.0
        emotion_ids: tuple[int, int] = (-1, -1)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            outputs = model(**inputs, fused_lm_head=True)
            w = emotion_token_weights(inputs["input_ids"], *self.emotion_ids, self.emotion_weight).to(outputs.log_probs.dtype)
            num = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = (-outputs.log_probs * w).sum() / torch.as_tensor(num).clamp(min=1)
            return (loss, outputs) if return_outputs else loss

    return EmotionWeightedSFTTrainer


def run_sft(
    cfg: SFTRunConfig, resume: bool | str | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train, save `<output_dir>/model` (+ model card, curves.png, metrics.json). Returns a summary."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer


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
    dataset = kd.build_dataset(cfg.data.path, "sft", cfg.difficulty(), cfg.data.system_prompt, profile=cfg.prompt_profile())  # type: ignore[arg-type]
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
    frozen = freeze_below_top_layers(model, cfg.train_top_layers)
    if frozen:
        log(f"training the top {cfg.train_top_layers} decoder layers only ({frozen} parameter tensors frozen)")
    trainer_cls = SFTTrainer if cfg.emotion_loss_weight == 1.0 else _emotion_weighted(SFTTrainer)
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=peft_config,
                          callbacks=[prompt_profile_callback(cfg)])
    if cfg.emotion_loss_weight != 1.0:
        trainer.emotion_weight = cfg.emotion_loss_weight
        trainer.emotion_ids = tuple(tok.convert_tokens_to_ids(["<|emotion_begin|>", "<|emotion_end|>"]))
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
