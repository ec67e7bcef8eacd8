"""The lecture's degradation experiment (He et al. 2015, Figure 6): plain vs residual CIFAR nets by depth.

Deeper plain nets train to a *higher* training error than shallower ones; with
shortcuts the deeper net is the better one. ``degradation`` trains ``plain<d>``
and ``resnet<d>`` for each depth with the same recipe and seed, and draws the
paper's figure: error per epoch, training dashed and validation solid, plain nets
left, residual nets right.
"""

import json
import os

from kcnn.train.pretrain import pretrain
from kcnn.train.history import save_figure, subplots

CIFAR_DEPTHS = (20, 32, 44, 56, 110)


def degradation(dataset, out, *, depths=(20, 56), recipe="resnet_cifar", verbose=0, **training):
    """Trains every ``plain<d>``/``resnet<d>`` into ``out/<name>``; writes ``degradation.{png,json}``.

    ``training`` goes to ``pretrain`` (epochs, steps, overrides, precision, seed, ...).
    Returns ``{name: history rows}``.
    """
    unknown = sorted(set(depths) - set(CIFAR_DEPTHS))
    if unknown or not depths:
        raise ValueError(f"depths must be among {', '.join(map(str, CIFAR_DEPTHS))}, got {list(depths)}")
    histories = {}
    for depth in sorted(depths):
        for kind in ("plain", "resnet"):
            name = f"{kind}{depth}"
            histories[name] = pretrain(name, dataset, os.path.join(out, name), recipe=recipe, verbose=verbose,
                                       resume=os.path.isdir(os.path.join(out, name, "checkpoints")),
                                       **training)
    summary = {name: {"train_error": 100 - rows[-1]["top1"], "val_error": 100 - rows[-1]["val_top1"]}
               for name, rows in histories.items()}
    with open(os.path.join(out, "degradation.json"), "w", encoding="utf-8") as stream:
        json.dump(summary, stream, indent=1)
    plot(histories, os.path.join(out, "degradation.png"))
    return histories


def plot(histories, path):
    """Figure 6's layout: plain nets left, residual nets right; training error dashed, validation solid."""
    figure, axes = subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, kind in zip(axes, ("plain", "resnet")):
        for index, (name, rows) in enumerate(item for item in histories.items() if item[0].startswith(kind)):
            color = f"C{index}"
            epochs = [row["epoch"] for row in rows]
            axis.plot(epochs, [100 - row["top1"] for row in rows], "--", color=color, linewidth=1)
            axis.plot(epochs, [100 - row["val_top1"] for row in rows], "-", color=color, linewidth=2,
                      label=name)
        axis.set(title=f"{'plain' if kind == 'plain' else 'residual'} nets (dashed: train, solid: val)",
                 xlabel="epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_ylabel("error (%)")
    figure.tight_layout()
    return save_figure(figure, path)
