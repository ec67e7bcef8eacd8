"""Figures of predictions a person would rather look at than read: ground truth next to the model's.

Images are shown as the loaders give them (pixel values 0..255); masks as opaque class
colours over the dimmed image with a legend (ignored pixels white), boxes as labelled
rectangles (solid: truth; dashed: predictions with their scores), instance masks in their box's colour.
"""

import numpy as np
from matplotlib.patches import Rectangle

from kcnn.train.history import save_figure, subplots

PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
                    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0)]) / 255.0


def _colours(count):
    reps = -(-count // len(PALETTE))
    return np.tile(PALETTE, (reps, 1))[:count]


def _image(axis, image, title):
    image = np.asarray(image, dtype=np.float32)
    image = image[..., 0] if image.shape[-1] == 1 else image
    axis.imshow(np.clip(image / 255.0, 0, 1), cmap="gray" if image.ndim == 2 else None)
    axis.set_title(title, fontsize=9)
    axis.axis("off")


def _overlay(axis, image, mask, colours, ignore_label, title):
    """The class colours, opaque, over the image dimmed to gray (so a shape's own colour never blends in)."""
    gray = np.asarray(image, dtype=np.float32).mean(axis=-1, keepdims=True)
    _image(axis, np.repeat(gray * 0.5, 3, axis=-1), title)
    shown = np.where(mask == ignore_label, 0, mask)
    ignored = (mask == ignore_label)[..., None]
    rgb = np.where(ignored, 1.0, colours[np.clip(shown, 0, len(colours) - 1)])
    alpha = np.where(((shown > 0) | (mask == ignore_label))[..., None], 0.9, 0.0)
    axis.imshow(np.concatenate([rgb, alpha], axis=-1))


def masks(images, truth, predicted, class_names, path, *, ignore_label=255, count=4):
    """A grid: image, true mask and predicted mask for the first ``count`` images; returns ``path``."""
    count = min(count, len(images))
    colours = _colours(len(class_names))
    figure, axes = subplots(count, 3, figsize=(9, 3 * count), squeeze=False)
    for row in range(count):
        _image(axes[row, 0], images[row], "image")
        _overlay(axes[row, 1], images[row], truth[row], colours, ignore_label, "ground truth")
        _overlay(axes[row, 2], images[row], predicted[row], colours, ignore_label, "prediction")
    handles = [Rectangle((0, 0), 1, 1, color=colours[i]) for i in range(1, len(class_names))]
    figure.legend(handles, list(class_names[1:]), loc="lower center", ncol=min(6, len(handles)))
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(figure, path)


def _boxes(axis, boxes, classes, colours, class_names, scores=None):
    height, width = axis.get_images()[0].get_array().shape[:2]
    for index, (box, label) in enumerate(zip(boxes, classes)):
        top, left, bottom, right = box[0] * height, box[1] * width, box[2] * height, box[3] * width
        colour = colours[int(label) % len(colours)]
        axis.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, color=colour,
                                          linewidth=1.5, linestyle="-" if scores is None else "--"))
        text = class_names[int(label)] + ("" if scores is None else f" {scores[index]:.2f}")
        axis.text(left, top, text, color="white", fontsize=6, va="bottom",
                  bbox={"facecolor": colour, "alpha": 0.7, "pad": 0.5, "linewidth": 0})


def _instances(axis, masks, classes, colours):
    """Each instance mask (0/1 at the image's size) half-transparent in its class colour."""
    for mask, label in zip(masks, classes):
        rgba = np.zeros((*mask.shape, 4))
        rgba[..., :3], rgba[..., 3] = colours[int(label) % len(colours)], 0.45 * (np.asarray(mask) > 0)
        axis.imshow(rgba)


def detections(images, truth, predicted, class_names, path, *, count=4, min_score=0.3):
    """A grid: true boxes and predicted boxes (score >= ``min_score``) for the first ``count`` images.

    ``truth``: per image (boxes normalised yxyx, classes[, masks]); ``predicted``: per image (boxes, scores,
    classes[, masks]); masks (instance segmentation) are 0/1 maps at the image's size.
    """
    count = min(count, len(images))
    colours = _colours(max(len(class_names), 1) + 1)[1:]
    figure, axes = subplots(count, 2, figsize=(6, 3 * count), squeeze=False)
    for row in range(count):
        _image(axes[row, 0], images[row], "ground truth")
        boxes, classes, *masks = truth[row]
        _instances(axes[row, 0], masks[0] if masks else [], classes, colours)
        _boxes(axes[row, 0], boxes, classes, colours, class_names)
        boxes, scores, classes, *masks = predicted[row]
        keep = scores >= min_score
        _image(axes[row, 1], images[row], f"prediction (score >= {min_score})")
        _instances(axes[row, 1], masks[0][keep] if masks else [], classes[keep], colours)
        _boxes(axes[row, 1], boxes[keep], classes[keep], colours, class_names, scores[keep])
    figure.tight_layout()
    return save_figure(figure, path)


def prediction(image, boxes, scores, classes, class_names, path, *, masks=None, min_score=0.3):
    """One image (0..255) with its detections of score >= ``min_score`` (boxes normalised yxyx, and instance
    masks at the image's size when given), as ``kcnn predict --draw`` saves it; returns ``path``."""
    colours = _colours(max(len(class_names), 1) + 1)[1:]
    height, width = np.asarray(image).shape[:2]
    figure, axes = subplots(1, 1, figsize=(6, 6 * height / width), squeeze=False)
    keep = np.asarray(scores) >= min_score
    _image(axes[0, 0], image, f"score >= {min_score}")
    _instances(axes[0, 0], np.asarray(masks)[keep] if masks is not None else [], np.asarray(classes)[keep], colours)
    _boxes(axes[0, 0], np.asarray(boxes)[keep], np.asarray(classes)[keep], colours, class_names,
           np.asarray(scores)[keep])
    figure.tight_layout()
    return save_figure(figure, path)
