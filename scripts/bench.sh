#!/usr/bin/env bash
# Speed figures for the README: builds, then measures ppl prefill throughput against sgemm
# peak at 1 and all threads (bench/ppl_bench.cc). Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
build/ppl_bench models/llama-27m "${WINDOWS:-8}"
