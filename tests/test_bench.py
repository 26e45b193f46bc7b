"""The benchmark tools and train.precision: behaviour only (no timed assertions).

bench/'s entry points (docs/benchmarks.md, "Entry points"): bench.throughput, bench.cpu_vs_torch
(and its `torch` sub-command), bench/gpu_session.sh and bench.profile's sub-commands. Each is
checked here at its argument parsing, and where that is cheap at its smallest run."""
import importlib.util
import json
import subprocess
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TINY, compose, run_cli

from bench import cpu_vs_torch, profile, throughput
from phasescan.engine import train
from phasescan.core import grid
from phasescan.core.config import ConfigError


def xla_flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    return (analysis[0] if isinstance(analysis, list) else analysis)["flops"]


@pytest.mark.parametrize("n_layers", [1, 2])
def test_flop_count_agrees_with_xla_cost_analysis(n_layers):
    # flops_per_step counts the direct forward, the authors' computation (model.forward=factored
    # does less of it: bench.forwards measures both)
    cfg = compose("task.p=11", "model.d_model=16", f"model.n_layers={n_layers}", "model.forward=direct",
                  "metrics.grad_sym_triples=50")
    run = grid.expand(cfg)[0]
    spec = train.Spec.from_run(run)
    fns = throughput.sequential_programs(spec, cfg["metrics"])
    key, hp = throughput.one_model(run)
    params, opt_state, mask = jax.jit(fns["init"])(key, hp)
    step = jax.jit(fns["step"]).lower(params, opt_state, hp, mask).compile()
    counted = throughput.flops_per_step(spec)["step"]
    # XLA also counts the elementwise work (softmax, AdamW), which the shape count leaves out.
    assert counted <= xla_flops(step) <= 1.15 * counted


def test_sequential_baseline_is_the_engines_computation():
    out = throughput.main(["--p", "11", "--d-model", "16", "--steps", "20", "--models", "3",
                           "--grad-sym-triples", "50", "--peak-n", "64"])
    engine, sequential = out["engine"], out["sequential"]
    assert len(engine["train_loss"]) == len(sequential["train_loss"]) == 3
    for name in ("train_loss", "grad_sym", "dist_irr"):
        np.testing.assert_allclose(sequential[name], engine[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert out["peak"]["flops"] > 0 and out["ratio"] > 0


def test_bad_precision_is_a_short_error_naming_the_allowed_values():
    with pytest.raises(ConfigError, match="train.precision='fp16': must be one of float32, tf32, bfloat16"):
        grid.expand(compose(*TINY, "train.precision=fp16"))


def test_precisions_train_the_same_models_and_fill_the_compile_cache(tmp_path):
    cache = tmp_path / "cache"
    run_cli(*TINY, "sweep.seeds=1", "sweep.axes.precision=[float32,tf32,bfloat16]",
            f"out_dir={tmp_path / 'out'}", f"compile_cache={cache}")
    runs = pd.read_parquet(tmp_path / "out" / "runs.parquet")
    assert sorted(runs["precision"].unique()) == ["bfloat16", "float32", "tf32"]
    by = runs.set_index(["precision", "attn_rate"])["train_loss"]
    for attn in runs["attn_rate"].unique():
        # bf16 rounds every activation (8-bit mantissa): close to float32, not equal to it
        assert np.isfinite(by["bfloat16", attn])
        assert abs(by["bfloat16", attn] - by["float32", attn]) < 0.05 * by["float32", attn]
        if jax.default_backend() == "cpu":  # no TF32 on a CPU: the default matmul is float32
            assert by["tf32", attn] == by["float32", attn]
    assert any(cache.iterdir()), "the persistent compilation cache wrote nothing"


def test_throughput_refuses_a_bad_override_with_a_short_error(capsys):
    with pytest.raises(SystemExit) as stop:
        throughput.main(["--override", "model.act=nope", "--skip-torch"])
    assert stop.value.code == 2 and capsys.readouterr().err.startswith("bench.throughput: ")


# bench.profile: one command, a sub-command per question


def test_profile_lists_its_sub_commands_and_refuses_an_unknown_one(capsys):
    with pytest.raises(SystemExit) as stop:
        profile.main(["--help"])
    assert stop.value.code == 0
    listing = capsys.readouterr().out
    assert all(f"bench.profile {name}" in listing for name in profile.COMMANDS)
    for argv, message in (([], "usage: python -m bench.profile"), (["profile_step"], "unknown sub-command")):
        with pytest.raises(SystemExit) as stop:
            profile.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["process", "task.p=23", "sweep.axes.d_model=[32]", "--not-a-flag-of-ours"],
     {"overrides": ["task.p=23", "sweep.axes.d_model=[32]", "--not-a-flag-of-ours"]}),
    (["step"], {"p": 59, "d_model": 128, "n_layers": 1, "precision": "float32", "models": 16, "steps": 50}),
    (["step", "--p", "11", "--precision", "bfloat16", "--models", "2"], {"p": 11, "precision": "bfloat16"}),
    (["batched-dot", "--models", "3"], {"p": 59, "d_model": 128, "models": 3}),
    (["segments", "sweep=demo", "--repeats", "1", "train.steps=10"],
     {"overrides": ["sweep=demo", "train.steps=10"], "repeats": 1, "segments": "0,500,100"}),
    (["logging", "sweep=demo", "--time"], {"overrides": ["sweep=demo"], "time": True}),
    (["compile-cache"], {"overrides": []}),
    (["precision", "results/precision"], {"results_dir": "results/precision"}),
])
def test_profile_sub_commands_parse_their_arguments(argv, expected):
    name, args = profile.parse(argv)
    assert name == argv[0]
    assert {k: getattr(args, k) for k in expected} == expected


