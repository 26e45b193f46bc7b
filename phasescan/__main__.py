"""`python -m phasescan [overrides]`: run a sweep (Hydra app; config in conf/)."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError

log = logging.getLogger("phasescan")


def setup_logging() -> None:
    if not log.handlers:  # Hydra's own logging is off (conf/config.yaml); one handler, no repeats
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("phasescan: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def fail(error: ConfigError) -> None:
    print("phasescan: configuration error" + ("s:" if len(error.problems) > 1 else ":"),
          file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from .compile_cache import enable as enable_compile_cache
    from .sweep import run_sweep  # after Hydra parsed the command line: --help stays fast

    setup_logging()
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    enable_compile_cache(cfg_dict.get("compile_cache"))
    out_dir = Path(cfg.out_dir or f"results/{cfg.sweep.name}/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    try:
        frame = run_sweep(cfg_dict, out_dir, OmegaConf.to_yaml(cfg))
    except ConfigError as error:
        fail(error)
    log.info("%d runs -> %s", len(frame), out_dir / "runs.parquet")
    print(frame.groupby("attn_rate")["algorithm"].value_counts().unstack(fill_value=0).to_string())


if __name__ == "__main__":
    main()
