"""Faster R-CNN (Ren et al. 2015) and Mask R-CNN (He et al. 2017) with a feature pyramid, on any zoo backbone.

As torchvision's ``fasterrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn`` define them. The network (a
functional model) is the backbone, the pyramid ``P2..P5`` (:mod:`kcnn.tasks.fpn`) with ``P6`` a
stride-2 subsampling of ``P5``, and the RPN head (a shared 3x3 conv + ReLU, 1x1 objectness and box
convs) on ``P2..P6`` (:mod:`kcnn.tasks.rpn`). Its outputs are the maps ``P2..P5`` and the RPN's
``rpn_objectness`` ``[B, N]`` and ``rpn_box_regression`` ``[B, N, 4]`` (float32).

The second stage, :class:`RoIHeads`, is a layer the task model owns, because what it runs on depends
on the step: in training 512 RoIs per image sampled (25 % positive, IoU >= 0.5) from the RPN's 2,000
proposals plus the ground truth; at inference the 1,000 proposals, then class-wise NMS. It pools
7x7 (boxes) and 14x14 (masks) with RoIAlign (``aligned=True``, 2x2 samples, FPN level assignment
k0 = 4 at 224), runs the 2-fc box head (class-specific box regression, coder weights 10, 10, 5, 5)
and the 4-conv mask head (28x28 masks, one per class). RoIAlign and every loss run in float32.

>>> import kcnn
>>> backbone = kcnn.backbone("resnet20", input_shape=(64, 64, 3))
>>> network, heads = build_rcnn(backbone, 2, image_size=(64, 64), masks=True, fpn_width=8,
...                             representation_size=16, mask_width=8, sampled_rois=32)
>>> sorted(network.output), tuple(network.output["rpn_objectness"].shape)
(['P2', 'P3', 'P4', 'P5', 'rpn_box_regression', 'rpn_objectness'], (None, 1023))
>>> found = heads.detect(network(tf.zeros((1, 64, 64, 3))))
>>> sorted(found), tuple(found["detection_masks"].shape)
(['detection_boxes', 'detection_classes', 'detection_masks', 'detection_scores', 'num_detections'], (1, 100, 28, 28))
"""

import keras
import tensorflow as tf

from kcnn.models import deep_graph_recursion
from kcnn.tasks import rpn
from kcnn.tasks.anchors import check_image_size, decode_boxes, encode_boxes, iou
from kcnn.tasks.fpn import feature_pyramid
from kcnn.tasks.roi_align import crop_masks, roi_align

BOX_POOL, MASK_POOL, SAMPLING_RATIO = 7, 14, 2
POOLED_LEVELS = (2, 3, 4, 5)
POSITIVE_ROI_FRACTION, ROI_IOU = 0.25, 0.5
SCORE_THRESHOLD, NMS_IOU, MAX_DETECTIONS, MIN_DETECTION_SIZE = 0.05, 0.5, 100, 1e-2
HEAD_STDDEV = 0.01  # the RPN's convs (torchvision), the class scores (Detectron)
BOX_STDDEV = 0.001  # the class-specific box regression (Detectron)
PAPER = {"fpn_width": 256, "representation_size": 1024, "mask_width": 256, "sampled_rois": 512,
         "train_proposals": 2000, "test_proposals": 1000}  # torchvision's defaults


def _normal(stddev):
    return keras.initializers.RandomNormal(stddev=stddev)


def _rpn_outputs(pyramid, width, per_location):
    """The RPN head, shared by every level: flattened objectness ``[B, N]`` and deltas ``[B, N, 4]``, float32."""
    conv = keras.layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer=_normal(HEAD_STDDEV),
                               name="rpn_conv")
    objectness = keras.layers.Conv2D(per_location, 1, kernel_initializer=_normal(HEAD_STDDEV), name="rpn_objectness")
    box = keras.layers.Conv2D(4 * per_location, 1, kernel_initializer=_normal(HEAD_STDDEV), name="rpn_box")
    scores, deltas = [], []
    for level, p in zip(rpn.LEVELS, pyramid):
        hidden = conv(p)
        cells = p.shape[1] * p.shape[2] * per_location
        scores.append(keras.layers.Reshape((cells,), name=f"rpn_objectness_p{level}")(objectness(hidden)))
        deltas.append(keras.layers.Reshape((cells, 4), name=f"rpn_box_p{level}")(box(hidden)))
    def float32(name, maps):
        concatenated = keras.layers.Concatenate(axis=1, name=f"{name}_concat")(maps)
        return keras.layers.Activation("linear", dtype="float32", name=f"{name}_all")(concatenated)

    return float32("rpn_objectness", scores), float32("rpn_box", deltas)


