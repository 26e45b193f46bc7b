"""Benchmarks of phasescan (python -m bench.throughput, python -m bench.profile_step, ...)."""
