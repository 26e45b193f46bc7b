"""The SLURM path run for real: sharded sweeps through Hydra's submitit launcher on a one-node
cluster (tests/slurm/cluster.sh up; .ci/run brings it up first). Without a cluster the `slurm`
tests skip, saying why; the memory refusal needs none (it happens before anything is submitted).

Time limits are SLURM's own: a job's SIGUSR2 (`--signal=USR2@signal_delay_s`, sent by slurmctld's
time-limit check, which runs every 30 s from its start, BOOT_TIME) and the requeue that submitit
asks for. SLURM holds a requeued job about 2 minutes (EligibleTime = the requeue + 121 s); the
tests release it at once (`scontrol update StartTime=now`) to spare CI that wait.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, compose, run_cli

from phasescan.runner.sweep import run_sweep

STATE = Path(os.environ.get("PHASESCAN_SLURM_DIR") or Path(os.environ.get("TMPDIR", "/tmp")) / "phasescan-slurm")
SLURM_CONF = os.environ.get("SLURM_CONF") or str(STATE / "etc" / "slurm.conf")
ENV = {**os.environ, "SLURM_CONF": SLURM_CONF}

# Tiny sweeps: 4 models in chunks of 2 (integer chunk_size: the shards train the one-process
# chunks, so the merged table is that process's bit for bit). LONG trains for ~10 s so that a
# time-limit signal lands mid-training.
SWEEP = ["task.p=11", "model.d_model=8", "sweep.seeds=2", "sweep.axes.attn_rate=[0.0,1.0]",
         "sweep.chunk_size=2", "plot=false", "metrics.grad_sym_triples=50"]
SHORT = [*SWEEP, "train.steps=2000"]
LONG = [*SWEEP, "train.steps=60000"]
SHARDS = ["sweep.num_shards=2", "sweep.shard=range(2)"]


def slurm(*args, check=True):
    return subprocess.run(list(args), env=ENV, capture_output=True, text=True, timeout=60, check=check).stdout


def cluster_problem() -> str | None:
    """Why the SLURM tests cannot run here (None: they can)."""
    for module in ("submitit", "hydra_plugins.hydra_submitit_launcher"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[slurm]')"
    if not shutil.which("sbatch"):
        return "no SLURM here (sbatch not found): tests/slurm/cluster.sh up brings up a one-node cluster"
    try:
        nodes = slurm("sinfo", "-h", "-N", "-o", "%T").split()
    except (subprocess.SubprocessError, OSError) as error:
        return f"no SLURM cluster answers (SLURM_CONF={SLURM_CONF}): {error}; tests/slurm/cluster.sh up starts one"
    if not any(state.startswith(("idle", "mix", "alloc")) for state in nodes):
        return f"no SLURM node is up (sinfo: {' '.join(nodes) or 'none'})"
    return None


PROBLEM = cluster_problem()


def needs_cluster(test):
    return pytest.mark.slurm(pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))(test))


def launch(sweep_dir: Path, name: str, *overrides: str) -> subprocess.Popen:
    """`python -m phasescan -m ...` into sweep_dir, its jobs named `name` (for squeue/sacct)."""
    return subprocess.Popen([sys.executable, "-m", "phasescan", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}",
                             f"hydra.launcher.name={name}"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def jobs(name: str) -> list[tuple[str, str, str]]:
    """(job id, state, reason) of the queued jobs named `name`, array tasks one by one."""
    lines = slurm("squeue", "-h", "-r", "-n", name, "-o", "%i|%T|%r").splitlines()
    return [tuple(line.split("|")) for line in lines]


def states(name: str) -> list[tuple[str, str]]:
    """(job id, state) of every run of the jobs named `name`, from accounting (sacct), a requeued
    job's earlier runs included."""
    lines = slurm("sacct", "-D", "-X", "-n", "-P", "--name", name, "-o", "JobID,State").splitlines()
    return [(job, state.split()[0]) for job, state in (line.split("|")[:2] for line in lines)]  # "CANCELLED by 0"


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "DEADLINE"}


