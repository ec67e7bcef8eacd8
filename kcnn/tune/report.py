"""A search's results: one row per trial (hyperparameters, params, MACs, epochs, score) as CSV and
markdown, and score against MACs with the Pareto front (no other trial is both cheaper and better).

>>> pareto_front([{"macs": 1, "score": 50}, {"macs": 2, "score": 40}, {"macs": 3, "score": 70}])
[0, 2]
"""

import csv
import os

from kcnn.atomic import write_text
from kcnn.train.history import save_figure, subplots

WORKER_FILE = "tuner_id"  # in each trial's run directory: which tuner process ran it


def _worker(trials_dir, trial_id):
    path = os.path.join(trials_dir, trial_id, WORKER_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as stream:
        return stream.read().strip()


def trial_rows(oracle, budget, trials_dir, max_epochs):
    """The oracle's trials, oldest first, each with its point's parameters and MACs, its epochs (hyperband's
    bracket, else ``max_epochs``) and its worker."""
    rows = []
    for trial_id, trial in sorted(oracle.trials.items()):
        values = trial.hyperparameters.values
        point = {key: values[key] for key in budget.space.hyperparameters if key in values}
        params, macs = budget.measure(point)
        score = None if trial.score is None else float(trial.score)
        rows.append({"trial": trial_id, "worker": _worker(trials_dir, trial_id), "status": str(trial.status),
                     "score": score,
                     "epochs": values.get("tuner/epochs", max_epochs), "params": params, "macs": macs, **point})
    return rows


def pareto_front(rows):
    """Indices of the rows that no other row beats on both MACs (fewer) and score (higher)."""
    scored = [(i, row) for i, row in enumerate(rows) if row["score"] is not None]
    return [i for i, row in scored
            if not any(other["macs"] <= row["macs"] and other["score"] >= row["score"]
                       and (other["macs"], other["score"]) != (row["macs"], row["score"]) for _, other in scored)]


def write(out, rows, space):
    """``trials.csv``, ``trials.md`` and ``pareto.png`` under ``out``."""
    if not rows:
        return
    columns = list(rows[0])

    def write_csv(stream):
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    write_text(os.path.join(out, "trials.csv"), write_csv)
    best = max((row for row in rows if row["score"] is not None), key=lambda row: row["score"], default=None)
    lines = [f"# Search over `{space.name}` ({space.model})", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row[key]) for key in columns]
        lines.append("| " + " | ".join(f"**{c}**" if row is best and c else c for c in cells) + " |")
    write_text(os.path.join(out, "trials.md"), lambda stream: stream.write("\n".join(lines) + "\n"))
    _plot(out, rows, space)


def _cell(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return "" if value is None else str(value)


def _plot(out, rows, space):
    scored = [row for row in rows if row["score"] is not None]
    front = sorted((rows[i] for i in pareto_front(rows)), key=lambda row: row["macs"])
    figure, axis = subplots(figsize=(7, 4.5))
    axis.scatter([r["macs"] / 1e6 for r in scored], [r["score"] for r in scored], alpha=0.6, label="trials")
    axis.plot([r["macs"] / 1e6 for r in front], [r["score"] for r in front], "r.-", label="Pareto front")
    axis.set(xscale="log", xlabel="multiply-adds (millions, log)", ylabel="validation top-1 (%)",
             title=f"search over {space.name}")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    save_figure(figure, os.path.join(out, "pareto.png"))
