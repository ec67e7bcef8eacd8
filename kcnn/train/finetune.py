"""``finetune``: any zoo model as the backbone of a segmenter or detector, trained on a dense dataset.

The loop is pretraining's (a custom loop over ``strategy.run``, atomic resumable
checkpoints, history, TensorBoard, NaN stop) with a fine-tuning policy:

- the backbone starts from ``weights`` (a kcnn classification weights file or a
  ``kcnn pretrain`` run directory) or from scratch;
- ``freeze_backbone_epochs``: only the head trains for that many epochs, then all;
- ``freeze_bn`` (default: when starting from weights): the backbone's BatchNorm layers
  keep their statistics and scales (inference mode), as detection and segmentation
  fine-tuning does with small batches;
- ``backbone_lr_factor`` (default 0.1 from weights, 1 from scratch): the backbone's
  learning rate relative to the head's (two optimizers; one loss scale under float16).

Run directory: ``config.json``, ``checkpoints/``, ``history.{json,csv}``, ``metrics.json``
(the last validation's full metrics), ``tensorboard/``, ``curves.png``, ``predictions.png``
(validation images, truth next to prediction) and ``model.weights.h5``
(``kcnn.tasks.load_task_model`` rebuilds it).
"""

import dataclasses
import json
import math
import os
import time

import keras
import tensorflow as tf

from kcnn import data, registry
from kcnn.atomic import write_json
from kcnn.tasks import build_task_model, check_task
from kcnn.train import checkpoints, hardware, history, recipes
from kcnn.train.dense_tasks import TASKS
from kcnn.train.engine import checkpoint_or_stop, distributed, input_preprocessing, stop_if_not_finite
from kcnn.weights import Preprocessing, files, read_metadata

IMAGE_SIZE = (512, 512)  # real datasets (DeepLab crops 513, RetinaNet 512-800)
# `shapes` (generated, offline; 2 CPU cores in minutes): a smaller input and heads, the `shapes` recipe.
SHAPES_DEFAULTS = {"image_size": (96, 96), "recipe": "shapes",
                   "head_options": {"segmentation": {"width": 64},
                                    "detection": {"fpn_width": 64, "head_width": 64, "head_depth": 2}}}
FIGURE = "predictions.png"


@dataclasses.dataclass
class FinetuneSettings:
    backbone: str
    task: str
    head: str
    dataset: str
    out: str
    recipe: recipes.Recipe
    weights: str = None
    image_size: tuple = None
    freeze_backbone_epochs: int = 0
    freeze_bn: bool = None
    backbone_lr_factor: float = None
    backbone_options: dict = dataclasses.field(default_factory=dict)
    head_options: dict = dataclasses.field(default_factory=dict)
    precision: str = "auto"
    strategy: str = "auto"
    checkpoint_every: int = 500
    seed: int = 0
    data_dir: str = None
    manual_dir: str = None
    download: bool = False


def backbone_weights_path(weights):
    """A kcnn classification weights file, or the ``model.weights.h5`` of a ``kcnn pretrain`` run."""
    if weights is None:
        return None
    path = os.fspath(weights)
    path = os.path.join(path, "model.weights.h5") if os.path.isdir(path) else path
    try:
        metadata = read_metadata(path) if os.path.isfile(path) else None
    except ValueError:  # not HDF5 at all
        metadata = None
    if metadata is None or metadata.get("task", "classification") != "classification":
        raise ValueError(f"--weights {os.fspath(weights)!r} is not a kcnn classification weights file or "
                         "`kcnn pretrain` run (convert ImageNet weights with `kcnn weights import`)")
    return path


