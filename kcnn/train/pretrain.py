"""``pretrain``: a zoo model trained as a classifier with its paper's recipe (one device, many GPUs or machines).

Cross-entropy on float32 logits, GoogLeNet's auxiliary losses (weight 0.3) when the
model has them, the recipe's weight decay, schedule and augmentation; the loop is
:mod:`kcnn.train.engine`'s. ``model.weights.h5`` of the run is a kcnn weights file:
``kcnn.build(name, weights=...)`` rebuilds the trained network with its preprocessing.
"""

import os

from kcnn import registry
from kcnn.train import engine, recipes
from kcnn.weights import default_preprocessing


def pretrain(model, dataset, out, *, recipe=None, overrides=None, epochs=None, steps=None, resume=False,
             force_resume=False, verbose=1, input_shape=None, model_options=None, **settings):
    """Trains zoo model ``model`` on ``dataset`` (see ``kcnn.data``) into run directory ``out``.

    ``recipe`` names a recipe (default: the family's paper recipe), ``overrides`` changes
    its fields, ``epochs``/``steps`` its length (its schedule scaled to it); ``settings`` are
    ``RunSettings`` fields (precision, strategy, checkpoint_every, seed, data_dir, manual_dir,
    download, xla). ``force_resume`` continues a run on hardware that resolves precision or
    strategy otherwise. Returns the history rows.

    >>> import os, tempfile, kcnn
    >>> run = os.path.join(tempfile.mkdtemp(), "lenet")
    >>> rows = kcnn.pretrain("lenet5", "digits", run, steps=2, verbose=0)
    >>> rows[-1]["step"], "val_top1" in rows[-1], kcnn.load(run).output_shape
    (2, True, (None, 10))
    """
    spec = registry.get(model)
    if epochs is not None and steps is not None:
        raise ValueError("give --epochs or --steps, not both")
    chosen = recipes.get(recipe or recipes.DEFAULT_RECIPE[spec.family], **(overrides or {}))
    shape = tuple(input_shape or spec.input_shape)
    settings = engine.RunSettings(task="classification", backbone=spec.name, dataset=os.fspath(dataset),
                                  out=os.fspath(out), recipe=chosen, input_shape=shape,
                                  backbone_options=dict(model_options or {}), epochs=epochs, steps=steps,
                                  **settings)
    return engine.train(settings, preprocessing=default_preprocessing(shape[2]), resume=resume,
                        force_resume=force_resume, verbose=verbose)
