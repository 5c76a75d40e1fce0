#!/usr/bin/env bash
# The main job on the bundled model: set up and build, then info, perplexity on WikiText-2
# (first 40 windows of 512 tokens; FULL=1 for the whole file), a short generation, and
# quantize-and-compare: RTN W4A16 into a compressed-tensors folder, then KL divergence,
# top-1 agreement and both perplexities against the fp model on the same windows.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=models/llama-27m
TEXT=../shared/data/wikitext-2/wiki.test.raw
WINDOWS=40
[ "${FULL:-0}" = 1 ] && WINDOWS=0
OUT=build/demo-w4a16
echo "== qforge info $MODEL"
build/qforge info "$MODEL" | grep -v '^  '
echo "== qforge generate $MODEL -p 'Once upon a time there was' -n 48 --temp 0"
build/qforge generate "$MODEL" -p "Once upon a time there was" -n 48 --temp 0
echo "== qforge quantize $MODEL -o $OUT --scheme W4A16"
build/qforge quantize "$MODEL" -o "$OUT" --scheme W4A16 | tail -2
if [ -f "$TEXT" ]; then
  echo "== qforge ppl $MODEL --text $TEXT --ctx 512 --max-windows $WINDOWS"
  build/qforge ppl "$MODEL" --text "$TEXT" --ctx 512 --max-windows "$WINDOWS"
  echo "== qforge kld $MODEL $OUT --text $TEXT --ctx 512 --max-windows $WINDOWS"
  build/qforge kld "$MODEL" "$OUT" --text "$TEXT" --ctx 512 --max-windows "$WINDOWS"
else
  echo "== ($TEXT not found: skipping perplexity and KL divergence)"
fi
