"""Table of the sweep's runs from their metrics.json and config.yaml files."""

import json
import sys
from pathlib import Path

import yaml

out = Path(sys.argv[1])
rows = []
for metrics_file in sorted(out.glob("*/metrics.json")):
    m = json.loads(metrics_file.read_text())
    c = yaml.safe_load((metrics_file.parent / "config.yaml").read_text())
    targets = ",".join(c["lora"]["target_modules"] or ["all (query,key,value,dense)"])
    rows.append((metrics_file.parent.name, c["lora"]["r"], c["lora"]["alpha"], targets, c["train"]["lr"],
                 m["accuracy"], m["f1"], m["train_seconds"], m["trainable_params"], m))
if not rows:
    sys.exit("no finished runs")
env = rows[0][-1]
print("# LoRA defaults sweep\n")
print(f"Model: {env['model']} (MiniLM stand-in). Data: {env['train_origin']} / {env['test_origin']}, "
      f"{env['n_train']} train / {env['n_test']} test, shuffle seed {env['shuffle_seed']}.")
print(f"Device: {env['device']}; compute dtype {env['compute_dtype']}; versions: "
      + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".")
print("Command: `bash benchmarks/lora_sweep/run.sh` (options in the script).\n")
print("| run | r | alpha | targets | lr | accuracy | F1 | train s | trainable params |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name, r, alpha, targets, lr, acc, f1, secs, params, _ in rows:
    print(f"| {name} | {r} | {alpha} | {targets} | {lr:g} | {acc:.4f} | {f1:.4f} | {secs:.0f} | {params:,} |")
