"""Stage 2: Rubric-ERL, i.e. GRPO with format + emotion + rubric-judge rewards, on TRL's GRPOTrainer.

One prompt per assistant turn of the hard split; the rewards read the `emotion`, `person` and
`situation` columns. The reward composition is data (config `rewards` + `judge`), the judge any
model string: in-process `embedded` on a laptop, `openai:MODEL@URL` (a `vllm serve` box) on a cluster.
Generation goes through TRL's vLLM integration when `use_vllm` is set (colocate or server mode).

Every scored completion is also appended (fsync) to `<output_dir>/completions/rank<N>.jsonl` with each
reward's value; on `--resume` the rows of steps after the checkpoint are cut first, so the table has
each step once.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from . import datasets as kd
from .common import (TrainError, checkpoint_step, common_trainer_args, final_metrics, plot_curves, prompt_profile_callback,
                     resolve_resume, save_final, write_json)
from .config import GRPORunConfig
from .. import rewards as R
from ..records import JsonlAppender
from ..llm import resolve_model_path
from .chat_format import load_chat_template, load_model_and_tokenizer, prepare_tokenizer, span_tokens
from .model_card import write_model_card

COMPLETIONS_DIR = "completions"


def plan(cfg: GRPORunConfig) -> dict[str, Any]:
    """The --dry-run numbers (no torch): prompts, steps, generations, judge calls per step."""
    if not cfg.data.path:
        raise TrainError("no data: pass --data FILE.jsonl or set data.path")
    stats = kd.count(cfg.data.path, "grpo", cfg.difficulty(), cfg.data.system_prompt, cfg.prompt_profile())  # type: ignore[arg-type]
    world = cfg.world_size()
    completions_per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world
    prompts_per_step = completions_per_step // cfg.num_generations
    steps_per_epoch = max(1, math.ceil(stats.examples / prompts_per_step))
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.num_train_epochs)
    calls = cfg.judge_calls_per_completion()
    return {
        "stage": "grpo",
        "data": stats.as_dict(),
        "prompts": stats.examples,
        "processes": world,
        "num_generations": cfg.num_generations,
        "prompts_per_step": prompts_per_step,
        "completions_per_step": completions_per_step,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "total_generations": total * completions_per_step,
        "judge_model": cfg.judge.model if calls else None,
        "judge_calls_per_step": completions_per_step * calls,
        "judge_calls_total": total * completions_per_step * calls,
        "rewards": [r.model_dump() for r in cfg.rewards],
        "generation": ("vllm-" + cfg.vllm_mode) if cfg.use_vllm else "transformers",
    }


# -- rewards -----------------------------------------------------------------------------------
def build_rewards(cfg: GRPORunConfig) -> tuple[list[Callable], list[float], list[dict[str, Any]]]:
    """Reward callables (TRL contract), their weights, and a description for the model card."""

    j = cfg.judge
    funcs, weights, described = [], [], []
    for spec in cfg.rewards:
        if spec.name == "format":
            f, detail = R.format_reward, "four spans present, in order, non-empty (0/1)"
        elif spec.name == "emotion":
            f, detail = R.emotion_reward, "emotion span equals the gold label (0/1)"
        elif spec.name == "rubric":
            f = R.make_rubric_reward(j.model, j.rubric, j.mode, j.scorer, cache=j.cache)
            detail = f"judge {j.model}, rubric {j.rubric}, mode {j.mode}: mean((s-1)/4) over the dimensions"
        else:
            f = R.make_kardia_reward(
                j.model, tuple(j.weights), j.gate, rubric=j.rubric, mode=j.mode, scorer=j.scorer, cache=j.cache
            )
            detail = (
                f"{j.weights[0]:.3g} format + {j.weights[1]:.3g} emotion + {j.weights[2]:.3g} rubric "
                f"(judge {j.model}, rubric {j.rubric}, gate {j.gate})"
            )
        funcs.append(f)
        weights.append(spec.weight)
        described.append({"name": spec.name, "func": getattr(f, "__name__", spec.name), "weight": spec.weight, "detail": detail})
    names = [getattr(f, "__name__", "") for f in funcs]
    if len(set(names)) != len(names):
        raise TrainError(f"rewards: each reward may appear once (got {names})")
    return funcs, weights, described


# -- completions table ---------------------------------------------------------------------------
def truncate_completions(folder: str | Path, keep_below_step: int) -> int:
    """Drop rows of steps >= `keep_below_step` (redone after a resume). Returns rows removed."""
    removed = 0
    for path in Path(folder).glob("rank*.jsonl"):
        from ..records import repair_torn_tail

        repair_torn_tail(path)
        kept = []
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if json.loads(line).get("step", 0) < keep_below_step:
                    kept.append(line)
                else:
                    removed += 1
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
    return removed


def _trainer_class():
    import torch
    from trl import GRPOTrainer


    class KardiaGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that also appends each scored completion, with every reward, to a JSONL table."""

        _kardia_appender: JsonlAppender | None = None

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            n = len(prompts)
            rank = self.accelerator.process_index
            local = rewards[rank * n : (rank + 1) * n].detach().cpu().tolist()
            if self._kardia_appender is None:
                self._kardia_appender = JsonlAppender(Path(self.args.output_dir) / COMPLETIONS_DIR / f"rank{rank}.jsonl")
            for i in range(n):
                comp = completions[i]
                text = comp[-1]["content"] if isinstance(comp, list) else comp
                self._kardia_appender.write(
                    {
                        "step": self.state.global_step,
                        "id": inputs[i].get("id"),
                        "emotion": inputs[i].get("emotion"),
                        "completion": text,
                        "rewards": {
                            name: (None if math.isnan(v) else v) for name, v in zip(self.reward_func_names, local[i])
                        },
                    }
                )
            return rewards

    del torch
    return KardiaGRPOTrainer


