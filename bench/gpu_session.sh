#!/usr/bin/env bash
# The GPU runs behind docs/benchmarks.md ("On a GPU") and docs/reproduction.md, as stages, so that
# each fits one call of a lent machine (10 minutes). Run from the repository root:
#   bash bench/gpu_session.sh STAGE [PRECISION]
# Hydra is missing from the GPU image: its wheels travel in .whl/ (see the device README).
# Logs and a tarball of each results folder go to $OUT (default /tmp/gpu_out); a step cut off by its
# limit keeps its finished chunks, and the same stage run again resumes them. On 2026-11-22 the
# calibrate stage then also held the A/B runs and overran its call: they are now `precision`.
set -u
stage=${1:?stage: calibrate | precision | paper | width | throughput}
precision=${2:-tf32}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import hydra" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1
log="$OUT/$stage.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$log"

# Run one step under a time limit; what it wrote stays even if it is cut off.
step() { local limit=$1; shift; echo "\$ $*" | tee -a "$log"; local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tr '\r' '\n' | grep -v -E '^\s*$' | tee -a "$log"
  echo "exit ${PIPESTATUS[0]}, wall $((SECONDS - t0)) s" | tee -a "$log"; }
pack() { tar czf "$OUT/$1.tgz" "${@:2}"; }

case "$stage" in
calibrate)  # throughput of the paper model at each precision, a tenth of its steps (~6 minutes)
  for prec in tf32 bfloat16; do
    step 100 python3 -m bench.throughput --p 59 --d-model 128 --steps 1000 --models 256 \
      --seq-models 2 --precision "$prec"
  done
  step 240 python3 -m bench.throughput --p 59 --d-model 128 --steps 1000 --models 256 \
    --seq-models 2 --precision float32 ;;
precision)  # model A vs B at tf32 and at float32 (the paper's), weights kept (docs/reproduction.md)
  for prec in tf32 float32; do
    step 430 python3 -m phasescan sweep=model_a_vs_b train.precision="$prec" save_weights=all \
      plot=false out_dir="results/paper/precision/model_a_vs_b_$prec"
    pack "precision_$prec" "results/paper/precision/model_a_vs_b_$prec"
  done ;;
paper)  # issue 9: model A vs B (16 seeds) and the fixed-width sweep (8 seeds) at the chosen precision
  step 150 python3 -m phasescan sweep=model_a_vs_b train.precision="$precision" plot=false \
    out_dir=results/paper/model_a_vs_b
  pack model_a_vs_b results/paper/model_a_vs_b
  step 420 python3 -m phasescan sweep=fixed_width sweep.seeds=8 train.precision="$precision" \
    plot=false out_dir=results/paper/fixed_width
  pack paper results/paper/fixed_width ;;
width)  # issue 10: width x attention rate, shard ${3:-0} of ${4:-1} (resumes what a cut-off call left)
  step 560 python3 -m phasescan sweep=width_vs_attn train.precision="$precision" plot=false \
    sweep.num_shards="${4:-1}" sweep.shard="${3:-0}" out_dir=results/paper/width_vs_attn
  pack "width_${3:-0}" results/paper/width_vs_attn ;;
throughput)  # issue 6: 1,000 paper-size models through the engine, 2 sequentially
  step 580 python3 -m bench.throughput --p 59 --d-model 128 --steps 20000 --models 1000 \
    --seq-models 2 --precision "$precision" ;;
*) echo "unknown stage: $stage (calibrate | precision | paper | width | throughput)"; exit 2 ;;
esac
