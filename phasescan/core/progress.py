"""The sweep's progress bar (rich): models done, model-steps/s and models/s, compile time, ETA,
on stderr.

It counts model-steps (a model trained for `steps` steps is `steps` of them), so it moves with
every segment of a chunk. On a terminal it redraws in place; in a log file it prints the notes
(e.g. "compiling bucket 1 of 2") as they come, the bar's state as a line at most once a
LOG_EVERY_S (after a segment), so a background study's log shows its rate and ETA, and the bar's
last state at the end.
"""
from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, TextColumn
from rich.progress import Progress as RichProgress
from rich.text import Text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class _Rates(ProgressColumn):
    """model-steps/s, the models/s they make, elapsed time (compiling apart) and ETA."""

    def render(self, task) -> Text:
        # The training rate over everything this process trained (a segment can take minutes:
        # rich's own speed needs two updates inside its window), from the first finished
        # segment on; compile time is not training time. Before it: the plan's estimate.
        done = task.completed - task.fields["start_steps"]
        compiling = task.fields["compile_s"]
        training = (task.elapsed or 0.0) - compiling
        speed = done / training if done > 0 and training > 0 else None
        per_model = task.fields["steps_per_model"]
        rates = (f"{speed / per_model:.3g} models/s ({speed:.3g} model-steps/s)" if speed
                 else "? models/s")
        if task.finished or task.completed >= task.total:  # a resume with nothing left starts done
            eta = "0s"
        elif speed:
            eta = _duration((task.total - task.completed) / speed)
        elif task.fields["estimate_s"] is not None:
            eta = f"~{_duration(max(task.fields['estimate_s'] - max(training, 0.0), 0.0))} (estimate)"
        else:
            eta = "?"
        compiled = f" (compiling {_duration(compiling)})" if compiling else ""
        return Text(f"{rates}  elapsed {_duration(task.elapsed)}{compiled}  ETA {eta}")


LOG_EVERY_S = 300.0  # a log file's bar line: often enough to follow, few enough to read


class Progress:
    def __init__(self, total_models: int, total_steps: int, done_models: int = 0,
                 done_steps: int = 0, stream=sys.stderr, estimate_s: float | None = None):
        # A log file gets whole lines, not a bar wrapped at 80 columns
        self.console = Console(file=stream, highlight=False, width=None if stream.isatty() else 160)
        self.bar = RichProgress(TextColumn("phasescan"), BarColumn(bar_width=24),
                                TextColumn("{task.fields[models]}/{task.fields[total_models]} models done, "
                                           "{task.percentage:>3.0f}% of model-steps"),
                                _Rates(), console=self.console, transient=False)
        self.task = self.bar.add_task("sweep", total=max(total_steps, 1), completed=done_steps,
                                      models=done_models, total_models=total_models, start_steps=done_steps,
                                      compile_s=0.0, estimate_s=estimate_s,
                                      steps_per_model=max(total_steps, 1) / max(total_models, 1))
        self.bar.start()
        self.logged_at = None if stream.isatty() else time.monotonic()  # None: the bar redraws itself

    def note(self, text: str) -> None:
        """A line above the bar (it stays in a log file too)."""
        self.bar.console.print(f"phasescan: {text}")

    def advance(self, model_steps: int) -> None:
        self.bar.update(self.task, advance=model_steps)
        if self.logged_at is not None and time.monotonic() - self.logged_at >= LOG_EVERY_S:
            self.logged_at = time.monotonic()
            self.console.print(self.bar.make_tasks_table(self.bar.tasks))

    def compiled(self, seconds: float) -> None:
        """Seconds spent compiling: shown apart, and not counted in the training rate."""
        task = self.bar.tasks[0]
        self.bar.update(self.task, compile_s=task.fields["compile_s"] + seconds)

    def models_done(self, n: int) -> None:
        task = self.bar.tasks[0]
        self.bar.update(self.task, models=task.fields["models"] + n)

    def close(self) -> None:
        self.bar.refresh()
        self.bar.stop()
