"""Compile time of a sweep without the persistent compilation cache, with a cold (empty) cache
and with a warm one (a rerun of the same buckets in a new process), as phasescan records it in
manifest.json (`compile_s`: seconds per bucket, from chunk.compile_chunk).

    python -m bench.compile_cache [phasescan overrides...]   # default: the demo sweep, 100 steps

Each measurement is a separate `python -m phasescan` process writing to its own temporary
out_dir, as a rerun or a Hydra multirun job would be.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["sweep=demo", "train.steps=100", "plot=false"]


def compile_seconds(overrides: list[str], cache: str, out_dir: Path) -> float:
    proc = subprocess.run([sys.executable, "-m", "phasescan", *overrides, f"compile_cache={cache}",
                           f"out_dir={out_dir}"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"bench.compile_cache: phasescan failed:\n{proc.stderr[-2000:]}")
    return sum(json.loads((out_dir / "manifest.json").read_text())["compile_s"].values())


def main(argv=None) -> dict:
    overrides = list(sys.argv[1:] if argv is None else argv) or DEFAULT
    with tempfile.TemporaryDirectory(prefix="phasescan-cache-") as tmp:
        tmp = Path(tmp)
        cache = tmp / "jax-cache"
        times = {
            "no cache": compile_seconds(overrides, "null", tmp / "off"),
            "cold cache": compile_seconds(overrides, str(cache), tmp / "cold"),
            "warm cache": compile_seconds(overrides, str(cache), tmp / "warm"),
        }
        n_entries = sum(1 for _ in cache.iterdir())
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}   python -m phasescan {' '.join(overrides)}")
    for name, seconds in times.items():
        print(f"{name:<12}{seconds:>8.2f} s compile (sum over buckets, manifest.json compile_s)")
    print(f"cache entries written: {n_entries}")
    return times


if __name__ == "__main__":
    main()
