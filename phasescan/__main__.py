"""`python -m phasescan [overrides]`: run a sweep (Hydra app; config in conf/)."""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from . import app
from .core.config import ConfigError

log = logging.getLogger("phasescan")


def fail(error: ConfigError) -> None:
    print("phasescan: configuration error" + ("s:" if len(error.problems) > 1 else ":"),
          file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    sys.exit(2)


def hydra_dir(cfg: dict) -> Path | None:
    """The folder Hydra chose for this job, if any (app.results_dir decides). In a multirun the
    multirun's folder (hydra.sweep.dir: one for all its jobs, so the shards of a sweep land
    together; a job that is not a shard gets its own subfolder); else hydra.run.dir when set on
    the command line (the folder Hydra creates is the one written)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .core import shard

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # Several jobs may share one GPU (submitit_local, or tasks packed on a node): no job
        # may grab most of its memory up front. The user's own setting wins.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        sharded = shard.shard_options(cfg["sweep"])[1] > 1
        return Path(hydra_cfg.sweep.dir) if sharded else Path(hydra_cfg.runtime.output_dir)
    if Path(hydra_cfg.run.dir) != Path("."):  # conf/config.yaml's default is "."
        return Path(hydra_cfg.run.dir)
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    app.setup_logging()
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    app.start_backend(cfg_dict)
    out_dir = None  # known once results_dir has run; Ctrl-C may come before
    try:
        START_UP.raise_if_fired()
        out_dir = SECOND_SIGNAL.out_dir = app.results_dir(cfg_dict, hydra_dir(cfg_dict))
        frame, out_dir = app.execute(cfg_dict, out_dir, command=command_line(),
                                     overrides=list(HydraConfig.get().overrides.task),
                                     cfg_yaml=OmegaConf.to_yaml(cfg, resolve=True))
    except ConfigError as error:
        fail(error)
    except KeyboardInterrupt as stop:
        SECOND_SIGNAL.report(interrupted_line(out_dir, str(stop)))
        if SECOND_SIGNAL.count >= 2:  # a device program may still run: no clean-up that waits on it
            os._exit(130)
        sys.exit(130)
    except OSError as error:  # a read-only folder, a full disk: one line, finished chunks kept
        print(f"phasescan: cannot write {error.filename or out_dir}: {error.strerror or error}; "
              f"finished chunks are kept in {out_dir}. Free space or choose another out_dir, "
              f"then resume with: {resume_command(out_dir)}", file=sys.stderr)
        sys.exit(1)
    if frame is None:  # dry_run=true: the plan was all
        return
    from .analysis import table
    print(table.format_table(frame))
    if table.has_phases(frame):
        print(table.format_table(frame, label="learning_phase"))
    if cfg.plot and cfg.sweep.num_shards > 1:
        log.info("figures: drawn for the whole sweep by `python -m phasescan.merge` once every "
                 "shard is done")
    elif cfg.plot:
        draw_figures(out_dir)


def program() -> str:
    return "phasescan" if Path(sys.argv[0]).name == "phasescan" else "python -m phasescan"


def command_line() -> str:
    """This command as typed (quoted for a shell)."""
    return " ".join([program(), *map(shell_word, sys.argv[1:])])


def shell_word(arg: str) -> str:
    """One argument as a shell reads it back, the way people type it: bare when it can be, in
    double quotes when it holds single ones (Hydra's `key='linspace(0,1,5)'`), else shlex's."""
    quoted = shlex.quote(arg)
    if quoted != arg and "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return quoted


def interrupted_line(out_dir: Path | None, stop: str = "") -> str:
    """What an interrupted sweep prints last: what is kept and the command that resumes it."""
    if out_dir is None or not (Path(out_dir) / "manifest.json").exists():
        return f"phasescan: interrupted before anything was written. Run it again: {resume_command(None)}"
    kept = f"{stop}; finished chunks are kept" if stop else "finished chunks are kept"
    return f"phasescan: interrupted: {kept} in {out_dir}. Resume with: {resume_command(out_dir)}"


class SecondSignal:
    """The second Ctrl-C (or SIGTERM) ends the process at once, whatever it is doing.

    The first asks for a clean stop (sweep.StopRequest: after the current segment, its state
    saved) or raises KeyboardInterrupt; either way the main thread prints the resume line and
    exits. But a main thread waiting on a device program cannot be interrupted (XLA's wait is
    not Python's), nor can sys.exit finish while one runs: JAX's exit handlers wait for it. So
    a thread of its own counts the signals, told of each by the C-level handler through
    signal.set_wakeup_fd (written even while the main thread is blocked), and at the second
    prints the resume line (once, whichever thread gets there first) and calls os._exit(130):
    only the unsaved part of the current chunk is lost, as with kill -9, which every write of
    the sweep survives."""

    def __init__(self):
        self.count, self.out_dir = 0, None  # out_dir: for the resume line, once known
        self._said = threading.Lock()

    def __reduce__(self):
        # A multirun's launcher (submitit) pickles `main`, and with it this module's globals
        # when it runs as __main__: a job gets a fresh one, not listening (its launcher's).
        return SecondSignal, ()

    def install(self) -> None:
        """From the main thread, before anything runs (the Python-level handlers of SIGINT
        and SIGTERM stay what they are: this only listens)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only; whoever runs us there handles them
        receive, send = socket.socketpair()
        send.setblocking(False)  # set_wakeup_fd's requirement
        signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
        self._sockets = receive, send  # kept open for the process's life
        threading.Thread(target=self._listen, args=(receive,), name="phasescan-second-signal",
                         daemon=True).start()

    def _listen(self, receive: socket.socket) -> None:
        stops = {int(signal.SIGINT), int(signal.SIGTERM)}
        while True:
            data = receive.recv(64)
            if not data:
                return
            self.count += sum(number in stops for number in data)
            if self.count >= 2:
                # Straight to the file descriptor: no lock of sys.stderr's, which the main
                # thread might hold, is waited for.
                self.report(interrupted_line(self.out_dir), lambda text: os.write(2, text.encode()))
                os._exit(130)

    def report(self, line: str, write=None) -> None:
        """Print the line on stderr unless the other thread has printed it."""
        if self._said.acquire(blocking=False):
            (write or (lambda text: print(text, end="", file=sys.stderr, flush=True)))(line + "\n")


SECOND_SIGNAL = SecondSignal()


def resume_command(out_dir: Path | None) -> str:
    """This command again, writing to the same folder (out_dir made explicit)."""
    from .overrides import quote_value

    args = [a for a in sys.argv[1:] if not a.startswith("out_dir=")]
    if out_dir is not None:  # quoted for Hydra's grammar (spaces, accents), then for the shell
        args.append(f"out_dir={quote_value(str(out_dir))}")
    return " ".join([program(), *map(shell_word, args)])


def draw_figures(out_dir: Path) -> None:
    try:
        from .plots import draw  # noqa: F401  (matplotlib's extensions loaded before a signal may raise)
        START_UP.raises = True
        START_UP.raise_if_fired()
        drawn = app.draw_figures(out_dir)
    except KeyboardInterrupt:
        log.error("interrupted while drawing the figures; the results are complete in %s. Draw "
                  "them with: python -m phasescan.plot %s", out_dir, out_dir)
        sys.exit(130)
    if not drawn:
        sys.exit(1)


class StartUpSignal:
    """Ctrl-C and SIGTERM (a scheduler's stop) outside the sweep's own handler
    (sweep.stop_on_signals): remembered (`fired`), raised as KeyboardInterrupt only where that
    is safe. Python's own SIGINT handler raises at once, wherever the main thread is, and two
    places a start-up signal landed in lost it: an extension module being loaded (the
    process died of SIGSEGV) and JAX's garbage-collection callback, which ignores the exception
    (the sweep then trained on as if no signal had come). So the start-up asks at its safe
    points (`raise_if_fired`), stop_on_signals honours a signal that came before it, and while
    the figures are drawn (their imports done) a signal raises at once."""

    def __init__(self):
        self.fired, self.raises = None, False

    def __call__(self, signum, frame):
        self.fired = signal.Signals(signum).name
        if self.raises:
            raise KeyboardInterrupt

    def raise_if_fired(self) -> None:
        if self.fired is not None:
            raise KeyboardInterrupt


START_UP = StartUpSignal()


def cli() -> None:
    """The `phasescan` command (and `python -m phasescan`)."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, START_UP)
    SECOND_SIGNAL.install()
    if "--version" in sys.argv[1:]:  # Hydra's own flag would print Hydra's version
        print(version_line())
        return
    completion = any(a in ("--hydra-help", "-sc", "--shell-completion") or a.startswith("--shell-completion=")
                     for a in sys.argv[1:])
    if completion and shutil.which("phasescan"):
        # Hydra names the command to complete after argv[0]: under `python -m` that is the path of
        # __main__.py, which cannot run as a script; the installed command can.
        sys.argv[0] = "phasescan"
    try:
        from .overrides import check

        sys.argv[1:], problems = check(sys.argv[1:])  # unknown keys/options: reported like the rest
        if problems:
            fail(ConfigError(problems))
        START_UP.raise_if_fired()
        main()
    except KeyboardInterrupt:  # before Hydra started: nothing was written
        SECOND_SIGNAL.report(interrupted_line(None))
        sys.exit(130)


def version_line() -> str:
    from importlib.metadata import version

    from .core.version import __version__
    return f"phasescan {__version__} (hydra-core {version('hydra-core')}, jax {version('jax')})"


if __name__ == "__main__":
    cli()