def build_rcnn(backbone, num_classes, *, image_size, masks=False, fpn_width=256, representation_size=1024,
               mask_width=256, sampled_rois=512, train_proposals=2000, test_proposals=1000, aligned=True,
               anchor_sizes=rpn.SIZES, seed=None, name=None):
    """``(network, RoIHeads)`` of Faster R-CNN (``masks=False``) or Mask R-CNN on ``backbone`` (a multi-scale
    ``kcnn.backbone(name, input_shape=(H, W, C))``) for ``num_classes`` object classes (background apart).

    The defaults are torchvision's (``PAPER``); ``train_proposals`` / ``test_proposals`` are the RPN's
    per-level pre-NMS and per-image post-NMS counts in training / inference. ``aligned``: RoIAlign's half-pixel
    shift (Detectron2's; torchvision's models pool with ``aligned=False``, which their imported weights keep).
    ``anchor_sizes``: the RPN's anchor side at P2..P6 (torchvision's 32..512 px are made for 800-px images;
    smaller images with small objects want smaller ones).
    """
    height, width = check_image_size(image_size)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    sizes = {"fpn_width": fpn_width, "representation_size": representation_size, "mask_width": mask_width,
             "sampled_rois": sampled_rois, "train_proposals": train_proposals, "test_proposals": test_proposals}
    bad = {key: value for key, value in sizes.items() if not isinstance(value, int) or value < 1}
    if bad:
        raise ValueError(f"{', '.join(bad)} must be positive ints, got {', '.join(map(repr, bad.values()))}")
    if not isinstance(aligned, bool):
        raise ValueError(f"aligned must be true or false, got {aligned!r}")
    if (not isinstance(anchor_sizes, (list, tuple)) or len(anchor_sizes) != len(rpn.LEVELS)
            or not all(isinstance(size, (int, float)) and size > 0 for size in anchor_sizes)):
        raise ValueError(f"anchor_sizes must be {len(rpn.LEVELS)} positive sizes (P2..P6), got {anchor_sizes!r}")
    if not isinstance(backbone.output, dict):
        raise ValueError(f"backbone must return a dict {{'P<n>': map}} (use kcnn.backbone), got {backbone.output!r}")
    if tuple(backbone.input.shape[1:3]) != (height, width):
        raise ValueError(f"image_size {(height, width)} differs from the backbone's input size "
                         f"{tuple(backbone.input.shape[1:3])}; accepted: a backbone built with "
                         "kcnn.backbone(name, input_shape=(H, W, C))")
    with deep_graph_recursion():
        pyramid = feature_pyramid(dict(backbone.output), (height, width), 2, 5, fpn_width)
        top = keras.layers.MaxPooling2D(pool_size=1, strides=2, name="fpn_p6")(pyramid[-1])  # LastLevelMaxPool
        objectness, deltas = _rpn_outputs(pyramid + [top], fpn_width, len(rpn.ASPECT_RATIOS))
        outputs = {f"P{level}": p for level, p in zip(POOLED_LEVELS, pyramid)}
        outputs.update(rpn_objectness=objectness, rpn_box_regression=deltas)
        suffix = "mask_rcnn" if masks else "faster_rcnn"
        network = keras.Model(backbone.input, outputs, name=name or f"{backbone.name.removesuffix('_backbone')}_{suffix}")
    heads = RoIHeads(num_classes, (height, width), channels=fpn_width, masks=masks,
                     representation_size=representation_size, mask_width=mask_width, sampled_rois=sampled_rois,
                     train_proposals=train_proposals, test_proposals=test_proposals, aligned=aligned,
                     anchor_sizes=tuple(anchor_sizes), seed=seed)
    return network, heads


