#!/usr/bin/env bash
# Every GPU check of the README in one run, for a lent GPU machine (H100/H200).
#
# That machine has torch and transformers but not faiss, duckdb, typer or pyarrow: carry them as
# wheels for its Python (3.12). Once, here, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl faiss-cpu duckdb typer click shellingham rich pyarrow tqdm
# then run this script there with `.whl` carried. It prints, in one run and on one card:
# the CUDA parity test, engine vs research-loop tokens/s, build vs engine with and without --compile.
set -euo pipefail
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider tests/test_embed.py -k "cuda or reference" 2>&1 | tail -3
python3 benchmarks/bench_embed.py --shape nt-2.5b
python3 benchmarks/bench_build.py --shape nt-2.5b --genomes 8
python3 benchmarks/bench_build.py --shape nt-2.5b --genomes 8 --compile
