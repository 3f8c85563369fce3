"""CLI: `kardia eval`, `kardia eval-report`, `kardia compare`, `kardia eval-pairwise`, `kardia human export|import`.

Heavy imports (torch, transformers, matplotlib) happen inside the commands so `kardia --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..config import fail, ConfigError
from ..records import RecordError


def _print_criteria(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from .report import criteria_rows, nice

    t = Table(title=f"{metrics['run']['model']} ({metrics['run']['mode']}), {metrics['n_items']} turns")
    t.add_column("criterion")
    t.add_column("value [95% CI]")
    t.add_column("n", justify="right")
    for k, v, n in criteria_rows(metrics):
        t.add_row(nice(k), v, str(n))
    t.add_row("judge failures", str(metrics["judge"]["failures"]), str(metrics["judge"]["ran"]))
    Console().print(t)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Model string: embedded, a folder, openai:MODEL@URL."),
        data: Optional[str] = typer.Option(None, "--data", "-d", help="KardiaBench .jsonl, ED conversations .csv or ESConv .jsonl."),
        judge: Optional[str] = typer.Option(None, "--judge", "-j", help="Judge model string, or 'none' / 'off' to skip judged dimensions."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="Output folder (results.jsonl, report.md, report.html)."),
        mode: Optional[str] = typer.Option(None, "--mode", help="spans | plain | auto (spans if the tokenizer has span tokens)."),
        limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Only the first N turns."),
        fmt: Optional[str] = typer.Option(None, "--format", help="auto | kardia | ed | esconv."),
        rubric: Optional[str] = typer.Option(None, "--rubric", help="Judge rubric name or file (default kardia)."),
        judge_scorer: Optional[str] = typer.Option(None, "--judge-scorer", help="text | probs | auto."),
        emotion_reader: Optional[str] = typer.Option(
            None, "--emotion-reader", help="plain mode: text (the label it writes) | probs (most probable label; local models)."
        ),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (EvalConfig fields)."),
        set_: List[str] = typer.Option([], "--set", help="key=value override, repeatable."),
        no_progress: bool = typer.Option(False, "--no-progress"),
    ):
        """Evaluate a model turn by turn: emotion accuracy, macro-F1, format, five judged dimensions, with 95% CIs."""
        from .run import EvalConfig, EvalError, run_eval

        options = {"model": model, "data": data, "judge": judge, "out": out, "mode": mode, "limit": limit,
                   "format": fmt, "rubric": rubric, "judge_scorer": judge_scorer, "emotion_reader": emotion_reader}
        try:
            cfg = EvalConfig.from_cli(config, set_, options)
            summary = run_eval(cfg, progress=not no_progress)
        except (ConfigError, EvalError, FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        if "metrics" in summary:
            _print_criteria(summary["metrics"])
        typer.echo(f"report: {Path(summary['out']) / 'report.md'} and report.html ({summary['wall_s']:.1f} s this run)")
        if summary["failures"]:
            typer.secho(f"{len(summary['failures'])} items failed (rerun the same command to retry them):", fg="yellow", err=True)
            for f in summary["failures"][:10]:
                typer.echo(f"  {f}", err=True)
            raise typer.Exit(1)

    @app.command("eval-report")
    def eval_report_cmd(out: Path = typer.Argument(..., help="An eval folder."),
                        n_boot: int = typer.Option(1000, "--n-boot")):
        """Rebuild report.md / report.html / metrics.json from an eval folder's results.jsonl."""
        from .report import build_report

        if not (out / "results.jsonl").exists():
            fail(f"{out}: no results.jsonl")
        _print_criteria(build_report(out, n_boot=n_boot))

    @app.command("compare")
    def compare_cmd(dirs: List[Path] = typer.Argument(..., help="Eval folders; the first is the baseline."),
                    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Default: <first>/../compare."),
                    n_boot: int = typer.Option(1000, "--n-boot")):
        """Side-by-side table, radar overlay and paired bootstrap differences of eval runs."""
        from .compare import compare_runs

        target = out or dirs[0].parent / "compare"
        try:
            res = compare_runs(dirs, target, n_boot=n_boot)
        except (FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        typer.echo((target / "compare.md").read_text(encoding="utf-8"))
        for w in res["warnings"]:
            typer.secho(f"warning: {w}", fg="yellow", err=True)

    @app.command("eval-pairwise")
    def pairwise_cmd(dir_a: Path = typer.Argument(...), dir_b: Path = typer.Argument(...),
                     judge: str = typer.Option("embedded", "--judge", "-j"),
                     out: Optional[Path] = typer.Option(None, "--out", "-o", help="Default: <A>/../pairwise."),
                     rubric: str = typer.Option("kardia", "--rubric"),
                     scorer: str = typer.Option("auto", "--scorer", help="text | probs | auto (probs for a local judge)."),
                     limit: Optional[int] = typer.Option(None, "--limit", "-n", help="A seeded sample of N common items."),
                     seed: int = typer.Option(0, "--seed"),
                     max_reply_chars: Optional[int] = typer.Option(
                         None, "--max-reply-chars", help="Cut both replies to N characters before judging (length bias)."),
                     no_progress: bool = typer.Option(False, "--no-progress")):
        """The judge compares A's and B's replies to the same turns, labels hidden, both orders: win/tie/loss."""
        from .pairwise import run_pairwise

        target = out or dir_a.parent / "pairwise"
        try:
            s = run_pairwise(dir_a, dir_b, target, judge=judge, rubric=rubric, scorer=scorer, limit=limit, seed=seed,
                             progress=not no_progress, max_reply_chars=max_reply_chars)
        except (FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        typer.echo((target / "pairwise.md").read_text(encoding="utf-8"))
        if s["call_failures_to_retry"]:
            typer.secho(f"{s['call_failures_to_retry']} judge calls failed: rerun to retry them", fg="yellow", err=True)
            raise typer.Exit(1)

    human = typer.Typer(help="Blind samples for human raters, and agreement between people and the judge.",
                        no_args_is_help=True)

    @human.command("export")
    def human_export(dirs: List[Path] = typer.Argument(..., help="Eval folders to sample from (mixed, blind)."),
                     out: Path = typer.Option(..., "--out", "-o"), n: int = typer.Option(50, "--n"),
                     seed: int = typer.Option(0, "--seed")):
        """Write a blind random sample (ratings_template.csv) and its key (key.jsonl, not for raters)."""
        from .human import export_sample

        try:
            res = export_sample(dirs, out, n=n, seed=seed)
        except (FileNotFoundError, FileExistsError, ValueError) as exc:
            fail(str(exc))
        typer.echo(f"{res['n']} items -> {out / 'ratings_template.csv'} (dimensions: {', '.join(res['dims'])})")

    @human.command("import")
    def human_import(export_dir: Path = typer.Argument(..., help="The folder written by `kardia human export`."),
                     ratings: List[Path] = typer.Option(..., "--ratings", "-r", help="One filled CSV per rater.")):
        """Read raters' CSVs; report Krippendorff's alpha (ordinal) and Spearman vs the judge."""
        from .human import import_ratings

        try:
            import_ratings(export_dir, ratings)
        except (RecordError, FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        typer.echo((export_dir / "human_agreement.md").read_text(encoding="utf-8"))

    app.add_typer(human, name="human")
