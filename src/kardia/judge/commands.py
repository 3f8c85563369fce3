"""`kardia judge score` and `kardia judge calibrate` (heavy imports stay inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pydantic import Field

from ..config import ConfigError, KardiaConfig, fail
from ..llm.options import LLMOptions
from .scoring import score_file
from .calibrate import CalibrateConfig, calibrate


class JudgeScoreConfig(KardiaConfig):
    input: str | None = None
    output: str | None = None
    model: str = "embedded"
    rubric: str = "kardia"
    mode: str = "single"
    scorer: str = "auto"
    batch_size: int = 32
    parse_retries: int = 1
    llm_options: LLMOptions = Field(default_factory=LLMOptions)  # timeout, retries, limits of the judge model


def register(app: typer.Typer) -> None:
    judge_app = typer.Typer(name="judge", help="Rubric-as-judge: score replies, calibrate the judge.", no_args_is_help=True)

    @judge_app.command("score")
    def score_cmd(
        input: Optional[Path] = typer.Argument(None, help="JSONL of items: {id?, profile, situation?, history, response}"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="per-item JSONL (resumable: done ids are skipped)"),
        model: Optional[str] = typer.Option(None, help="judge model string (embedded, a folder, openai:MODEL@URL)"),
        rubric: Optional[str] = typer.Option(None, help="rubric name or YAML file"),
        mode: Optional[str] = typer.Option(None, help="single | per_dimension"),
        scorer: Optional[str] = typer.Option(None, help="text | probs | auto"),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML config"),
        set_: list[str] = typer.Option([], "--set", help="override key=value (repeatable)"),
    ) -> None:
        """Score a JSONL of (profile, history, response) items; writes scores, reasons and failures per item."""

        try:
            cfg = JudgeScoreConfig.from_cli(
                config, set_, {"input": input, "output": out, "model": model, "rubric": rubric, "mode": mode, "scorer": scorer}
            )
        except ConfigError as exc:
            fail(exc)
        if not cfg.input or not cfg.output:
            raise typer.BadParameter("give an input file and --out (or input/output in the config)")
        summary = score_file(cfg)
        _print_summary(summary)

    @judge_app.command("calibrate")
    def calibrate_cmd(
        data: Optional[Path] = typer.Option(None, help="ESConv JSONL (default: shared data esconv_valid.jsonl)"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (items.jsonl, report.md, report.json)"),
        model: Optional[str] = typer.Option(None, help="judge model string"),
        conversations: Optional[int] = typer.Option(None, help="how many conversations to use"),
        scorer: Optional[str] = typer.Option(None, help="text | probs | auto"),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML config"),
        set_: list[str] = typer.Option([], "--set", help="override key=value (repeatable)"),
    ) -> None:
        """Judge vs seekers' ratings on ESConv (Spearman + bootstrap CI), position bias, length bias."""

        try:
            cfg = CalibrateConfig.from_cli(
                config, set_, {"data": data, "out": out, "model": model, "conversations": conversations, "scorer": scorer}
            )
        except ConfigError as exc:
            fail(exc)
        report = calibrate(cfg)
        from rich.console import Console

        Console().print((Path(cfg.out) / "report.md").read_text(encoding="utf-8"))
        del report

    app.add_typer(judge_app, name="judge")


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"judge: {summary['output']}")
    table.add_column("dimension")
    table.add_column("mean", justify="right")
    for k, v in summary["means"].items():
        table.add_row(k, f"{v:.3f}" if v is not None else "n/a")
    c = Console()
    c.print(table)
    c.print(f"items: {summary['items']}  scored: {summary['scored']}  failures: {summary['failures']}  (this run: {summary['new']} new)")
    retry = summary.get("call_failures_to_retry") or []
    if retry:
        c.print(f"[yellow]{len(retry)} judge calls failed and were not written: rerun the same command to retry them[/]")
        for line in retry[:10]:
            c.print(f"  {line}")
        raise typer.Exit(1)
