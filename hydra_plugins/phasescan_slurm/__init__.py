"""phasescan's SLURM launcher: Hydra's submitit one, refusing before anything is submitted a
job that asks for less host memory than its plan needs (phasescan/conf/hydra/launcher/
slurm_cpu.yaml and slurm_gpu.yaml name it as their `_target_`). Hydra takes launchers only from
the hydra_plugins namespace, and imports every module there at start-up: nothing of phasescan is
imported until a launch.

On CPU the models' memory is host memory: each job's plan (its shard's chunks, as
summary.memory_need_gb measures them for `dry_run=true`) is made here from the job's own
overrides, with the memory it asks for as SLURM would give it (chunk_size=auto fits that), and
`hydra.launcher.mem_gb` below the need is one configuration error naming the shards. A job that
asks for GPUs keeps its models in GPU memory: not checked.
"""
from __future__ import annotations

import os

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf, open_dict


class SlurmLauncher(SubmititSlurmLauncher):
    def launch(self, job_overrides, initial_job_idx):
        from phasescan.__main__ import fail
        from phasescan.core.config import ConfigError

        try:
            problems = [problem for overrides in job_overrides
                        if (problem := self.memory_problem(list(overrides))) is not None]
        except ConfigError as error:  # a bad job config: said now, not by every job
            fail(ConfigError([*error.problems, "(each job planned as SLURM would run it, with "
                              f"hydra.launcher.mem_gb={self.params.get('mem_gb')} of memory)"]))
        if problems:
            fail(ConfigError(problems))
        return super().launch(job_overrides, initial_job_idx)

    def memory_problem(self, overrides: list[str]) -> str | None:
        """A line when the job's plan needs more host memory than hydra.launcher.mem_gb."""
        from phasescan.runner.summary import memory_need_gb
        from phasescan.runner.sweep import make_plan

        asked = self.params.get("mem_gb")
        if asked is None or self.params.get("gpus_per_node") or self.params.get("gpus_per_task"):
            return None  # no request (the partition's default), or models in GPU memory
        job = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(job):
            del job["hydra"]
        cfg = OmegaConf.to_container(job, resolve=True)
        before = os.environ.get("SLURM_MEM_PER_NODE")
        os.environ["SLURM_MEM_PER_NODE"] = str(int(asked) * 1024)  # the job's view (chunk.device_memory_budget)
        try:
            need = memory_need_gb(make_plan(cfg))
        finally:
            if before is None:
                del os.environ["SLURM_MEM_PER_NODE"]
            else:
                os.environ["SLURM_MEM_PER_NODE"] = before
        if need <= asked:
            return None
        sweep = cfg["sweep"]
        which = f"shard {sweep['shard']} of {sweep['num_shards']}" if sweep["num_shards"] > 1 else "the job"
        return (f"hydra.launcher.mem_gb={asked}: {which} needs about {need} GiB (its largest chunk "
                f"and the process; dry_run=true shows it): ask for hydra.launcher.mem_gb={need}, or "
                f"choose a smaller sweep.chunk_size")