# -- model preparation -----------------------------------------------------------------------------
def prepare_start_model(cfg: GRPORunConfig, log: Callable[[str], None]) -> tuple[str, Any, dict[str, Any]]:
    """A folder whose tokenizer already holds the span tokens (the SFT output does).

    TRL builds the reference model (and vLLM its engine) from the policy's folder, so a base model
    without the tokens is prepared once into `<output_dir>/base-with-spans` rather than resized in memory.
    """
    from transformers import AutoTokenizer


    path = resolve_model_path(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    if all(t in tok.get_vocab() for t in span_tokens()):
        prepare_tokenizer(tok, cfg.chat_template)  # checks they are non-special; sets our template
        return path, tok, {"path": path, "tokens_added": 0}
    target = Path(cfg.output_dir) / "base-with-spans"
    if not (target / "config.json").exists():
        log(f"{path} has no span tokens: preparing {target} (tokens added, embeddings resized)")
        model, tok2, _ = load_model_and_tokenizer(cfg.model, cfg.chat_template, dtype="float32" if cfg.use_cpu() else cfg.dtype)
        target.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(target)
        tok2.save_pretrained(target)
    tok = AutoTokenizer.from_pretrained(str(target))
    prepare_tokenizer(tok, cfg.chat_template)
    assert tok.chat_template == load_chat_template(cfg.chat_template)
    return str(target), tok, {"path": path, "tokens_added": len(span_tokens())}


def run_grpo(cfg: GRPORunConfig, resume: bool | str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, save `<output_dir>/model` (+ card, curves.png, metrics.json, completions/). Returns a summary."""
    import torch
    from peft import LoraConfig
    from trl import GRPOConfig


    t0 = time.time()
    info = plan(cfg)
    checkpoint = resolve_resume(cfg.output_dir, resume)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run_config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    comp_dir = out_dir / COMPLETIONS_DIR
    comp_dir.mkdir(exist_ok=True)
    if checkpoint:
        cut = truncate_completions(comp_dir, checkpoint_step(checkpoint))
        log(f"resuming from {checkpoint}: {cut} completion rows of later steps removed (they are redone)")
    else:
        for p in comp_dir.glob("rank*.jsonl"):
            p.unlink()  # a fresh run starts a fresh table

    funcs, weights, described = build_rewards(cfg)
    model_path, tok, tinfo = prepare_start_model(cfg, log)
    dataset = kd.build_dataset(cfg.data.path, "grpo", cfg.difficulty(), cfg.data.system_prompt, profile=cfg.prompt_profile())  # type: ignore[arg-type]

    dtype = "float32" if cfg.use_cpu() else ("bfloat16" if cfg.precision().get("bf16") else cfg.dtype)
    grpo_args: dict[str, Any] = dict(
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high,
        reward_weights=weights,
        log_completions=cfg.log_completions,
        num_completions_to_print=2,
        use_vllm=cfg.use_vllm,
        vllm_mode=cfg.vllm_mode,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        vllm_tensor_parallel_size=cfg.vllm_tensor_parallel_size,
        model_init_kwargs={"dtype": getattr(torch, dtype) if dtype != "auto" else "auto"},
    )
    if cfg.vllm_server_base_url:
        grpo_args["vllm_server_base_url"] = cfg.vllm_server_base_url
    if cfg.loss_type:
        grpo_args["loss_type"] = cfg.loss_type
    if cfg.scale_rewards:
        grpo_args["scale_rewards"] = cfg.scale_rewards
    base_args = common_trainer_args(cfg)
    for k in list(cfg.extra):  # `extra` wins over everything, GRPO fields included
        grpo_args.pop(k, None)
    args = GRPOConfig(**base_args, **grpo_args)

    peft_config = None
    if cfg.lora.enabled:
        peft_config = LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
        )
    trainer_cls = _trainer_class()
    trainer = trainer_cls(
        model=model_path, reward_funcs=funcs, args=args, train_dataset=dataset, processing_class=tok, peft_config=peft_config,
        callbacks=[prompt_profile_callback(cfg)],
    )
    log(
        f"GRPO: {info['prompts']} prompts, {info['total_steps']} steps x {info['completions_per_step']} completions "
        f"(group {cfg.num_generations}); judge calls/step {info['judge_calls_per_step']}"
        + (f"; resuming from {checkpoint}" if checkpoint else "")
    )
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if trainer._kardia_appender is not None:
            trainer._kardia_appender.close()
    out = save_final(trainer, tok, cfg)
    history = trainer.state.log_history
    metrics = final_metrics(history)
    metrics.update({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
    metrics["global_step"] = trainer.state.global_step
    write_json(out_dir / "metrics.json", {"final": metrics, "log_history": history, "plan": info})
    curves = plot_curves(history, out_dir / "curves.png", f"GRPO {out_dir.name}")
    write_model_card(out, stage="grpo", cfg=cfg, data=info["data"], metrics=metrics, base=model_path if tinfo["tokens_added"] == 0 else tinfo["path"], rewards=described)
    return {
        "model_dir": str(out),
        "global_step": trainer.state.global_step,
        "resumed_from": checkpoint,
        "metrics": metrics,
        "curves": curves,
        "completions": [str(p) for p in sorted(comp_dir.glob("rank*.jsonl"))],
        "wall_s": round(time.time() - t0, 1),
    }
