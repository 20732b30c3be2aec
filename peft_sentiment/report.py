"""Benchmark report: per-method summaries from results.json, as a rich table, Markdown, a plot and
each method's confusion matrix.

F1 is what the runs report: of the POSITIVE class with two classes, the macro average with more; the
tables of a benchmark with more classes call it macro-F1. Binary tables read as they always have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from .labels import BINARY
from .plots import confusion_matrix_png
from .stats import (
    bootstrap_indices,
    bootstrap_interval,
    confusion_counts,
    mcnemar,
    mean_std,
    paired_difference,
)

MARKDOWN_FILE = "results.md"
PLOT_FILE = "plot.png"
CONFUSION_FILE = "confusion-{label}.png"  # one per method, in the benchmark folder
BOOTSTRAP_SEED = 0  # resamples are drawn once per test set and shared by every method


def summarize(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """For each evaluated test size, one row per method: seed spread, bootstrap intervals, cost, and
    the paired comparison with the baseline method on the same reviews."""
    spec = results["spec"]
    baseline = spec.get("baseline", "full")
    ok = [r for r in results["runs"] if r["status"] == "ok"]
    classes = len(class_names(results))
    tables: dict[str, list[dict[str, Any]]] = {}
    for n, test_set in results["test_sets"].items():
        labels = np.asarray(test_set["labels"])
        index = bootstrap_indices(len(labels), spec["resamples"], BOOTSTRAP_SEED)
        groups: dict[str, list[dict[str, Any]]] = {}
        for run in ok:
            if n in run["evals"]:
                groups.setdefault(run["label"], []).append(run)
        rows = []
        for label, runs in groups.items():
            row = _method_row(label, runs, n, labels, index, classes)
            if label != baseline and baseline in groups:
                row["vs_baseline"] = _paired(runs, groups[baseline], baseline, n, labels, index, classes)
            rows.append(row)
        tables[n] = rows
    return tables


def class_names(results: dict[str, Any]) -> list[str]:
    """The class names the runs were evaluated with; binary runs evaluated before evaluations
    recorded them have none: NEGATIVE and POSITIVE."""
    for run in results["runs"]:
        if run["status"] != "ok":
            continue
        for ev in run["evals"].values():
            if ev.get("labels"):
                return list(ev["labels"])
    return list(BINARY.names)


def _preds(runs: list[dict[str, Any]], n: str) -> np.ndarray:
    return np.asarray([r["evals"][n]["preds"] for r in runs])


def _spread(values: list[float]) -> dict[str, float | None]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std}


def _method_row(label: str, runs: list[dict[str, Any]], n: str, labels: np.ndarray,
                index: np.ndarray, classes: int) -> dict[str, Any]:
    """Scores with their spread over seeds and bootstrap intervals, the confusion matrix summed over
    the seeds, and the training costs."""
    preds = _preds(runs, n)
    row: dict[str, Any] = {"label": label, "method": runs[0]["method"], "seeds": [r["seed"] for r in runs],
                           "n_test": int(len(labels))}
    # macro_f1: absent from binary evaluations made before it was recorded
    macro = ["macro_f1"] if all("macro_f1" in r["evals"][n] for r in runs) else []
    for metric in ("accuracy", "f1", *macro):
        interval = bootstrap_interval(metric, labels, preds, index, classes=classes)
        row[metric] = {**_spread([r["evals"][n][metric] for r in runs]),
                       "low": interval.low, "high": interval.high}
    row["confusion_matrix"] = confusion_counts(labels, preds, classes).tolist()
    for metric in ("precision", "recall", "eval_samples_per_second"):
        row[metric] = _spread([r["evals"][n][metric] for r in runs])
    train = [r["train"] for r in runs]
    for key in ("peak_memory_mib", "train_seconds", "train_samples_per_second"):
        row[key] = _spread([t[key] for t in train])
    mfu = [t["train_mfu"] for t in train if t.get("train_mfu") is not None]
    row["train_mfu"] = _spread(mfu) if len(mfu) == len(train) else None
    row["peak_memory_kind"] = train[0].get("peak_memory_kind")
    row["compute_dtype"] = sorted({t.get("compute_dtype") for t in train})
    row["world_size"] = train[0].get("world_size", 1)
    row["global_batch_size"] = train[0].get("global_batch_size")
    row["trainable_params"] = train[0]["trainable_params"]
    row["total_params"] = train[0]["total_params"]
    row["trainable_share"] = train[0]["trainable_share"]
    row["upload_kind"] = runs[0]["upload_kind"]
    row["upload_bytes"] = int(np.mean([r["upload_bytes"] for r in runs]))
    return row


def _paired(runs: list[dict[str, Any]], base_runs: list[dict[str, Any]], baseline: str, n: str,
            labels: np.ndarray, index: np.ndarray, classes: int) -> dict[str, Any]:
    """Same seeds on both sides; the difference is (this method) - (baseline)."""
    base_by_seed = {r["seed"]: r for r in base_runs}
    pairs = [(r, base_by_seed[r["seed"]]) for r in runs if r["seed"] in base_by_seed]
    if not pairs:
        return {"baseline": baseline, "seeds": []}
    a = _preds([p[0] for p in pairs], n)
    b = _preds([p[1] for p in pairs], n)
    out: dict[str, Any] = {"baseline": baseline, "seeds": [p[0]["seed"] for p in pairs]}
    for metric in ("accuracy", "f1"):
        diff = paired_difference(metric, labels, a, b, index, classes=classes)
        out[f"{metric}_difference"] = {"value": diff.value, "low": diff.low, "high": diff.high}
    out["mcnemar"] = [
        {"seed": p[0]["seed"], **_mcnemar_dict(mcnemar(labels, a[i], b[i]))} for i, p in enumerate(pairs)
    ]
    return out


def _mcnemar_dict(result: Any) -> dict[str, Any]:
    return {"only_this_right": result.only_a, "only_baseline_right": result.only_b,
            "statistic": result.statistic, "p_value": result.p_value}


# ---------------------------------------------------------------- formatting


def fmt_interval(block: dict[str, Any], digits: int = 3) -> str:
    return f"{block['mean']:.{digits}f} [{block['low']:.{digits}f}, {block['high']:.{digits}f}]"


def fmt_spread(block: dict[str, Any], digits: int = 1) -> str:
    if block["std"] is None:
        return f"{block['mean']:.{digits}f}"
    return f"{block['mean']:.{digits}f} ± {block['std']:.{digits}f}"


def fmt_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover


def fmt_difference(row: dict[str, Any]) -> str:
    paired = row.get("vs_baseline")
    if not paired or not paired["seeds"]:
        return "-"
    d = paired["accuracy_difference"]
    return f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def fmt_mcnemar(row: dict[str, Any]) -> str:
    paired = row.get("vs_baseline")
    if not paired or not paired["seeds"]:
        return "-"
    return " / ".join(f"{m['p_value']:.2g}" for m in paired["mcnemar"])


COLUMNS = ["method", "seeds", "accuracy [95% CI]", "acc sd", "{f1} [95% CI]", "Δ acc vs {base} [95% CI]",
           "McNemar p (per seed)", "peak memory MiB", "train s", "train samples/s", "train MFU",
           "eval samples/s", "trainable", "upload"]


def row_cells(row: dict[str, Any]) -> list[str]:
    sd = row["accuracy"]["std"]
    return [
        row["label"],
        str(len(row["seeds"])),
        fmt_interval(row["accuracy"]),
        "-" if sd is None else f"{sd:.3f}",
        fmt_interval(row["f1"]),
        fmt_difference(row),
        fmt_mcnemar(row),
        fmt_spread(row["peak_memory_mib"], 0),
        fmt_spread(row["train_seconds"], 0),
        fmt_spread(row["train_samples_per_second"], 2),
        _fmt_percent(row["train_mfu"]["mean"] if row["train_mfu"] else None),
        fmt_spread(row["eval_samples_per_second"], 1),
        f"{row['trainable_params']:,} ({100 * row['trainable_share']:.2f}%)",
        f"{fmt_bytes(row['upload_bytes'])} ({row['upload_kind']})",
    ]


def _fmt_percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _headers(results: dict[str, Any]) -> list[str]:
    base = results["spec"].get("baseline", "full")
    return [c.format(base=base, f1=f1_name(results)) for c in COLUMNS]


def f1_name(results: dict[str, Any]) -> str:
    """What the F1 column holds: the POSITIVE class's F1 with two classes, the macro average with more."""
    return "F1" if len(class_names(results)) == 2 else "macro-F1"


