"""Table of the method sweep's runs from their metrics.json and config.yaml files."""

import json
import sys
from pathlib import Path

import yaml

out = Path(sys.argv[1])
rows = []
for metrics_file in sorted(out.glob("*/metrics.json")):
    m = json.loads(metrics_file.read_text())
    c = yaml.safe_load((metrics_file.parent / "config.yaml").read_text())
    rows.append((metrics_file.parent.name, c["method"], c["train"]["lr"], c["train"]["epochs"], m))
if not rows:
    sys.exit("no finished runs")
env = rows[0][-1]
print("# Method sweep\n")
print(f"Model: {env['model']} (MiniLM stand-in). Data: {env['train_origin']} / {env['test_origin']}, "
      f"{env['n_train']} train / {env['n_test']} test, shuffle seed {env['shuffle_seed']}.")
print(f"Device: {env['device']}; compute dtype {env['compute_dtype']}; versions: "
      + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".")
print("Command: `bash benchmarks/method_sweep/run.sh` (options in the script).\n")
print("| run | method | lr | epochs | accuracy | F1 | train s | trainable params |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for name, method, lr, epochs, m in sorted(rows, key=lambda r: (r[1], r[2], r[3])):
    print(f"| {name} | {method} | {lr:g} | {epochs:g} | {m['accuracy']:.4f} | {m['f1']:.4f} | "
          f"{m['train_seconds']:.0f} | {m['trainable_params']:,} |")
