#!/usr/bin/env bash
# glibc's allocator against peak RSS and speed, DistilBERT shape (random weights), 160 real reviews,
# 1 epoch, in the order these ran (about 25 minutes on 2 CPU cores, nothing else running).
#     bash benchmarks/speed/allocator/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=${PEFT_SENTIMENT_SHARED:-$here/../../../../shared}
data=$shared/data/imdb
shape=$shared/models/distilbert-base-uncased-shape
export HF_HUB_OFFLINE=1
common=(--model "$shape" --random-init --data "$data" --train-size 160 --test-size 50)
python "$here/../run.py" "${common[@]}" --out "$here/default" --rounds 1 --configs seed,lora,full
MALLOC_MMAP_THRESHOLD_=131072 python "$here/../run.py" "${common[@]}" --out "$here/mmap-threshold-128k" \
  --rounds 1 --configs seed,lora,full
work=$(mktemp -d)
for setting in default MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_MMAP_THRESHOLD_=8388608; do
  env $([ "$setting" = default ] || echo "$setting") peft-sentiment train --recipe lora "${common[@]}" \
    --epochs 1 -o "$work/$setting"
  python -c "import json, sys; m = json.load(open(sys.argv[2])); print(sys.argv[1], m['train_samples_per_second'], round(m['peak_memory_mib']))" \
    "$setting" "$work/$setting/metrics.json"
done
