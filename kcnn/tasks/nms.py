"""RetinaNet post-processing: decode the regression, score with sigmoids, class-wise NMS (TF ops, graph-safe).

>>> import numpy as np
>>> anchors = tf.constant([[0.0, 0.0, 32.0, 32.0], [0.0, 2.0, 32.0, 34.0]])  # two near-duplicates
>>> outputs = {"classification": tf.constant([[[3.0, -9.0], [2.0, 2.5]]]), "box_regression": tf.zeros((1, 2, 4))}
>>> detections = decode_detections(outputs, anchors, image_size=(64, 64), max_detections=5)
>>> int(detections["num_detections"][0]), detections["detection_classes"][0, :2].numpy()
(2, array([0., 1.], dtype=float32))
>>> detections["detection_boxes"][0, 0].numpy()
array([0. , 0. , 0.5, 0.5], dtype=float32)
"""

import tensorflow as tf

from kcnn.tasks.anchors import check_image_size, decode_boxes


def decode_detections(outputs, anchors, *, image_size, score_threshold=0.05, iou_threshold=0.5,
                      max_detections=100, pre_nms_top_k=1000):
    """Final detections of a batch of RetinaNet ``outputs`` (``{"classification", "box_regression"}``).

    ``anchors`` float32 ``[N, 4]`` pixels (``anchors_for(model)``). Keeps the
    ``pre_nms_top_k`` anchors of highest best-class score, then per-class NMS
    (``tf.image.combined_non_max_suppression``: boxes of different classes never
    suppress each other) above ``score_threshold``. Works eagerly and in a
    ``tf.function`` / SavedModel with a static or unknown batch size. Returns
    (the TF Object Detection API's layout, padded with zeros after ``num_detections``):

    * ``detection_boxes`` float32 ``[B, max_detections, 4]`` ymin, xmin, ymax, xmax,
      normalised by ``image_size`` and clipped to [0, 1];
    * ``detection_scores`` float32 ``[B, max_detections]`` sigmoid probabilities;
    * ``detection_classes`` float32 ``[B, max_detections]`` class ids (0-based);
    * ``num_detections`` int32 ``[B]``.
    """
    height, width = check_image_size(image_size)
    if not 0 <= score_threshold < 1 or not 0 < iou_threshold <= 1:
        raise ValueError(f"need 0 <= score_threshold < 1 and 0 < iou_threshold <= 1, "
                         f"got {score_threshold} and {iou_threshold}")
    if max_detections < 1 or pre_nms_top_k < 1:
        raise ValueError(f"max_detections and pre_nms_top_k must be >= 1, got {max_detections} and {pre_nms_top_k}")
    scores = tf.sigmoid(tf.cast(outputs["classification"], tf.float32))  # [B, N, K]
    boxes = decode_boxes(tf.cast(outputs["box_regression"], tf.float32), anchors)
    boxes = tf.clip_by_value(boxes / [height, width, height, width], 0.0, 1.0)
    top = tf.math.top_k(tf.reduce_max(scores, axis=-1), k=tf.minimum(pre_nms_top_k, tf.shape(scores)[1])).indices
    scores, boxes = tf.gather(scores, top, batch_dims=1), tf.gather(boxes, top, batch_dims=1)
    boxes, scores, classes, count = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores, max_output_size_per_class=max_detections, max_total_size=max_detections,
        iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
    return {"detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes,
            "num_detections": tf.cast(count, tf.int32)}
