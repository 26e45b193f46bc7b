"""phasescan as a researcher meets it: a package that installs (wheel), a Hydra app that lets
Hydra's flags through, refuses overrides that change nothing, records how each folder was made,
and a Python API that writes the same folder as the command line."""
import shlex
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY, run_cli

import phasescan
from phasescan.overrides import no_effect
from phasescan.core.config import compose


def test_hydra_flags_pass_through():
    completion = run_cli("-sc", "install=bash")
    assert "hydra_bash_completion" in completion.stdout
    helped = run_cli("--help")
    assert helped.stdout.startswith("phasescan: map the algorithmic phase space")
    assert "powered by Hydra" not in helped.stdout and "demo, fixed_width" in helped.stdout
    assert run_cli("--version").stdout.startswith(f"phasescan {phasescan.__version__} ")
    shown = run_cli("--cfg", "job", "-cn", "config", "task.p=13")  # flag values are not overrides
    assert yaml.safe_load(shown.stdout)["task"]["p"] == 13


@pytest.mark.parametrize("args, refused", [
    (["model.attn_rate=0"], "model.attn_rate=0: has no effect: the sweep varies attn_rate"),
    (["model=linear_b"], "sweep.axes.attn_rate=[0.0, 0.25, 0.5, 0.75, 1.0] from sweep=demo: has no "
                         "effect: model.kind=linear_b does not read attn_rate"),
    (["sweep=variants", "model.kind=linear_a", "sweep.axes.attn_rate=[0,1]", "sweep.variants=null"],
     "sweep.axes.attn_rate=[0,1]: has no effect"),
])
def test_overrides_without_effect_are_refused(args, refused):
    problems, _ = no_effect(args, compose(*args))
    assert any(p.startswith(refused) for p in problems), problems


def test_overrides_shadowed_by_the_sweep_warn():
    args = ["model=linear_b", "sweep.axes.attn_rate=null"]
    problems, warnings = no_effect(args, compose(*args))
    assert problems == [] and warnings == [
        "model=linear_b sets model.d_model=256, but sweep=demo sets 64, which is used; add "
        "model.d_model=256 to keep it"]
    kept = args + ["model.d_model=256"]
    assert no_effect(kept, compose(*kept)) == ([], [])
    assert no_effect([], compose()) == ([], [])  # the defaults say nothing


def test_multirun_over_a_swept_field_is_refused_before_training(tmp_path):
    proc = run_cli("-m", "model.attn_rate=0,1", *TINY, f"hydra.sweep.dir={tmp_path}/m", check=False)
    assert proc.returncode == 2 and "model.attn_rate=0: has no effect" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.rglob("runs.parquet"))


def test_group_option_refused_and_warned_from_the_command_line(tmp_path):
    refused = run_cli("model=linear_b", f"out_dir={tmp_path}/a", check=False)
    assert refused.returncode == 2 and "model.kind=linear_b does not read attn_rate" in refused.stderr
    warned = run_cli("model=linear_b", "sweep.axes.attn_rate=null", "task.p=11", "train.steps=20",
                     "sweep.seeds=1", "plot=false", f"out_dir={tmp_path}/b")
    assert "warning: model=linear_b sets model.d_model=256, but sweep=demo sets 64" in warned.stderr


def test_hydra_run_dir_is_the_output_folder_with_its_record(tmp_path):
    out = tmp_path / "here"
    run_cli(*TINY, f"hydra.run.dir={out}")
    assert (out / "runs.parquet").is_file() and not (ROOT / "results" / "custom").exists()
    run_cli(*TINY, f"hydra.run.dir={out}")  # a resume: recorded too
    entries = yaml.safe_load((out / "invocations.yaml").read_text())
    assert len(entries) == 2 and entries[0]["overrides"][:len(TINY)] == TINY
    assert entries[1]["command"].startswith("python -m phasescan task.p=11")
    log = (out / "phasescan.log").read_text()
    assert log.count("4 runs ->") == 2 and "phase table:" in log


def test_python_api_writes_the_clis_folder(tmp_path):
    cli_dir, api_dir = tmp_path / "cli", tmp_path / "api"
    run_cli(*TINY, "plot=true", f"out_dir={cli_dir}")
    frame = phasescan.run([*TINY, "plot=true"], out_dir=api_dir)
    assert frame.attrs["out_dir"] == str(api_dir)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True),
                                  phasescan.load(cli_dir).reset_index(drop=True))
    for name in ("config.yaml", "manifest.json", "invocations.yaml", "phasescan.log"):
        assert (api_dir / name).stat().st_size > 0, name
    assert yaml.safe_load((api_dir / "config.yaml").read_text()) == \
        yaml.safe_load((cli_dir / "config.yaml").read_text()) | {"out_dir": str(api_dir)}
    assert sorted(p.name for p in (api_dir / "figures").iterdir()) == \
        sorted(p.name for p in (cli_dir / "figures").iterdir())
    figures = phasescan.figures(api_dir)
    assert "phase_diagram" in figures and all(hasattr(f, "savefig") for f in figures.values())

    # a config mapping, merged onto the defaults; the same folder resumes (nothing retrained)
    cfg = compose(*TINY)
    again = phasescan.run({"task": cfg["task"], "model": cfg["model"], "train": cfg["train"],
                           "sweep": cfg["sweep"], "plot": False, "metrics": cfg["metrics"]},
                          out_dir=api_dir)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), frame.reset_index(drop=True))


