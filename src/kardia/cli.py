"""The `kardia` command: thin. Each area registers its own commands; heavy imports happen inside them."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="kardia",
    help="Kardia-R1, runnable: build empathetic four-span dialogues, train with Rubric-ERL, evaluate, chat, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Each module defines `register(app)`; keeping them separate lets each area own its options.
_AREAS = (
    "kardia.chat",
    "kardia.data.commands",
    "kardia.judge.commands",
    "kardia.train.commands",
    "kardia.eval.commands",
    "kardia.serve",
    "kardia.demo",
    "kardia.reproduce",
)



@app.callback()
def _root() -> None:
    """Kardia-R1, runnable. Every model option takes a model string: embedded, a folder, openai:MODEL@URL."""


for _name in _AREAS:
    importlib.import_module(_name).register(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
