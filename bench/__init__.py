"""Benchmarks of phasescan, one entry point per question (docs/benchmarks.md, "Entry points"):
python -m bench.throughput, python -m bench.cpu_vs_torch, bash bench/gpu_session.sh and
python -m bench.profile SUB-COMMAND; bench/torch_reference.py is the PyTorch model they time against."""