def _settings(backbone, task, dataset, out, *, head, recipe, overrides, epochs, steps, **rest):
    spec = registry.get(backbone)
    head = check_task(task, head)
    shapes = os.fspath(dataset) == "shapes"
    name = recipe or (SHAPES_DEFAULTS["recipe"] if shapes else recipes.FINETUNE_RECIPE[task])
    recipe = recipes.get(name, **(overrides or {}))
    if epochs is not None and steps is not None:
        raise ValueError("give --epochs or --steps, not both")
    if epochs is not None:
        recipe = recipe.with_length(epochs, "epochs")
    if steps is not None:
        recipe = recipe.with_length(steps, "steps")
    settings = FinetuneSettings(backbone=spec.name, task=task, head=head, dataset=os.fspath(dataset),
                                out=os.fspath(out), recipe=recipe, **rest)
    settings.weights = backbone_weights_path(settings.weights)
    size = settings.image_size or (SHAPES_DEFAULTS["image_size"] if shapes else IMAGE_SIZE)
    settings.image_size = tuple(int(side) for side in size)
    if shapes:
        settings.head_options = {**SHAPES_DEFAULTS["head_options"][task], **settings.head_options}
    if settings.freeze_bn is None:
        settings.freeze_bn = settings.weights is not None
    if settings.backbone_lr_factor is None:
        settings.backbone_lr_factor = 0.1 if settings.weights is not None else 1.0
    if settings.freeze_backbone_epochs < 0 or settings.backbone_lr_factor < 0:
        raise ValueError("freeze_backbone_epochs and backbone_lr_factor must not be negative")
    return settings


class OptimizerGroup:
    """The head's and the backbone's optimizers, saved and restored as one."""

    def __init__(self, head, backbone):
        self.head, self.backbone = head, backbone

    @property
    def variables(self):
        return list(self.head.variables) + list(self.backbone.variables)

    def set_learning_rate(self, lr, backbone_factor):
        self.head.learning_rate.assign(lr)
        self.backbone.learning_rate.assign(lr * backbone_factor)


class FinetuneLoop:
    """The task model, its two optimizers and the compiled steps (one per freezing phase)."""

    def __init__(self, settings, strategy, task):
        self.settings, self.strategy, self.task = settings, strategy, task
        self.global_batch = settings.recipe.batch_size
        with strategy.scope():
            self.model = build_task_model(
                settings.task, settings.backbone, task.info.num_classes, image_size=settings.image_size,
                head=settings.head, backbone_options=settings.backbone_options,
                head_options=settings.head_options, backbone_weights=settings.weights)
            task.attach(self.model)
            names = set(self.model.backbone_layers)
            self.backbone_layers = [layer for layer in self.model.layers if layer.name in names]
            if settings.freeze_bn:
                for layer in self.backbone_layers:
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.trainable = False
            self.head_variables = [v for layer in self.model.layers if layer.name not in names
                                   for v in layer.trainable_weights]
            self.backbone_variables = [v for layer in self.backbone_layers for v in layer.trainable_weights]
            optimizers = [settings.recipe.build_optimizer() for _ in range(2)]
            if keras.mixed_precision.global_policy().name == "mixed_float16":
                optimizers = [keras.optimizers.LossScaleOptimizer(optimizer) for optimizer in optimizers]
            optimizers[0].build(self.head_variables)
            optimizers[1].build(self.backbone_variables)
            self.optimizers = OptimizerGroup(*optimizers)
        self.steps = {}

    def train_step(self, train_backbone):
        """The compiled step of a phase (head only, or all); the backbone's trainable flags follow it."""
        for layer in self.backbone_layers:
            if not (self.settings.freeze_bn and isinstance(layer, keras.layers.BatchNormalization)):
                layer.trainable = train_backbone
        if train_backbone not in self.steps:
            replica = lambda images, targets: self._train_replica(images, targets, train_backbone)  # noqa: E731
            self.steps[train_backbone] = tf.function(distributed(self.strategy, replica))
        return self.steps[train_backbone]

    def _train_replica(self, images, targets, train_backbone):
        variables = self.head_variables + (self.backbone_variables if train_backbone else [])
        head, backbone = self.optimizers.head, self.optimizers.backbone
        with tf.GradientTape() as tape:
            outputs = self.model(self.task.model_input(images), training=True)
            per_example = self.task.loss(targets, outputs)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
            decay = self.settings.recipe.weight_decay
            if decay:
                squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
                loss += 0.5 * decay * squares / self.strategy.num_replicas_in_sync
            scaled = head.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        head.apply(gradients[:len(self.head_variables)], self.head_variables)
        if train_backbone:
            rescale = backbone.scale_loss(1.0) / head.scale_loss(1.0)  # 1 unless float16 loss scaling
            backbone.apply([g * tf.cast(rescale, g.dtype) for g in gradients[len(self.head_variables):]],
                           self.backbone_variables)
        return {"loss": tf.reduce_sum(per_example), "count": tf.cast(tf.shape(per_example)[0], tf.float32)}

    @tf.function
    def predict(self, images):
        return self.model(self.task.model_input(images), training=False)

    def validate(self, dataset):
        """Validation on this worker alone (no cross-replica ops): every worker gets the same numbers."""
        return self.task.validate(self.predict, dataset)