@pytest.mark.parametrize("argv", [["step", "--precision", "fp16"], ["precision"], ["batched-dot", "x=1"]])
def test_profile_refuses_bad_arguments(argv):
    with pytest.raises(SystemExit) as stop:
        profile.parse(argv)
    assert stop.value.code == 2


def test_profile_batched_dot_smallest_run(capsys):
    out = profile.main(["batched-dot", "--p", "5", "--d-model", "8", "--models", "2"])
    assert set(out) == {"forward", "weight gradient"}
    assert all(t > 0 for pair in out.values() for t in pair)
    assert "N=25 d=8 models=2" in capsys.readouterr().out


def test_profile_segments_trains_each_segment_length_alternating(monkeypatch, capsys):
    """The plumbing of `segments` and the shared alternating_best, with the chunk faked."""
    from phasescan.engine import chunk
    calls = []
    monkeypatch.setattr(chunk, "compile_chunk", lambda spec, n, metric_opts, segment: f"seg{segment}")
    monkeypatch.setattr(chunk, "run_chunk", lambda program, runs, n: calls.append((program, len(runs))))
    tiny = [o for o in TINY if not o.startswith("train.steps=")]
    best = profile.main(["segments", "--repeats", "2", "--segments", "0,10", *tiny, "train.steps=20"])
    n_runs = 4  # TINY: 2 attention rates x 2 seeds, one bucket
    assert calls == [("seg20", n_runs), ("seg10", n_runs)] * 2
    assert set(best) == {20, 10} and all(len(t) == 2 for t in best.values())
    assert "segment     10 steps (  2 calls)" in capsys.readouterr().out


def test_profile_compile_cache_runs_three_processes(monkeypatch, tmp_path, capsys):
    """No cache, a cold cache, the same cache warm: each a phasescan process of its own (faked)."""
    seen = []

    def fake_timed(command, cwd, env=None):
        seen.append(command)
        options = dict(a.split("=", 1) for a in command if "=" in a)
        out_dir = Path(options["out_dir"])
        out_dir.mkdir(parents=True)
        (out_dir / "manifest.json").write_text(json.dumps({"compile_s": {"a": 1.0, "b": 0.5}}))
        if options["compile_cache"] != "null":
            Path(options["compile_cache"]).mkdir(exist_ok=True)
            (Path(options["compile_cache"]) / f"entry-{len(seen)}").touch()
        return {"wall": 0.0, "cpu": 0.0}
    monkeypatch.setattr(cpu_vs_torch, "timed", fake_timed)
    times = profile.main(["compile-cache", "sweep=demo", "train.steps=5"])
    assert times == {"no cache": 1.5, "cold cache": 1.5, "warm cache": 1.5}
    assert [c[1:5] for c in seen] == [["-m", "phasescan", "sweep=demo", "train.steps=5"]] * 3
    assert seen[0][5] == "compile_cache=null" and seen[1][5] == seen[2][5] != "compile_cache=null"
    assert "cache entries written: 2" in capsys.readouterr().out


def test_profile_precision_pairs_each_precision_with_float32(tmp_path, capsys):
    rows = [{"precision": prec, "attn_rate": rate, "seed": seed, "algorithm": "pizza" if rate == 0 else "clock",
             "grad_sym": 0.9 - 0.5 * rate + (0.01 * seed if prec == "bfloat16" else 0.0),
             "dist_irr": 0.5 + 0.3 * rate, "test_acc": 1.0}
            for prec in ("float32", "tf32", "bfloat16") for rate in (0.0, 1.0) for seed in (0, 1)]
    pd.DataFrame(rows).to_parquet(tmp_path / "runs.parquet")
    tables = profile.main(["precision", str(tmp_path / "runs.parquet")])
    paired = tables["paired_abs_diff_vs_float32"]
    assert paired.loc[("tf32", 1.0), ("grad_sym", "max")] == 0.0
    assert paired.loc[("bfloat16", 0.0), ("grad_sym", "max")] == pytest.approx(0.01)
    assert tables["labels"].loc[("float32", 0.0), "pizza"] == 2
    assert "paired_abs_diff_vs_float32" in capsys.readouterr().out


