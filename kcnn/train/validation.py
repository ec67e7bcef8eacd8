"""One validation for training and ``kcnn evaluate``: a task model over a split, distributed, sums on the device.

Every replica adds its batches' additive statistics (``model.statistics``: loss sums,
top-k hits, a confusion matrix); the sums are reduced across replicas on the device
and read once at the end. Metrics that need the whole split on the host (COCO mAP)
gather their per-batch outputs from every replica.
"""

import tensorflow as tf


def statistics_variables(model):
    """Zeroed device variables for the loss sums and ``model``'s statistics (plain: every worker holds
    the same global sums)."""
    shapes = {"loss": (), "loss_weight": (), "samples": (), **model.statistics_shapes()}
    return {key: tf.Variable(tf.zeros(shape), trainable=False) for key, shape in shapes.items()}


def batch_sums(model, targets, outputs, per_example_loss):
    """A batch's loss sum, the loss's denominator (``loss_weight``: examples, or a segmenter's labelled
    pixels), its example count and the model's statistics."""
    weights = model.loss_weights(targets)
    count = tf.cast(tf.shape(per_example_loss)[0], tf.float32)
    return {"loss": tf.reduce_sum(per_example_loss),
            "loss_weight": count if weights is None else tf.reduce_sum(weights), "samples": count,
            **model.statistics(targets, outputs)}


def replica_loss(model, targets, per_example_loss, global_batch):
    """This replica's share of the global batch's mean loss (the shares add up to the mean): over
    ``global_batch`` examples, or over every replica's ``model.loss_weights`` (labelled pixels)."""
    weights = model.loss_weights(targets)
    if weights is None:
        return tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch)
    total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(weights))
    return tf.reduce_sum(per_example_loss) / tf.maximum(total, 1.0)


def read(variables):
    """The sums on the host, as JSON-able lists and floats."""
    return {key: variable.numpy().tolist() for key, variable in variables.items()}


def summary(model, sums):
    """Mean loss and the model's metrics of summed statistics, as floats."""
    values = {key: tf.constant(value, tf.float32) for key, value in sums.items()}
    metrics = {key: float(value) for key, value in model.summarize(values).items()}
    return {"loss": sums["loss"] / max(sums["loss_weight"], 1.0), **metrics}


class Validator:
    """The compiled evaluation step of ``model`` on ``task_data``'s ``split`` under ``strategy``."""

    def __init__(self, model, task_data, strategy, split="val"):
        self.model, self.data, self.strategy = model, task_data, strategy
        self.sums = statistics_variables(model)
        self.evaluation = task_data.evaluation(model, split)
        self.step = tf.function(self._step)

    def _step(self, batch):
        model, evaluation = self.model, self.evaluation

        def replica(images, targets):
            # A replica's share of a last batch smaller than the replica count is empty, and oneDNN's CPU
            # kernels refuse empty batches: run one zero image instead and keep none of its outputs.
            count = tf.shape(images)[0]
            one = tf.zeros(tf.concat([[1], tf.shape(images)[1:]], 0), images.dtype)
            outputs = model(tf.cond(count > 0, lambda: images, lambda: one), training=False)
            outputs = tf.nest.map_structure(lambda output: output[:count], outputs)
            sums = batch_sums(model, targets, outputs, model.per_example_loss(targets, outputs))
            return sums, (evaluation.outputs(targets, outputs) if evaluation else {})

        sums, extra = self.strategy.run(replica, args=batch)
        for key, value in sums.items():
            self.sums[key].assign_add(self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None))
        return {key: self.strategy.gather(value, axis=0) for key, value in extra.items()}

    def __call__(self, dataset):
        """Mean loss and every metric of the model over ``dataset`` (batches of inputs and targets)."""
        for variable in self.sums.values():
            variable.assign(tf.zeros_like(variable))
        if self.evaluation:
            self.evaluation.reset()
        # Training's split (Loop.distribute): replica i gets the i-th slice of every batch. AUTO would shard
        # file sources (TFDS) by file: the sums stay whole, but a worker whose files run out first is fed
        # empty batches, and oneDNN's CPU kernels fail on an empty batch (LeNet-5's conv after a pooling,
        # the U-Net). With DATA only a last batch of fewer examples than replicas leaves a replica empty.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        for batch in self.strategy.experimental_distribute_dataset(dataset.with_options(options)):
            gathered = self.step(batch)
            if self.evaluation:
                self.evaluation.add(gathered)
        sums = read(self.sums)
        return {**summary(self.model, sums), **self.data.details(self.model, sums),
                **(self.evaluation.result() if self.evaluation else {})}