def finetune(backbone, task, dataset, out, *, head=None, recipe=None, overrides=None, epochs=None, steps=None,
             resume=False, verbose=1, **settings):
    """Fine-tunes zoo model ``backbone`` with a ``task`` head on ``dataset`` into run directory ``out``.

    ``settings``: ``FinetuneSettings`` fields (weights, image_size, freeze_backbone_epochs, freeze_bn,
    backbone_lr_factor, backbone_options, head_options, precision, strategy, checkpoint_every, seed,
    data_dir, manual_dir, download). Returns the history rows.
    """
    settings = _settings(backbone, task, dataset, out, head=head, recipe=recipe, overrides=overrides,
                         epochs=epochs, steps=steps, **settings)
    strategy = hardware.resolve_strategy(settings.strategy)
    chief = hardware.is_chief(strategy)
    config = json.loads(json.dumps(dataclasses.asdict(settings), default=list))
    existing = checkpoints.check_run_dir(settings.out, config, resume or not chief)
    existing = existing if resume else None
    info = data.dense_dataset_info(settings.dataset, task, data_dir=settings.data_dir,
                                   manual_dir=settings.manual_dir, download=settings.download)
    steps_per_epoch = info.num_examples["train"] // settings.recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {settings.recipe.batch_size} is larger than the training split "
                         f"({info.num_examples['train']} images)")
    channels = registry.get(settings.backbone).input_shape[2]
    preprocessing = (Preprocessing.from_dict(read_metadata(settings.weights)["preprocessing"]) if settings.weights
                     else input_preprocessing(channels))
    adapter = TASKS[task](info, dataset=settings.dataset, image_size=settings.image_size, channels=channels,
                          preprocessing=preprocessing, data_dir=settings.data_dir, manual_dir=settings.manual_dir)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(hardware.resolve_precision(settings.precision))
    keras.utils.set_random_seed(settings.seed)
    try:
        os.makedirs(settings.out, exist_ok=True)
        if chief:
            write_json(os.path.join(settings.out, "config.json"), config)
        loop = FinetuneLoop(settings, strategy, adapter)
        return _train(settings, loop, adapter, steps_per_epoch, existing, chief, verbose, preprocessing)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(settings, loop, task, steps_per_epoch, existing, chief, verbose, preprocessing):
    checkpoint_dir = os.path.join(settings.out, "checkpoints")
    recipe, total_steps = settings.recipe, settings.recipe.total_steps(steps_per_epoch)
    # "totals": the current epoch's loss sums so far, so that a resumed epoch reports the whole epoch
    state = {"step": 0, "epoch": 0, "batch": 0, "history": [], "totals": {"loss": 0.0, "count": 0.0}}
    if chief:
        checkpoints.remove_partials(checkpoint_dir)
    if existing:
        state = checkpoints.restore(existing, loop.model, loop.optimizers)
    board = history.TensorBoard(settings.out) if chief else None
    epochs = math.ceil(total_steps / steps_per_epoch)
    validation = task.pipeline("val", training=False, seed=0, batch_size=recipe.batch_size)
    metrics = {}

    def save():
        checkpoint_or_stop(checkpoint_dir, loop.model, loop.optimizers, state, chief)

    while state["step"] < total_steps:
        epoch = state["epoch"]
        step_fn = loop.train_step(train_backbone=epoch >= settings.freeze_backbone_epochs)
        dataset = task.pipeline("train", training=True, seed=settings.seed * 100_003 + epoch,
                                batch_size=recipe.batch_size).skip(state["batch"])
        remaining = min(steps_per_epoch - state["batch"], total_steps - state["step"])
        progress = keras.utils.Progbar(remaining, verbose=verbose, stateful_metrics=["loss", "lr"])
        totals, started, trained = state["totals"], time.perf_counter(), 0
        for batch in loop.strategy.experimental_distribute_dataset(dataset.take(remaining)):
            loop.optimizers.set_learning_rate(recipe.learning_rate(state["step"], steps_per_epoch),
                                              settings.backbone_lr_factor)
            sums = {k: float(v) for k, v in step_fn(batch).items()}
            loss = sums["loss"] / max(sums["count"], 1.0)
            stop_if_not_finite(loss, state, checkpoint_dir)
            for key in totals:
                totals[key] += sums[key]
            trained += sums["count"]
            state["step"] += 1
            state["batch"] += 1
            progress.add(1, [("loss", loss), ("lr", recipe.learning_rate(state["step"] - 1, steps_per_epoch))])
            if state["step"] % settings.checkpoint_every == 0:
                save()
        seconds = time.perf_counter() - started
        metrics = loop.validate(validation)
        row = {"epoch": epoch + 1, "step": state["step"],
               "lr": recipe.learning_rate(state["step"] - 1, steps_per_epoch),
               "loss": totals["loss"] / max(totals["count"], 1.0), "val_loss": metrics["loss"],
               **{f"val_{k}": v for k, v in metrics.items() if isinstance(v, float) and k != "loss"},
               "images_per_second": trained / max(seconds, 1e-9),
               "skipped_samples": sum(data.skipped_samples().values())}
        state["history"].append(row)
        state["epoch"], state["batch"], state["totals"] = epoch + 1, 0, {"loss": 0.0, "count": 0.0}
        save()
        if chief:
            history.record_epoch(settings.out, state["history"], board, state["step"])
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}: loss {row['loss']:.4f} val loss {row['val_loss']:.4f} "
                  f"val {task.key_metric} {row['val_' + task.key_metric]:.4f} "
                  f"({row['images_per_second']:.1f} img/s)")
    if chief:
        board.close()
        _finish(settings, loop, task, state["history"], metrics or loop.validate(validation), validation,
                preprocessing)
    if verbose and sum(data.skipped_samples().values()):
        print(f"skipped samples: {data.skipped_samples()} (see the warnings above)")
    return state["history"]


def _finish(settings, loop, task, rows, metrics, validation, preprocessing):
    write_json(os.path.join(settings.out, "metrics.json"), {"split": "val", **metrics})
    history.plot_dense(settings.out, rows, task.key_metric)
    images, targets = next(iter(validation))
    task.draw(images, targets, loop.predict(images), os.path.join(settings.out, FIGURE))
    files.save(loop.model, os.path.join(settings.out, "model.weights.h5"), {
        "task": settings.task, "head": settings.head, "head_options": dict(settings.head_options),
        "architecture": settings.backbone, "options": dict(settings.backbone_options), "include_top": False,
        "classes": task.info.num_classes, "input_shape": [*settings.image_size, loop.model.input.shape[-1]],
        "preprocessing": preprocessing.to_dict(), "class_names": list(task.info.class_names),
        "source": {"library": "kcnn", "run": os.path.abspath(settings.out), "dataset": settings.dataset,
                   "backbone_weights": settings.weights},
        "metrics": {k: v for k, v in metrics.items() if not isinstance(v, dict)},
        "skipped_tensors": [],
    })