class RoIHeads(keras.layers.Layer):
    """The second stage: box head, optional mask head, their training loss and the final detections.

    ``loss(targets, outputs)`` is the whole model's loss per image (the RPN's and the heads');
    ``detect(outputs)`` gives the TF Object Detection API's outputs (boxes normalised to [0, 1]) and,
    with masks, ``detection_masks`` ``[B, 100, 28, 28]`` box-relative probabilities (:mod:`kcnn.tasks.masks`
    pastes them into the image). Its random RoI sampling draws from a seed generator the model saves,
    so a resumed run samples as the uninterrupted one.
    """

    def __init__(self, num_classes, image_size, *, channels, masks=False, representation_size=1024, mask_width=256,
                 sampled_rois=512, train_proposals=2000, test_proposals=1000, aligned=True, anchor_sizes=rpn.SIZES,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        self.aligned = aligned
        self.num_classes, self.image_size, self.masks = num_classes, check_image_size(image_size), masks
        self.sampled_rois, self.train_proposals, self.test_proposals = sampled_rois, train_proposals, test_proposals
        self.anchors = rpn.rpn_anchors(self.image_size, sizes=anchor_sizes)
        self.level_counts = rpn.anchors_per_level(self.image_size)
        self.seed_generator = keras.random.SeedGenerator(seed)
        outputs = num_classes + 1  # background is class 0
        self.box_fc6 = keras.layers.Dense(representation_size, activation="relu", name="box_fc6")
        self.box_fc7 = keras.layers.Dense(representation_size, activation="relu", name="box_fc7")
        self.box_class = keras.layers.Dense(outputs, kernel_initializer=_normal(HEAD_STDDEV), name="box_class")
        self.box_regression = keras.layers.Dense(4 * outputs, kernel_initializer=_normal(BOX_STDDEV),
                                                 name="box_regression")
        shapes = [(self.box_fc6, BOX_POOL * BOX_POOL * channels), (self.box_fc7, representation_size),
                  (self.box_class, representation_size), (self.box_regression, representation_size)]
        for layer, width in shapes:
            layer.build((None, width))
        self.mask_layers = []
        if masks:
            he = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
            self.mask_layers = [keras.layers.Conv2D(mask_width, 3, padding="same", activation="relu",
                                                    kernel_initializer=he, name=f"mask_conv{i + 1}")
                                for i in range(4)]
            self.mask_layers += [
                keras.layers.Conv2DTranspose(mask_width, 2, strides=2, activation="relu", kernel_initializer=he,
                                             name="mask_upsample"),
                keras.layers.Conv2D(outputs, 1, kernel_initializer=he, name="mask_logits")]
            shape = (None, MASK_POOL, MASK_POOL, channels)
            for layer in self.mask_layers:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.built = True

    def _pyramid(self, outputs):
        return {level: outputs[f"P{level}"] for level in POOLED_LEVELS}

    def box_head(self, outputs, rois):
        """Class logits ``[B, R, K + 1]`` and class-specific deltas ``[B, R, K + 1, 4]`` (float32) of ``rois``."""
        pooled = roi_align(self._pyramid(outputs), rois, output_size=(BOX_POOL, BOX_POOL),
                           sampling_ratio=SAMPLING_RATIO, aligned=self.aligned)
        shape = tf.shape(rois)[:2]
        hidden = self.box_fc7(self.box_fc6(tf.reshape(pooled, (-1, BOX_POOL * BOX_POOL * pooled.shape[-1]))))
        logits = tf.reshape(tf.cast(self.box_class(hidden), tf.float32), tf.concat([shape, [-1]], 0))
        deltas = tf.reshape(tf.cast(self.box_regression(hidden), tf.float32), tf.concat([shape, [-1, 4]], 0))
        return logits, deltas

    def mask_head(self, outputs, rois, classes):
        """Mask logits ``[B, R, 28, 28]`` (float32) of ``rois``, each of its class (0 is background)."""
        x = roi_align(self._pyramid(outputs), rois, output_size=(MASK_POOL, MASK_POOL), sampling_ratio=SAMPLING_RATIO,
                      aligned=self.aligned)
        x = tf.reshape(x, (-1, MASK_POOL, MASK_POOL, x.shape[-1]))
        for layer in self.mask_layers:
            x = layer(x)
        x = tf.reshape(tf.cast(x, tf.float32), tf.concat([tf.shape(rois)[:2], x.shape[1:]], 0))
        return tf.gather(tf.transpose(x, (0, 1, 4, 2, 3)), classes, batch_dims=2)

    def _proposals(self, outputs, count):
        return rpn.proposals(outputs["rpn_objectness"], outputs["rpn_box_regression"], self.anchors,
                             image_size=self.image_size, level_counts=self.level_counts, pre_nms_top_n=count,
                             post_nms_top_n=count)

    def loss(self, targets, outputs):
        """The loss per image, float32 ``[B]``: RPN objectness + RPN boxes + classification + boxes (+ masks).

        ``targets``: ``{"boxes": [B, M, 4] normalised yxyx, "classes": [B, M] (-1 pads), "num_boxes": [B]}``
        and, with masks, ``"masks": [B, M, H, W]`` (0/1, at the input size).
        """
        height, width = self.image_size
        boxes = tf.cast(targets["boxes"], tf.float32) * [height, width, height, width]
        classes = tf.cast(targets["classes"], tf.int32)
        valid = (tf.range(tf.shape(classes)[1])[None, :] < tf.cast(targets["num_boxes"], tf.int32)[:, None]) \
            & (classes >= 0)
        seed = keras.random.randint((2,), 0, 2**30, seed=self.seed_generator, dtype="int32")
        seeds = seed + tf.stack([tf.range(tf.shape(boxes)[0]), tf.zeros_like(valid[:, 0], tf.int32)], -1)

        objectness_targets, weights, matched = tf.map_fn(
            lambda image: rpn.rpn_targets(self.anchors, image[0], image[1], seed=image[2]),
            (boxes, valid, seeds), fn_output_signature=(tf.float32, tf.float32, tf.float32))
        total = rpn.rpn_loss(outputs["rpn_objectness"], outputs["rpn_box_regression"], self.anchors,
                             objectness_targets, weights, matched)
        proposals, proposed = self._proposals(outputs, self.train_proposals)
        candidates, usable = tf.concat([proposals, boxes], 1), tf.concat([proposed, valid], 1)
        rois, labels, truth, sampled, which = tf.map_fn(
            self._sample, (candidates, usable, boxes, valid, classes, seeds + [0, 1]),
            fn_output_signature=(tf.float32, tf.int32, tf.float32, tf.bool, tf.int32))
        total += self._box_loss(outputs, rois, labels, truth, sampled)
        if self.masks:
            total += self._mask_loss(outputs, targets["masks"], rois, labels, which)
        return total

    def _sample(self, image):
        """One image's RoIs: ``(rois [R, 4], class targets (0 background), matched boxes, sampled, matched index)``."""
        candidates, usable, boxes, valid, classes, seed = image
        labels, matched = rpn.match(iou(candidates, boxes), valid, high=ROI_IOU, low=ROI_IOU, allow_low_quality=False)
        labels = tf.where(usable, labels, -1)
        slots, sampled = rpn.sample(labels, count=self.sampled_rois, positive_fraction=POSITIVE_ROI_FRACTION, seed=seed)
        which = tf.gather(matched, slots)
        positive = sampled & (tf.gather(labels, slots) == 1)
        return (tf.gather(candidates, slots), tf.where(positive, tf.gather(classes, which) + 1, 0),
                tf.gather(boxes, which), sampled, which)

    def _box_loss(self, outputs, rois, labels, truth, sampled):
        logits, deltas = self.box_head(outputs, rois)
        weight = tf.cast(sampled, tf.float32)
        count = tf.maximum(tf.reduce_sum(weight, axis=1), 1.0)
        entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        predicted = tf.gather(deltas, labels, batch_dims=2)
        positive = sampled & (labels > 0)
        # unsampled slots may hold empty boxes, whose targets are inf: zeroed before any arithmetic (gradients too)
        targets = tf.where(positive[..., None], encode_boxes(truth, rois), 0.0)
        box = tf.reduce_sum(rpn.smooth_l1(predicted - targets), axis=-1) * tf.cast(positive, tf.float32)
        return (tf.reduce_sum(entropy * weight, axis=1) + tf.reduce_sum(box, axis=1)) / count

    def _mask_loss(self, outputs, masks, rois, labels, which):
        """Binary cross-entropy of each positive RoI's mask of its class against its box's crop of its object."""
        quota = int(self.sampled_rois * POSITIVE_ROI_FRACTION)
        slots = tf.math.top_k(tf.cast(labels > 0, tf.float32), k=quota).indices  # the positives, first come
        positive = tf.cast(tf.gather(labels, slots, batch_dims=1) > 0, tf.float32)
        rois = tf.gather(rois, slots, batch_dims=1)
        logits = self.mask_head(outputs, rois, tf.gather(labels, slots, batch_dims=1))
        size = (logits.shape[-2], logits.shape[-1])
        truth = crop_masks(masks, tf.gather(which, slots, batch_dims=1), rois, output_size=size)
        entropy = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(truth, logits), axis=(2, 3))
        return tf.reduce_sum(entropy * positive, axis=1) / tf.maximum(tf.reduce_sum(positive, axis=1), 1.0)

    def detect(self, outputs):
        """Final detections (TF Object Detection API layout, padded after ``num_detections``; see module)."""
        height, width = self.image_size
        proposals, proposed = self._proposals(outputs, self.test_proposals)
        logits, deltas = self.box_head(outputs, proposals)
        scores = tf.nn.softmax(logits)[..., 1:] * tf.cast(proposed, tf.float32)[..., None]
        boxes = decode_boxes(deltas[:, :, 1:], proposals[:, :, None, :])
        boxes = tf.clip_by_value(boxes, 0.0, [height, width, height, width])
        big = ((boxes[..., 2] - boxes[..., 0]) >= MIN_DETECTION_SIZE) & ((boxes[..., 3] - boxes[..., 1]) >= MIN_DETECTION_SIZE)
        boxes, scores, classes, count = tf.image.combined_non_max_suppression(
            boxes / [height, width, height, width], tf.where(big, scores, 0.0),
            max_output_size_per_class=MAX_DETECTIONS, max_total_size=MAX_DETECTIONS, iou_threshold=NMS_IOU,
            score_threshold=SCORE_THRESHOLD, clip_boxes=False)
        found = {"detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes,
                 "num_detections": tf.cast(count, tf.int32)}
        if self.masks:
            pixels = boxes * [height, width, height, width]
            found["detection_masks"] = tf.sigmoid(self.mask_head(outputs, pixels, tf.cast(classes, tf.int32) + 1))
        return found