TERMINAL_COLUMNS = {0: "method", 1: "seeds", 2: "accuracy [95% CI]", 4: "{f1} [95% CI]", 5: "Δ acc [95% CI]",
                    6: "McNemar p", 7: "peak MiB", 8: "train s", 12: "trainable", 13: "upload"}


def rich_tables(results: dict[str, Any], summary: dict[str, list[dict[str, Any]]]) -> list[Table]:
    """The main columns; results.md has them all."""
    tables = []
    base = results["spec"].get("baseline", "full")
    for n, rows in summary.items():
        table = Table(title=f"{_setting(results)}: {n} test reviews", header_style="bold",
                      caption=f"Δ acc and McNemar p (per seed): against {base} on the same reviews")
        for i, header in TERMINAL_COLUMNS.items():
            table.add_column(header.format(f1=f1_name(results)), justify="left" if i == 0 else "right",
                             no_wrap=True)
        for row in rows:
            cells = row_cells(row)
            table.add_row(*(cells[i] for i in TERMINAL_COLUMNS))
        tables.append(table)
    return tables


def _setting(results: dict[str, Any]) -> str:
    runs = [r for r in results["runs"] if "config" in r]
    if not runs:
        return "benchmark"
    cfg = runs[0]["config"]
    name = cfg["model"]["name"]
    model = "/".join(Path(name).parts[-2:]) if Path(name).is_absolute() else name  # a local folder
    random = " (random weights)" if cfg["model"].get("random_init") else ""
    return f"{model}{random}, {cfg['data']['train_size']} train reviews"


