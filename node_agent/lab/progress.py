"""Step-by-step progress for lab commands: a spinner while a step runs (on a terminal),
then one line per step with its outcome and duration."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape


@dataclass
class Step:
    """What a running step reports: a short detail for its line, and warnings."""

    detail: str = ""
    warnings: list[str] = field(default_factory=list)


class Progress:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    @contextmanager
    def step(self, title: str) -> Iterator[Step]:
        step = Step()
        start = time.monotonic()
        try:
            with self.console.status(escape(title) + " ..."):
                yield step
        except BaseException as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.console.print(f"[red]✗[/] {escape(title)}: {escape(reason)}")
            raise
        elapsed = time.monotonic() - start
        detail = f" [dim]{escape(step.detail)}[/]" if step.detail else ""
        self.console.print(f"[green]✓[/] {escape(title)}{detail} [dim]({elapsed:.1f}s)[/]")
        for warning in step.warnings:
            self.warn(warning)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]![/] {escape(message)}")

    def info(self, message: str) -> None:
        self.console.print(escape(message))

    def error(self, message: str) -> None:
        self.console.print(f"[red]error:[/] {escape(message)}")
