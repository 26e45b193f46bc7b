"""A small progress bar over a whole sweep: models done, models/s and ETA, on stderr."""
from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    def __init__(self, total: int, done: int = 0, stream=sys.stderr, width: int = 24):
        self.total, self.done, self.stream, self.width = total, done, stream, width
        self.start_done, self.start = done, time.perf_counter()
        self.tty = getattr(stream, "isatty", lambda: False)()
        self.show()

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * self.width) + "." * (self.width - int(frac * self.width))
        elapsed = time.perf_counter() - self.start
        new = self.done - self.start_done
        rate = new / elapsed if elapsed > 0 and new else 0.0
        eta = _duration((self.total - self.done) / rate) if rate else "?"
        return (f"phasescan [{bar}] {self.done}/{self.total} models {frac:4.0%}  "
                f"{rate:.3g} models/s  elapsed {_duration(elapsed)}  ETA {eta}")

    def show(self):
        if self.tty:
            self.stream.write("\r" + self.line())
        else:  # a log file: one line per update, no carriage returns
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def update(self, n: int):
        self.done += n
        self.show()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