# bench.cpu_vs_torch: whole processes, and its `torch` sub-command (the PyTorch side alone)

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_cpu_vs_torch_parses_both_sides():
    args = cpu_vs_torch.compare_parser().parse_args(["--runs", "5", "--cpu-tuned", "--torch-arg=--threads=1"])
    assert (args.runs, args.cpu_tuned, args.torch_arg) == (5, True, ["--threads=1"])
    args = cpu_vs_torch.torch_parser().parse_args(["--p", "59", "--device", "cuda"])
    assert (args.p, args.d_model, args.steps, args.device) == (59, 32, 1000, "cuda")
    # the child process it times is its own torch sub-command, with the case's arguments
    command = cpu_vs_torch.torch_command(Path("x.json"), ["--threads=1"])
    assert command[1:4] == ["-m", "bench.cpu_vs_torch", "torch"] and command[-1] == "--threads=1"
    assert cpu_vs_torch.torch_parser().parse_args(command[4:]).attn_rates == 8


@pytest.mark.skipif(HAS_TORCH, reason="torch is installed")
@pytest.mark.parametrize("argv", [["--runs", "1"], ["torch", "--steps", "1"]])
def test_cpu_vs_torch_without_torch_is_a_short_error(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cpu_vs_torch.main(argv)
    assert stop.value.code == 2 and 'pip install -e ".[bench]"' in capsys.readouterr().err


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_cpu_vs_torch_torch_side_smallest_run(tmp_path):
    rows = cpu_vs_torch.main(["torch", "--p", "5", "--d-model", "8", "--steps", "3", "--attn-rates", "2",
                              "--seeds", "1", "--quiet", "--json", str(tmp_path / "rows.json")])
    assert [r["attn_rate"] for r in rows] == [0.0, 1.0]
    assert json.loads((tmp_path / "rows.json").read_text())[0]["algorithm"] == rows[0]["algorithm"]


def test_cpu_vs_torch_table_times_each_way_whole_and_in_process(monkeypatch, tmp_path, capsys):
    """Each way's wall, CPU and in-process seconds (phasescan: manifest wall_s less compile_s; the
    PyTorch ways: their rows' seconds summed), ratios round by round, one Markdown row per way."""
    wall = {"phasescan": [10.0, 20.0], "torch": [40.0, 100.0], "torch-ensemble": [30.0, 30.0]}

    def fake_timed(command, cwd, env=None):
        if "phasescan" in command[:3]:
            out_dir = Path(dict(a.split("=", 1) for a in command if "=" in a)["out_dir"])
            out_dir.mkdir(parents=True)
            (out_dir / "manifest.json").write_text(json.dumps({"wall_s": 8.0, "compile_s": {"a": 2.0}}))
            way = "phasescan"
        else:
            out = Path(command[command.index("--json") + 1])
            way = "torch-ensemble" if command[3] == "torch-ensemble" else "torch"
            out.write_text(json.dumps([{"seconds": 9.0}, {"seconds": 9.0 if way == "torch" else 3.0}]))
        return {"wall": wall[way].pop(0), "cpu": 1.0}
    monkeypatch.setattr(cpu_vs_torch, "timed", fake_timed)
    monkeypatch.setattr(cpu_vs_torch, "compare_models", lambda *a: None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(cpu_vs_torch, "case_flops", lambda ps_dir: 6e9)
    result = cpu_vs_torch.main(["--runs", "2", "--warmup", "0", "--no-peak", "--keep", str(tmp_path)])
    assert [t["inside"] for t in result["times"]["phasescan"]] == [6.0, 6.0]
    assert result["ratios"][("torch", "wall")] == [4.0, 5.0]
    assert result["ratios"][("torch-ensemble", "inside")] == [2.0, 2.0]
    rows = result["table"].splitlines()
    assert rows[2] == "| phasescan | 10.00 / 15.00 / 20.00 | 1.00 |  | 6.00 / 6.00 / 6.00 |  | 1.00 | not measured |"
    assert rows[3].startswith("| torch | 40.00 / 70.00 / 100.00 | 1.00 | 4.00 / 4.50 / 5.00 | 18.00 / 18.00 / 18.00 |")
    assert result["table"] in capsys.readouterr().out


# bench/gpu_session.sh


def test_gpu_session_script_parses_and_names_its_stages():
    script = ROOT / "bench" / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    proc = subprocess.run(["bash", str(script)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "calibrate | precision | paper | width | throughput" in proc.stderr
