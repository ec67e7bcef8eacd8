"""A run's history: per-epoch rows as CSV and JSON (written atomically), TensorBoard scalars, a PNG plot."""

import csv
import os

import tensorflow as tf

from kcnn.atomic import atomic_path, write_json, write_text


def write_tables(run_dir, rows):
    """``history.json`` and ``history.csv``: one row per epoch."""
    write_json(os.path.join(run_dir, "history.json"), rows)
    if not rows:
        return

    def write_csv(stream):
        writer = csv.DictWriter(stream, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    write_text(os.path.join(run_dir, "history.csv"), write_csv)


def record_epoch(run_dir, rows, board, step):
    """After an epoch: the history tables rewritten and the newest row's numbers as TensorBoard scalars."""
    write_tables(run_dir, rows)
    board.scalars(step, {k: v for k, v in rows[-1].items() if k not in ("epoch", "step")})


class TensorBoard:
    """Scalars under ``RUN/tensorboard`` (train and val in one writer, named by prefix)."""

    def __init__(self, run_dir):
        self.writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard"))

    def close(self):
        self.writer.close()

    def scalars(self, step, values):
        with self.writer.as_default(step=step):
            for name, value in values.items():
                if isinstance(value, (int, float)) and value == value:
                    tf.summary.scalar(name, value)
        self.writer.flush()


def subplots(*args, **kwargs):
    """``(figure, axes)`` like pyplot's, on a bare ``matplotlib.figure.Figure``: no pyplot state and no
    backend switch, so a notebook's own plots keep working after a run drew its figures."""
    from matplotlib.figure import Figure

    figure_options = {key: kwargs.pop(key) for key in ("figsize",) if key in kwargs}
    figure = Figure(**figure_options)
    return figure, figure.subplots(*args, **kwargs)


def save_figure(figure, path):
    """Writes ``figure`` as a PNG beside ``path`` and renames it into place."""
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=100)
    return path


def plot(run_dir, rows, metric, path="curves.png"):
    """Training curves (loss and ``metric``, train where the rows have it and val) as a PNG; returns its path."""
    epochs = [row["epoch"] for row in rows]
    figure, axes = subplots(1, 2, figsize=(10, 4))
    for axis, key in zip(axes, ("loss", metric)):
        for prefix, name in (("", "train"), ("val_", "val")):
            if all(prefix + key in row for row in rows):
                axis.plot(epochs, [row[prefix + key] for row in rows], marker="o", label=name)
        axis.set(xlabel="epoch", ylabel=key, title=key)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return save_figure(figure, os.path.join(run_dir, path))
