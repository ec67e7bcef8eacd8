"""Semantic segmentation heads on any zoo backbone: FCN, DeepLabv3 (ASPP) and a U-Net decoder.

Each head maps the backbone's ``{"P<n>": map}`` to per-pixel class logits at the
input size (float32 whatever the mixed-precision policy). Upsampling is bilinear
resizing to the next map's exact size, so valid-padded backbones (AlexNet, LeNet),
whose maps are not exactly H/2^n, work too.

- ``fcn`` (Long, Shelhamer, Darrell 2015): a 3x3 conv + dropout + 1x1 class scores on
  the deepest map, then ``fcn_skips`` score layers from shallower levels added on the
  way up (2: FCN-8s; 1: FCN-16s; 0: FCN-32s); skip score layers start at zero, as the paper's.
- ``deeplabv3`` (Chen et al. 2017): ASPP — a 1x1 conv, three 3x3 atrous convs at rates
  6/12/18 for output stride 16 (doubled at 8, halved at 32) and image pooling — then a 3x3 conv
  and class scores. Dilated ResNets: ``kcnn.backbone("resnet50", output_stride=16)``.
- ``unet`` (Ronneberger et al. 2015): a decoder over the backbone's four deepest levels
  (P2..P5 of a ResNet): upsample, concatenate the skip, two 3x3 conv-BN-ReLU; widths halve.

>>> import kcnn
>>> backbone = kcnn.backbone("resnet18", input_shape=(64, 64, 3))
>>> build_segmenter(backbone, 4, head="unet", width=32).output_shape
(None, 64, 64, 4)
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

HEADS = ("fcn", "deeplabv3", "unet")
IGNORE_LABEL = 255
ASPP_RATES_AT_16 = (6, 12, 18)


def _conv_bn_relu(x, filters, kernel, *, dilation=1, name):
    x = layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation, use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _resize(x, size, name, dtype=None):
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return layers.Resizing(*size, interpolation="bilinear", dtype=dtype, name=name)(x)


def _scores(x, classes, name, *, zero_init=False):
    return layers.Conv2D(classes, 1, kernel_initializer="zeros" if zero_init else "glorot_uniform",
                         dtype="float32", name=name)(x)


def _fcn(features, classes, *, width, fcn_skips, dropout):
    levels = sorted(features, key=lambda level: int(level[1:]))
    deepest = levels[-1]
    x = _conv_bn_relu(features[deepest], width, 3, name="fcn_head")
    x = layers.Dropout(dropout, name="fcn_dropout")(x)
    scores = _scores(x, classes, "fcn_score")
    for level in levels[-2::-1][:fcn_skips]:
        skip = features[level]
        scores = _resize(scores, skip.shape[1:3], f"fcn_up_to_{level}", dtype="float32")
        skip_scores = _scores(skip, classes, f"fcn_score_{level}", zero_init=True)
        scores = layers.Add(dtype="float32", name=f"fcn_fuse_{level}")([scores, skip_scores])
    return scores


def _aspp(x, *, width, rates):
    size = x.shape[1:3]
    branches = [_conv_bn_relu(x, width, 1, name="aspp_1x1")]
    branches += [_conv_bn_relu(x, width, 3, dilation=rate, name=f"aspp_rate{rate}") for rate in rates]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = _conv_bn_relu(pooled, width, 1, name="aspp_pool_1x1")
    branches.append(layers.UpSampling2D(tuple(size), name="aspp_pool_up")(pooled))
    x = layers.Concatenate(name="aspp_concat")(branches)
    return _conv_bn_relu(x, width, 1, name="aspp_project")


def _deeplabv3(features, classes, *, width, dropout, stride):
    rates = tuple(max(1, rate * 16 // stride) for rate in ASPP_RATES_AT_16)
    x = _aspp(features[max(features, key=lambda level: int(level[1:]))], width=width, rates=rates)
    x = layers.Dropout(dropout, name="aspp_dropout")(x)
    x = _conv_bn_relu(x, width, 3, name="deeplab_head")
    return _scores(x, classes, "deeplab_score")


def _unet(features, classes, *, width):
    levels = sorted(features, key=lambda level: int(level[1:]))[-4:]
    x = features[levels[-1]]
    for depth, level in enumerate(levels[-2::-1]):
        skip = features[level]
        x = _resize(x, skip.shape[1:3], f"unet_up_to_{level}")
        x = layers.Concatenate(name=f"unet_concat_{level}")([x, skip])
        filters = max(width // 2 ** depth, 8)
        x = _conv_bn_relu(x, filters, 3, name=f"unet_{level}_a")
        x = _conv_bn_relu(x, filters, 3, name=f"unet_{level}_b")
    return _scores(x, classes, "unet_score")


def build_segmenter(backbone, num_classes, *, head="fcn", width=256, fcn_skips=2, dropout=0.1, name=None):
    """``backbone`` (``kcnn.backbone(..., input_shape=(H, W, C))``) + ``head`` -> logits [B, H, W, classes].

    ``width``: the head's channels (FCN's 3x3 conv, ASPP's branches, U-Net's deepest
    decoder stage). The backbone's ``feature_info`` is kept on the model.
    """
    if head not in HEADS:
        raise ValueError(f"unknown segmentation head {head!r}; accepted: {', '.join(HEADS)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"a segmenter needs at least 2 classes (background and one more), got {num_classes!r}")
    size = tuple(backbone.input.shape[1:3])
    if None in size:
        raise ValueError("build the backbone with a fixed input_shape=(H, W, C): the head resizes to it")
    features = dict(backbone.output)
    if head == "fcn":
        scores = _fcn(features, num_classes, width=width, fcn_skips=fcn_skips, dropout=dropout)
    elif head == "deeplabv3":
        stride = max(info["stride"] for info in backbone.feature_info)
        scores = _deeplabv3(features, num_classes, width=width, dropout=dropout, stride=stride)
    else:
        scores = _unet(features, num_classes, width=width)
    logits = _resize(scores, size, "logits", dtype="float32")
    if logits is scores:
        logits = layers.Activation("linear", dtype="float32", name="logits")(scores)
    model = keras.Model(backbone.input, logits, name=name or f"{backbone.name.removesuffix('_backbone')}_{head}")
    model.feature_info = backbone.feature_info
    return model


def segmentation_loss(masks, logits, *, ignore_label=IGNORE_LABEL):
    """Per-image sums of the cross-entropy over the pixels whose label is not ``ignore_label``: float32 [B].

    A batch's loss is their sum over :func:`labelled_pixels`' sum, the mean over every labelled
    pixel of the batch (the torchvision and DeepLab references' loss): a crop that is mostly
    ``ignore_label`` weighs by its labelled pixels, not as a whole image.

    >>> logits = tf.constant([[[[2.0, 0.0], [0.0, 2.0]]]])
    >>> masks = tf.constant([[[0, 255]]])
    >>> round(float(segmentation_loss(masks, logits)[0]), 4)  # log(1 + e^-2)
    0.1269
    """
    masks = tf.cast(masks, tf.int32)
    valid = tf.not_equal(masks, ignore_label)
    labels = tf.where(valid, masks, 0)
    per_pixel = keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits, tf.float32), from_logits=True)
    return tf.reduce_sum(per_pixel * tf.cast(valid, tf.float32), axis=[1, 2])


def labelled_pixels(masks, *, ignore_label=IGNORE_LABEL):
    """Per-image counts of the pixels whose label is not ``ignore_label``: float32 [B]."""
    return tf.reduce_sum(tf.cast(tf.not_equal(tf.cast(masks, tf.int32), ignore_label), tf.float32), axis=[1, 2])


def at_label_resolution(logits, masks, image_size):
    """``logits`` [B, h, w, C] resized bilinearly to each image's ``image_size`` [B, 2] (its labels'
    resolution) and zero-padded to ``masks``' padded size [B, H, W]: scores at the original resolution,
    as the DeepLab and torchvision references evaluate (the mask's padding holds the ignore label).

    >>> logits = tf.reshape(tf.range(8, dtype=tf.float32), [1, 2, 2, 2])
    >>> masks = tf.fill([1, 3, 6], 255)
    >>> at_label_resolution(logits, masks, tf.constant([[2, 4]])).shape
    TensorShape([1, 3, 6, 2])
    """
    logits = tf.cast(logits, tf.float32)
    padded = tf.shape(masks)[1:3]

    def resize(example):
        image_logits, size = example
        resized = tf.image.resize(image_logits[None], size, method="bilinear")[0]
        return tf.pad(resized, [[0, padded[0] - size[0]], [0, padded[1] - size[1]], [0, 0]])

    return tf.map_fn(resize, (logits, tf.cast(image_size, tf.int32)),
                     fn_output_signature=tf.TensorSpec([None, None, logits.shape[-1]], tf.float32))


def confusion_matrix(masks, logits, num_classes, *, ignore_label=IGNORE_LABEL):
    """[classes, classes] float32 counts (rows: truth, columns: prediction) over labelled pixels."""
    masks = tf.reshape(tf.cast(masks, tf.int32), [-1])
    predictions = tf.reshape(tf.argmax(logits, axis=-1, output_type=tf.int32), [-1])
    valid = tf.logical_and(tf.not_equal(masks, ignore_label), masks < num_classes)
    index = tf.boolean_mask(masks * num_classes + predictions, valid)
    counts = tf.math.bincount(index, minlength=num_classes * num_classes, maxlength=num_classes * num_classes)
    return tf.reshape(tf.cast(counts, tf.float32), [num_classes, num_classes])


def confusion_metrics(confusion):
    """Per-class IoU (NaN for a class never seen nor predicted), mean IoU over the other classes and pixel
    accuracy of a confusion matrix, as float32 tensors (keras.ops: eager, or inside a compiled metric)."""
    confusion = ops.convert_to_tensor(confusion, "float32")
    hits = ops.diagonal(confusion)
    union = ops.sum(confusion, axis=0) + ops.sum(confusion, axis=1) - hits
    seen = union > 0
    iou = ops.where(seen, hits / ops.maximum(union, 1.0), float("nan"))
    count = ops.sum(ops.cast(seen, "float32"))
    return {"iou": iou,
            "mean_iou": ops.sum(ops.where(seen, iou, 0.0)) / ops.maximum(count, 1.0),
            "pixel_accuracy": ops.sum(hits) / ops.maximum(ops.sum(confusion), 1.0)}


def segmentation_metrics(confusion, class_names=None):
    """:func:`confusion_metrics` as floats, with the per-class IoU by class name.

    >>> m = segmentation_metrics(np.array([[3, 1], [0, 4]]), ["bg", "fg"])
    >>> round(m["mean_iou"], 4), {k: round(v, 4) for k, v in m["per_class_iou"].items()}, m["pixel_accuracy"]
    (0.775, {'bg': 0.75, 'fg': 0.8}, 0.875)
    """
    metrics = confusion_metrics(confusion)
    iou = np.asarray(metrics["iou"], np.float64)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(iou))]
    return {"mean_iou": float(metrics["mean_iou"]),
            "per_class_iou": {name: float(value) for name, value in zip(names, iou)},
            "pixel_accuracy": float(metrics["pixel_accuracy"])}
