"""``evaluate_task``: the metrics of a fine-tuned segmenter or detector on a dataset split, recomputed
by the validation that training runs (:class:`kcnn.train.validation.Validator`)."""

import os

import tensorflow as tf

from kcnn.tasks import TASKS, load_task_model
from kcnn.train.task_data import TASK_DATA
from kcnn.train.validation import Validator
from kcnn.weights import read_metadata


def task_weights(source):
    """The weights file of ``source`` (a ``kcnn finetune`` run directory or its model.weights.h5), or ``None``
    when ``source`` holds no task model (a classifier)."""
    source = os.fspath(source)
    path = os.path.join(source, "model.weights.h5") if os.path.isdir(source) else source
    if not os.path.isfile(path):
        return None
    metadata = read_metadata(path)
    return path if metadata is not None and metadata.get("task") in TASKS else None


def evaluate_task(source, dataset, *, split="val", batch_size=16, data_dir=None, manual_dir=None):
    """The task's metrics (and mean loss) of the model in ``source`` on ``dataset``'s ``split``."""
    path = task_weights(source)
    if path is None:
        raise ValueError(f"{os.fspath(source)!r} is not a `kcnn finetune` run or its model.weights.h5")
    model = load_task_model(path)
    metadata = model.task_metadata
    task_data = TASK_DATA[metadata["task"]](dataset, input_shape=metadata["input_shape"],
                                            preprocessing=model.preprocessing, data_dir=data_dir,
                                            manual_dir=manual_dir)
    if task_data.info.num_classes != metadata["classes"]:
        raise ValueError(f"{dataset!r} has {task_data.info.num_classes} classes, the model {metadata['classes']}")
    validate = Validator(model, task_data, tf.distribute.get_strategy(), split)
    pipeline = task_data.pipeline(split, training=False, seed=0, batch_size=batch_size)
    return {"task": metadata["task"], "split": split, **validate(pipeline)}
