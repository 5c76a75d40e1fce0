#!/usr/bin/env bash
# The main job on the bundled model: set up and build, then info, perplexity on WikiText-2
# (first 40 windows of 512 tokens; pass FULL=1 for the whole file) and a short generation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=models/llama-27m
TEXT=../shared/data/wikitext-2/wiki.test.raw
WINDOWS=40
[ "${FULL:-0}" = 1 ] && WINDOWS=0
echo "== qforge info $MODEL"
build/qforge info "$MODEL" | grep -v '^  '
if [ -f "$TEXT" ]; then
  echo "== qforge ppl $MODEL --text $TEXT --ctx 512 --max-windows $WINDOWS"
  build/qforge ppl "$MODEL" --text "$TEXT" --ctx 512 --max-windows "$WINDOWS"
else
  echo "== ($TEXT not found: skipping perplexity)"
fi
echo "== qforge generate $MODEL -p 'Once upon a time there was' -n 48 --temp 0"
build/qforge generate "$MODEL" -p "Once upon a time there was" -n 48 --temp 0
