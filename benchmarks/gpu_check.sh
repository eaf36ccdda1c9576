#!/usr/bin/env bash
# Every GPU check of docs/performance.md in one run, for a lent GPU machine (H100/H200).
#
# That machine has torch, transformers, typer, pyarrow and tqdm but not faiss, duckdb or
# sourmash: carry them as wheels for its Python (3.12). Once, here, in the repository root:
#   mkdir -p .git/info && echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl faiss-cpu duckdb sourmash screed bitstring bitarray \
#     cachetools deprecation cffi pycparser
# then run this script there with `.whl` carried. In one run and on one card it prints: the CUDA
# parity tests (NT-2.5B shape, layers 20 and 32), engine vs research loop, peak memory by token
# budget, whole build vs bare engine with --compile and without (each pass batch by batch: padding,
# model busy, first batch, gaps, tail), the layer-20 cut, and the per-shape costs of anchored
# windows (bench_shapes). The steps take about 7 minutes on an H100, the most wanted first.
# Ray (about 70 MB of wheels) does not fit what can be carried, so `--ray` is not among them.
# Every step has its own time limit, so one that hangs cannot take the others with it; the
# whole log is also written to $OUT/gpu_check.log when OUT is set.
set -uo pipefail
export PYTHONUNBUFFERED=1
log=${OUT:-/tmp}/gpu_check.log
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
export GENOME_INDEX_CHECKPOINTS=/tmp/checkpoints  # the parity test makes the checkpoint, the benchmarks reuse it
checkpoint=$GENOME_INDEX_CHECKPOINTS/nt-2.5b

step() {  # step LIMIT_SECONDS COMMAND...: run, time and label one check
  local limit=$1; shift
  echo "=== $* (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@"
  echo "=== exit $? after $((SECONDS - start)) s"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  step 240 python3 -m pytest -q -s -p no:cacheprovider tests/test_embed.py -k "cuda"
  step 200 python3 benchmarks/bench_embed.py --shape nt-2.5b --checkpoint $checkpoint --probe-budgets
  step 200 python3 benchmarks/bench_build.py --shape nt-2.5b --checkpoint $checkpoint --genomes 48 --no-rss --compile
  step 150 python3 benchmarks/bench_build.py --shape nt-2.5b --checkpoint $checkpoint --genomes 48 --no-rss
  step 90 python3 benchmarks/bench_embed.py --shape nt-2.5b --checkpoint $checkpoint --layer 20 --reference-chunks 0
  step 120 python3 benchmarks/bench_shapes.py --shape nt-2.5b --checkpoint $checkpoint
} 2>&1 | tee "$log"