def test_python_api_refuses_bad_config_with_the_key_named(tmp_path):
    with pytest.raises(phasescan.ConfigError, match=r"task.pp=3: unknown key in task \(allowed: p, "):
        phasescan.run(["task.pp=3"], out_dir=tmp_path / "a")
    with pytest.raises(phasescan.ConfigError, match=r"task.pp: unknown key \(allowed: p, "):
        phasescan.run({"task": {"pp": 3}}, out_dir=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    """`pip install .` (not -e): the wheel carries the configs; `phasescan` runs from anywhere."""
    def run(*cmd, **kw):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stderr[-3000:]}"
        return proc

    # an isolated build, as `pip install .` does (its setuptools from the package index)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheel"), str(ROOT))
    wheel, = (tmp_path / "wheel").glob("phasescan-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    # The dependencies: this environment's site-packages as plain path entries (a .pth line adds a
    # folder; the .pth files inside it, such as an editable install's finder, are not run).
    purelib = run(str(venv / "bin" / "python"), "-c",
                  "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(purelib, "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel))
    where = run(str(venv / "bin" / "python"), "-c", "import phasescan; print(phasescan.__file__)",
                cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the repository
    assert run(str(venv / "bin" / "phasescan"), "--help", cwd=tmp_path).stdout.startswith("phasescan:")
    run(str(venv / "bin" / "phasescan"), *TINY, "out_dir=out", cwd=tmp_path)
    assert len(pd.read_parquet(tmp_path / "out" / "runs.parquet")) == 4


def test_a_figure_failure_keeps_the_results(tmp_path, monkeypatch):
    from phasescan.plots import draw

    def broken(*args, **kwargs):
        raise RuntimeError("no display")
    monkeypatch.setattr(draw, "draw", broken)
    frame = phasescan.run([*TINY, "plot=true"], out_dir=tmp_path / "out")
    assert len(frame) == 4 and (tmp_path / "out" / "runs.parquet").is_file()
    assert ("drawing the figures failed (RuntimeError: no display); results are kept, retry with "
            f"`python -m phasescan.plot {tmp_path / 'out'}`") in (tmp_path / "out" / "phasescan.log").read_text()


def test_the_plan_is_said_before_training_and_dry_run_stops_there(tmp_path, caplog, monkeypatch):
    """dry_run=true: the plan's lines, nothing trained or written; a sweep records its rate
    beside the compile cache, and the next plan estimates its time from it."""
    from phasescan.runner import summary
    monkeypatch.setattr(summary, "MIN_RATE_S", 0.0)  # this tiny sweep's rate is recorded too
    caplog.set_level("INFO", "phasescan")
    cache = tmp_path / "cache" / "jax"
    args = [*TINY, f"compile_cache={cache}"]
    assert phasescan.run([*args, "dry_run=true"], out_dir=tmp_path / "dry") is None
    assert not (tmp_path / "dry").exists() and not (tmp_path / "cache").exists()
    said = caplog.text
    assert "plan: 4 runs, 240 model-steps to train on 1 x cpu" in said
    assert "bucket p=11 d_model=16 steps=60: 4 models in 1 chunk(s) of 4, about" in said
    assert "time: not known yet on this device" in said and "dry_run=true: nothing trained" in said
    phasescan.run(args, out_dir=tmp_path / "wet")
    assert (tmp_path / "cache" / "rates.json").is_file()
    caplog.clear()
    phasescan.run([*args, "dry_run=true", "train.steps=600"], out_dir=tmp_path / "dry")
    assert "time: about" in caplog.text and "of training (the last sweep's rate on this device)" in caplog.text
    caplog.clear()
    phasescan.run([*args, "dry_run=true"], out_dir=tmp_path / "wet")  # a finished folder
    assert "plan: 4 runs (4 done already), 0 model-steps" in caplog.text


def test_evaluate_measures_many_files_and_a_folder_into_one_table(tmp_path, capsys):
    """A results folder's weights/ evaluated at once: one JSON line per model and one table
    whose labels and metrics are the sweep's own rows."""
    from phasescan import evaluate
    frame = phasescan.run([*TINY, "save_weights=all"], out_dir=tmp_path / "out")
    table = tmp_path / "models.parquet"
    assert evaluate.main([str(tmp_path / "out"), "--table", str(table), "metrics.grad_sym_triples=50"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith('{"file": ') for line in lines)
    got = pd.read_parquet(table)
    got["run_id"] = got["file"].map(lambda f: Path(f).stem)
    both = got.merge(frame, on="run_id", suffixes=("", "_sweep"))
    assert len(both) == 4 and list(both["algorithm"]) == list(both["algorithm_sweep"].astype(str))
    assert (both["grad_sym"] - both["grad_sym_sweep"]).abs().max() < 1e-5
    one = sorted((tmp_path / "out" / "weights").glob("*.npz"))[:2]
    assert evaluate.main([str(p) for p in one] + ["metrics.grad_sym_triples=20"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_load_takes_several_folders_a_glob_or_a_folder_of_sweeps(tmp_path):
    first = phasescan.run(TINY, out_dir=tmp_path / "sweeps" / "lr-a")
    second = phasescan.run([*TINY, "train.lr=0.003"], out_dir=tmp_path / "sweeps" / "lr-b")
    assert "folder" not in phasescan.load(tmp_path / "sweeps" / "lr-a")  # one folder: its table
    for tables in (phasescan.load(tmp_path / "sweeps"), phasescan.load(str(tmp_path / "sweeps" / "lr-*")),
                   phasescan.load(tmp_path / "sweeps" / "lr-a", tmp_path / "sweeps" / "lr-b")):
        assert list(tables.columns[:2]) == ["folder", "overrides"] and len(tables) == 8
        assert list(tables["run_id"]) == list(first["run_id"]) + list(second["run_id"])
        b = tables[tables["folder"] == str(tmp_path / "sweeps" / "lr-b")]
        assert (b["lr"] == 0.003).all() and "train.lr=0.003" in b["overrides"].iloc[0]
    with pytest.raises(FileNotFoundError, match="matches no phasescan results"):
        phasescan.load(str(tmp_path / "nothing-*"))


@pytest.mark.parametrize("arg, typed", [
    ("sweep.axes.attn_rate='linspace(0,1,5)'", "\"sweep.axes.attn_rate='linspace(0,1,5)'\""),
    ("task.p=23", "task.p=23"), ("out_dir=a b", "'out_dir=a b'"), ("x='$HOME'", None)])
def test_the_recorded_command_reads_back_as_typed(arg, typed):
    """invocations.yaml and the resume line quote an argument the way it is typed, and a shell
    splits it back into the same argument."""
    import shlex

    from phasescan.__main__ import shell_word
    assert shlex.split(shell_word(arg)) == [arg]
    if typed:
        assert shell_word(arg) == typed


def help_examples(module: str) -> list[list[str]]:
    """The example commands a --help prints (lines that start with the command), as words."""
    text = run_help(module)
    starts = ("phasescan ", "python -m phasescan")
    return [shlex.split(raw.strip().split("   ")[0]) for raw in text.splitlines()
            if raw.startswith("  ") and raw.strip().startswith(starts)]


def run_help(module: str) -> str:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return proc.stdout


def test_every_help_example_runs(tmp_path, monkeypatch):
    """What each command's --help shows runs as shown: the sweep's examples to their plan
    (dry_run=true), the sub-commands' on copies of the committed folders they name."""
    from phasescan import evaluate, plot, report
    keep = {"0765303a5537.npz", "f7670aa6062f.npz"}  # the example's model and one more of its shape

    def left_out(folder, names):  # the committed figures stay as they are; two models are enough
        return [n for n in names if n in ("figures", "chunks", "report.html")
                or (Path(folder).name == "weights" and n not in keep)]
    for name in ("width_vs_attn", "learning_phases"):  # copies of the committed folders
        shutil.copytree(ROOT / "results" / "cpu" / name, tmp_path / "results" / "cpu" / name,
                        ignore=left_out)
    monkeypatch.chdir(tmp_path)
    sweeps = [w for w in help_examples("phasescan") if w[0] == "phasescan"]
    assert len(sweeps) >= 5
    for words in sweeps:
        args = words[1:]
        if args and args[0].startswith("--"):  # --cfg job, --version: Hydra's and ours, tested above
            continue
        assert phasescan.run([*args, "dry_run=true"], out_dir=None if any(
            a.startswith("out_dir=") for a in args) else tmp_path / "out") is None, words
    mains = {"phasescan.plot": plot.main, "phasescan.report": report.main,
             "phasescan.evaluate": evaluate.main}
    ran = []
    for module, main in mains.items():
        for words in help_examples(module):
            if words[:3] == ["python", "-m", module]:
                assert main([w.replace("/tmp/", f"{tmp_path}/") for w in words[3:]]) == 0, words
                ran.append(module)
    assert sorted(set(ran)) == sorted(mains)