def markdown(results: dict[str, Any], summary: dict[str, list[dict[str, Any]]]) -> str:
    env = results["environment"]
    lines = ["# Benchmark results", ""]
    runs = [r for r in results["runs"] if "config" in r]
    if runs:
        cfg = runs[0]["config"]
        lines += [f"- model: `{cfg['model']['name']}`" + (" (random weights)" if cfg["model"].get("random_init") else ""),
                  f"- data: `{cfg['data']['source']}`, {cfg['data']['train_size']} train reviews, "
                  f"max length {cfg['data']['max_length']}, subset shuffle seed {cfg['data']['shuffle_seed']}"]
    spec = results["spec"]
    names = class_names(results)
    if len(names) > 2:  # binary reports read as they always have
        lines.append(f"- classes: {', '.join(names)}")
    f1 = f1_name(results)
    lines += [f"- methods: {', '.join(spec['methods'])}; seeds: {', '.join(map(str, spec['seeds']))}",
              f"- device: {env['device']}; torch threads: {env['torch_threads']}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
              f"- command: `{results['command']}`" if results.get("command") else "- command: (library call)",
              f"- created: {results['created']}", ""]
    lines += [f"Accuracy and {f1}: mean over seeds, with a 95% percentile bootstrap interval over test reviews "
              f"({spec['resamples']} resamples). Δ acc: this method minus {spec.get('baseline', 'full')} "
              "on the same reviews and seeds, with a paired bootstrap interval; McNemar: exact two-sided "
              "p-value, one per seed pair. Cost columns: mean ± sd over seeds; train MFU: model FLOPs "
              "utilization of the training steps (peft_sentiment/flops.py). Peak memory: "
              f"{_memory_kind(summary)}. Upload: what `push` uploads besides the model card.", ""]
    headers = _headers(results)
    for n, rows in summary.items():
        lines += [f"## {n} test reviews", "", "| " + " | ".join(headers) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        lines += ["| " + " | ".join(row_cells(row)) + " |" for row in rows]
        lines.append("")
    lines += ["## Runs", "", f"| run | status | accuracy | {f1} | train s | train tokens/s | MFU | peak memory MiB | "
              "dtype | processes |", "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    first_n = next(iter(summary), None)
    for r in results["runs"]:
        if r["status"] == "ok":
            ev = r["evals"].get(first_n, {}) if first_n else {}
            t = r["train"]
            lines.append(f"| {r['name']} | ok | {ev.get('accuracy', float('nan')):.4f} | "
                         f"{ev.get('f1', float('nan')):.4f} | {t['train_seconds']:.0f} | "
                         f"{_fmt_number(t.get('train_tokens_per_second'))} | "
                         f"{_fmt_percent(t.get('train_mfu'))} | "
                         f"{t['peak_memory_mib']:.0f} | {t.get('compute_dtype')} | {t.get('world_size', 1)} |")
        else:
            lines.append(f"| {r['name']} | {r['status']}: {r.get('error') or ''} | | | | | | | | |")
    return "\n".join(lines) + "\n"


def _fmt_number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _memory_kind(summary: dict[str, list[dict[str, Any]]]) -> str:
    kinds = {row.get("peak_memory_kind") for rows in summary.values() for row in rows}
    kinds.discard(None)
    return "; ".join(sorted(kinds)) or "not measured"


def plot(results: dict[str, Any], summary: dict[str, list[dict[str, Any]]], path: Path) -> list[str]:
    """One panel per test size, accuracy (with its interval) against peak memory, and a last panel,
    training samples/s against peak memory. A benchmark of random weights gets the last panel alone:
    its accuracy says nothing. Marker area grows with trainable parameters. Returns the panels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    filled = [(n, rows) for n, rows in summary.items() if rows]
    if not filled:
        return []
    accuracy_panels = [] if _random_weights(results) else filled
    fig, axes = plt.subplots(1, len(accuracy_panels) + 1, figsize=(6.4 * (len(accuracy_panels) + 1), 4.8),
                             squeeze=False)
    rows = filled[0][1]  # training costs do not depend on the test set
    largest = max(row["trainable_params"] for row in rows) or 1
    sizes = {row["label"]: 40 + 400 * (row["trainable_params"] / largest) ** 0.5 for row in rows}
    colors = {row["label"]: f"C{i}" for i, row in enumerate(rows)}
    memory_label = f"peak memory (MiB, {'GPU' if 'cuda' in (_memory_kind(summary)) else 'process RSS'})"
    drawn = []
    for ax, (n, panel_rows) in zip(axes[0], accuracy_panels):
        for row in panel_rows:
            acc = row["accuracy"]
            _point(ax, row, acc["mean"], [acc["mean"] - acc["low"], acc["high"] - acc["mean"]], sizes, colors)
        ax.set_ylabel("accuracy (mean over seeds, 95% bootstrap CI)")
        ax.set_title(f"{_setting(results)}\n{n} test reviews", fontsize=10)
        drawn.append(f"accuracy-{n}")
    ax = axes[0][-1]
    handles = []
    for row in rows:
        speed = row["train_samples_per_second"]
        spread = speed["std"] or 0.0
        handles.append(_point(ax, row, speed["mean"], [spread, spread], sizes, colors))
    ax.set_ylabel("training samples/s (mean ± sd over seeds)")
    ax.set_title(f"{_setting(results)}\ntraining cost", fontsize=10)
    ax.legend(handles, [f"{row['label']}: {row['trainable_params']:,} trainable "
                        f"({100 * row['trainable_share']:.2f}%)" for row in rows],
              fontsize=7, loc="best", markerscale=0.5)
    drawn.append("cost")
    for ax in axes[0]:
        ax.set_xlabel(memory_label)
        ax.grid(alpha=0.3)
        ax.margins(x=0.2, y=0.2)
    fig.tight_layout()
    tmp = path.parent / f".{path.name}.partial.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return drawn


def _point(ax: Any, row: dict[str, Any], y: float, yerr: list[float], sizes: dict[str, float],
           colors: dict[str, str]) -> Any:
    x = row["peak_memory_mib"]["mean"]
    handle = ax.scatter([x], [y], s=sizes[row["label"]], color=colors[row["label"]], alpha=0.75, zorder=2)
    if any(yerr):
        ax.errorbar(x, y, yerr=[[yerr[0]], [yerr[1]]], fmt="none", ecolor="gray", capsize=4, zorder=1)
    ax.annotate(row["label"], (x, y), textcoords="offset points", xytext=(7, 5), fontsize=8)
    return handle


def _random_weights(results: dict[str, Any]) -> bool:
    runs = [r for r in results["runs"] if "config" in r]
    return bool(runs) and all(r["config"]["model"].get("random_init") for r in runs)


def main_test_size(results: dict[str, Any], summary: dict[str, list[dict[str, Any]]]) -> str | None:
    """The test size the runs were trained with (their own test subset); without configs, the largest."""
    for run in results["runs"]:
        n = str(run["config"]["data"]["test_size"]) if "config" in run else None
        if summary.get(n):
            return n
    return max((n for n, rows in summary.items() if rows), key=int, default=None)


def confusion_plots(results: dict[str, Any], summary: dict[str, list[dict[str, Any]]],
                    folder: Path) -> list[str]:
    """confusion-<method>.png in `folder` for each method on the main test size: its confusion
    matrices summed over its seeds, one picture per method however many seeds it has. Each row of
    that size records its file as confusion_plot; returns the file names."""
    n = main_test_size(results, summary)
    if n is None:
        return []
    names = class_names(results)
    written = []
    for row in summary[n]:
        path = folder / CONFUSION_FILE.format(label=row["label"])
        seeds = len(row["seeds"])
        confusion_matrix_png(row["confusion_matrix"], names, path,
                             f"{_setting(results)}\n{row['label']}: {n} test reviews x {seeds} "
                             f"seed{'s' if seeds > 1 else ''}")
        row["confusion_plot"] = path.name
        written.append(path.name)
    return written


def write_report(results: dict[str, Any], folder: Path) -> dict[str, list[dict[str, Any]]]:
    """results.md, plot.png and each method's confusion matrix in `folder`; returns the summary they
    show."""
    summary = summarize(results)
    (folder / MARKDOWN_FILE).write_text(markdown(results, summary))
    plot(results, summary, folder / PLOT_FILE)
    confusion_plots(results, summary, folder)
    return summary