def settled_states(name: str, seconds: float = 90) -> list[tuple[str, str]]:
    """states(name) once every job's last run has ended. slurmdbd records a run's end after the
    job's result is on disk, so sacct read at once may miss the last run (a requeued job then
    shows REQUEUED last). A run requeued after its job's result was written (a late time-limit
    signal) is released and waited for too."""
    deadline = time.monotonic() + seconds
    while True:
        seen = states(name)
        last = dict(seen)  # each job's last run
        if last and set(last.values()) <= FINAL:
            return seen
        assert time.monotonic() < deadline, f"sacct still shows {seen} after {seconds} s"
        release_requeued(name)
        time.sleep(0.5)


def release_requeued(name: str) -> None:
    """Start at once the jobs named `name` that SLURM holds after a requeue."""
    for job, state, reason in jobs(name):
        if state == "PENDING" and reason == "BeginTime":
            slurm("scontrol", "update", f"jobid={job}", "StartTime=now")


def wait(proc: subprocess.Popen, name: str, seconds: float, every=None) -> str:
    """proc's output once it ends; meanwhile a requeued job named `name` is released at once."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"still running after {seconds} s: {jobs(name)}"
        release_requeued(name)
        if every:
            every()
        time.sleep(0.5)
    return proc.stdout.read()


def merge(sweep_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phasescan.merge", str(sweep_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def job_log(sweep_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted((sweep_dir / ".submitit").glob("*/*_log.*")))


def before_next_tick(lead: float) -> None:
    """Sleep until `lead` seconds before slurmctld's next time-limit check (every 30 s from its
    BOOT_TIME), so that a job submitted now gets its signal at a known moment."""
    boot = re.search(r"BOOT_TIME\s*=\s*(\S+)", slurm("scontrol", "show", "config"))
    if boot is None:
        return
    phase = (time.time() - datetime.fromisoformat(boot.group(1)).timestamp() - 1) % 30
    time.sleep((30 - lead - phase) % 30)


@needs_cluster
def test_a_shard_cancelled_is_named_by_merge_and_the_same_command_finishes_it(tmp_path):
    """2 shards through hydra/launcher=submitit_slurm; shard 1 cancelled with scancel once it
    runs: merge names it and writes nothing; the same command again finishes it (shard 0 is
    done already), and the merged table is the one-process table bit for bit."""
    sweep_dir, name = tmp_path / "sweep", f"phasescan-cancel-{uuid.uuid4().hex[:6]}"
    command = [*SHORT, *SHARDS, "hydra/launcher=submitit_slurm"]
    with ThreadPoolExecutor(1) as pool:
        reference = pool.submit(run_sweep, compose(*SHORT), tmp_path / "one")
        proc = launch(sweep_dir, name, *command)
        cancelled = []

        def cancel_shard_1_once_it_runs():
            manifest = sweep_dir / "shard-1-of-2" / "manifest.json"
            for job, state, _ in jobs(name):
                if job.endswith("_1") and state == "RUNNING" and manifest.exists() and not cancelled:
                    slurm("scancel", job)
                    cancelled.append(job)
        out = wait(proc, name, 240, every=cancel_shard_1_once_it_runs)
        assert cancelled and proc.returncode != 0, out[-3000:]
        refused = merge(sweep_dir)
        assert refused.returncode != 0 and "shard 1 of 2" in refused.stderr, refused.stderr
        print(refused.stderr)  # what merge says of the cancelled shard (pytest -s shows it)
        assert not (sweep_dir / "runs.parquet").exists()
        assert dict(settled_states(name))[cancelled[0]] == "CANCELLED"
        again = launch(sweep_dir, name, *command)
        out = wait(again, name, 240)
        assert again.returncode == 0, out[-3000:]
        assert merge(sweep_dir).returncode == 0
        pd.testing.assert_frame_equal(pd.read_parquet(sweep_dir / "runs.parquet"), reference.result())
    assert {state for _, state in settled_states(name)} == {"CANCELLED", "COMPLETED"}


@needs_cluster
def test_a_shard_past_its_time_limit_is_requeued_and_finishes_as_if_uninterrupted(tmp_path):
    """A shard with a 1-minute limit gets SLURM's SIGUSR2 (signal_delay_s=50) mid-training:
    phasescan saves its state after the segment, submitit checkpoints and requeues the job, and
    the job resumes from that state. Its rows equal an uninterrupted run's; its manifest counts
    the resumes; sacct shows the requeued run and the completed one."""
    sweep_dir, name = tmp_path / "sweep", f"phasescan-timeout-{uuid.uuid4().hex[:6]}"
    one_shard = [*LONG, "sweep.num_shards=2", "sweep.shard=1"]
    with ThreadPoolExecutor(1) as pool:
        # Submitted 16 s before slurmctld's check: the job starts ~11 s before it, so it has
        # imported and compiled when that check sends SIGUSR2 (due 10 s after the start).
        before_next_tick(lead=16)
        proc = launch(sweep_dir, name, *one_shard, "hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1",
                      "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=50")
        reference = pool.submit(run_sweep, compose(*one_shard), tmp_path / "uninterrupted")
        out = wait(proc, name, 300)
        assert proc.returncode == 0, out[-3000:] + job_log(sweep_dir)[-3000:]
        shard = sweep_dir / "shard-1-of-2"
        pd.testing.assert_frame_equal(pd.read_parquet(shard / "runs.parquet"), reference.result())
    log = job_log(sweep_dir)
    said = [line for line in log.splitlines() if re.search(
        r"SIGUSR2|stopped at step|Requeued job|resuming \d+ model|Job completed", line)]
    print("\n".join(said))  # the requeue, as the job's logs tell it (pytest -s shows it)
    runs = [state for _, state in settled_states(name)]
    manifest = json.loads((shard / "manifest.json").read_text())  # after the last run
    assert manifest["resumes"] >= 1 and manifest["finished"]
    assert re.search(r"stopped at step \d+ of a chunk of 2 model\(s\); its state is saved; SIGUSR2 passed on", log)
    assert "Requeued job" in log and re.search(r"resuming 2 model\(s\) at step [1-9]\d*", log)
    assert runs.count("REQUEUED") == manifest["resumes"] and runs[-1] == "COMPLETED", runs


def test_a_shard_asking_for_less_memory_than_its_plan_is_refused_before_submission(tmp_path):
    """Chunks of 8 models at p 59, d 128 need ~1.3 GiB beside the process: dry_run says so, and
    slurm_cpu with mem_gb=1 refuses both shards in one message, submitting nothing (no cluster
    needed: nothing reaches sbatch)."""
    big = ["task.p=59", "model.d_model=128", "sweep.seeds=8", "sweep.axes.attn_rate=[0.0,1.0]", "sweep.chunk_size=8"]
    plan = run_cli(*big, "sweep.num_shards=2", "sweep.shard=0", "dry_run=true", f"out_dir={tmp_path / 'dry'}")
    assert "host memory: about 3 GiB on CPU devices" in plan.stderr
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("-m", *big, *SHARDS, "hydra/launcher=slurm_cpu", "hydra.launcher.mem_gb=1",
                   f"hydra.sweep.dir={sweep_dir}", check=False)
    assert proc.returncode == 2, proc.stderr
    for i in range(2):
        assert (f"hydra.launcher.mem_gb=1: shard {i} of 2 needs about 3 GiB (its largest chunk and the "
                "process; dry_run=true shows it): ask for hydra.launcher.mem_gb=3") in proc.stderr
    assert "Traceback" not in proc.stderr and not (sweep_dir / ".submitit").exists()
