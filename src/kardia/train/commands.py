"""`kardia train sft` and `kardia train grpo` (heavy imports stay inside the functions)."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from ..config import fail, ConfigError
from .common import TrainError
from .config import load_config, SFTRunConfig, GRPORunConfig
from .sft import plan, run_sft

OPT_CONFIG = typer.Option(None, "--config", "-c", help="YAML run config (see configs/train/)")
OPT_SET = typer.Option(None, "--set", help="override a config key, repeatable: --set lora.enabled=true")
OPT_PRESET = typer.Option(None, "--preset", help="paper (default) or cpu (small, for a laptop demo)")
OPT_DATA = typer.Option(None, "--data", "-d", help="DialogueRecord JSONL (data.path)")
OPT_MODEL = typer.Option(None, "--model", "-m", help="start model: embedded, a folder")
OPT_OUT = typer.Option(None, "--output", "-o", help="run folder (checkpoints, logs, model/)")
OPT_STEPS = typer.Option(None, "--max-steps", help="stop after this many optimizer steps")
OPT_RESUME = typer.Option(False, "--resume", help="continue from the newest checkpoint in the run folder")
OPT_RESUME_FROM = typer.Option(None, "--resume-from", help="continue from this checkpoint folder")
OPT_DRY = typer.Option(False, "--dry-run", help="print the effective config and the run's size; train nothing")


def _print_plan(cfg: Any, info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.rule("effective config")
    con.print(cfg.to_yaml(), markup=False, highlight=False)
    table = Table(title=f"{info['stage'].upper()} plan (dry run: nothing trained)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for k, v in info.items():
        if k in ("data", "stage", "rewards"):
            continue
        table.add_row(k, str(v))
    d = info["data"]
    table.add_row("records in file", str(d["records"]))
    table.add_row("records used", f"{d['used_records']} (skipped by difficulty: {d['skipped_difficulty']})")
    table.add_row("assistant turns not four spans", str(d["turns_not_four_spans"]))
    if "rewards" in info:
        table.add_row("rewards", ", ".join(f"{r['name']}x{r['weight']:.3g}" for r in info["rewards"]))
    con.print(table)


def _run_stage(cls, config, set_, preset, plan, run, resume, dry_run: bool, explicit: dict[str, Any]) -> None:
    """What `train sft` and `train grpo` share: load the config, plan, then print the plan or train."""

    try:
        cfg = load_config(cls, config, set_ or [], preset, **explicit)
        info = plan(cfg)
    except (ConfigError, TrainError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    if dry_run:
        _print_plan(cfg, info)
        return
    try:
        summary = run(cfg, resume=resume)
    except TrainError as exc:
        fail(exc)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "metrics"}, indent=2))
    typer.echo(f"saved {summary['model_dir']}: kardia chat --model {summary['model_dir']}")


def register(app: typer.Typer) -> None:
    train = typer.Typer(help="Rubric-ERL: SFT on the easy split, then GRPO with rubric-judge rewards (TRL).", no_args_is_help=True)

    @train.command("sft")
    def sft(
        config: Optional[str] = OPT_CONFIG,
        set_: Optional[list[str]] = OPT_SET,
        preset: Optional[str] = OPT_PRESET,
        data: Optional[str] = OPT_DATA,
        model: Optional[str] = OPT_MODEL,
        output: Optional[str] = OPT_OUT,
        max_steps: Optional[int] = OPT_STEPS,
        lora: Optional[bool] = typer.Option(None, "--lora/--full", help="LoRA adapters (merged on save) or full fine-tuning"),
        resume: bool = OPT_RESUME,
        resume_from: Optional[str] = OPT_RESUME_FROM,
        dry_run: bool = OPT_DRY,
    ) -> None:
        """Supervised fine-tuning: whole dialogues, loss on assistant turns only."""

        _run_stage(
            SFTRunConfig, config, set_, preset, plan, run_sft, resume_from or resume, dry_run,
            {"data.path": data, "model": model, "output_dir": output, "max_steps": max_steps, "lora.enabled": lora},
        )

    @train.command("grpo")
    def grpo(
        config: Optional[str] = OPT_CONFIG,
        set_: Optional[list[str]] = OPT_SET,
        preset: Optional[str] = OPT_PRESET,
        data: Optional[str] = OPT_DATA,
        model: Optional[str] = OPT_MODEL,
        output: Optional[str] = OPT_OUT,
        max_steps: Optional[int] = OPT_STEPS,
        judge: Optional[str] = typer.Option(None, "--judge", "-j", help="judge model string (judge.model), e.g. openai:Qwen3-8B@http://judge:8000/v1"),
        num_generations: Optional[int] = typer.Option(None, "--num-generations", "-g", help="group size (default 8)"),
        use_vllm: Optional[bool] = typer.Option(None, "--vllm/--no-vllm", help="generate with TRL's vLLM integration"),
        vllm_mode: Optional[str] = typer.Option(None, "--vllm-mode", help="colocate or server"),
        resume: bool = OPT_RESUME,
        resume_from: Optional[str] = OPT_RESUME_FROM,
        dry_run: bool = OPT_DRY,
    ) -> None:
        """GRPO with format + emotion + rubric-judge rewards, one prompt per assistant turn."""
        from .grpo import plan, run_grpo

        _run_stage(
            GRPORunConfig, config, set_, preset, plan, run_grpo, resume_from or resume, dry_run,
            {
                "data.path": data, "model": model, "output_dir": output, "max_steps": max_steps,
                "judge.model": judge, "num_generations": num_generations, "use_vllm": use_vllm, "vllm_mode": vllm_mode,
            },
        )

    app.add_typer(train, name="train")
