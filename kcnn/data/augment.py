"""Training augmentations of the classic papers and the evaluation transforms, per image.

Each training augmentation takes a float32 image [H, W, C] with values in [0, 255], the output
size (H, W) and a stateless seed (shape [2] integers), and returns a float32 image of the output
size with values still in [0, 255]. The same seed gives the same image:

>>> image = tf.random.stateless_uniform([40, 50, 3], seed=(0, 0), maxval=255.0)
>>> out = alexnet(image, (32, 32), seed=(1, 2))
>>> out.shape
TensorShape([32, 32, 3])
>>> bool(tf.reduce_all(out == alexnet(image, (32, 32), seed=(1, 2))))
True

Evaluation has one transform per recipe, the same for training's validation, ``kcnn evaluate``
and the exported SavedModel (the weights file records its name): after the ImageNet-style
augmentations (CENTER_CROP_AUGMENTATIONS) "center_crop" resizes the shorter side to
max(size)/0.875 keeping the aspect ratio and crops the central size; after the others "resize"
resizes the whole image to the size. `eval_transform` converts the channels first, as training does:

>>> eval_transform_for("resnet_imagenet"), eval_transform_for("cifar")
('center_crop', 'resize')
>>> eval_transform(image, (32, 32), "center_crop", channels=1).shape
TensorShape([32, 32, 1])
>>> ten_crops(image, (32, 32), channels=3).shape
TensorShape([10, 32, 32, 3])
"""

import tensorflow as tf

AUGMENTATIONS = ("alexnet", "vgg", "resnet_imagenet", "googlenet", "cifar", "shift", "none")
# The augmentations that crop ImageNet-style, so evaluation center-crops as well.
CENTER_CROP_AUGMENTATIONS = ("alexnet", "vgg", "resnet_imagenet", "googlenet")
EVAL_TRANSFORMS = ("center_crop", "resize")
EVAL_CROP_FRACTION = 0.875  # 224 of 256

# ImageNet RGB principal components on the [0, 1] scale (Krizhevsky et al. 2012, section 4.1);
# the columns of the matrix are the eigenvectors.
_PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
_PCA_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
_PCA_ALPHA_STDDEV = 0.1
_CIFAR_PADDING = 4


def resize(image, image_size, seed=None):
    """Bilinear resize to image_size (the "none" augmentation; seed is accepted and unused)."""
    return tf.image.resize(image, image_size)


def alexnet(image, image_size, seed):
    """AlexNet: shorter side to 256/224 of the size, random crop, flip, PCA lighting (RGB only)."""
    crop_seed, flip_seed, lighting_seed = tf.unstack(tf.random.split(seed, 3))
    image = resize_shorter_side(image, round(max(image_size) * 256 / 224))
    image = _random_crop_and_flip(image, image_size, crop_seed, flip_seed)
    if image.shape[-1] == 3:
        image = pca_lighting(image, lighting_seed)
    return image


def vgg(image, image_size, seed):
    """VGG scale jittering: shorter side to S uniform in [256, 512] (times size/224), crop, flip."""
    scale_seed, crop_seed, flip_seed = tf.unstack(tf.random.split(seed, 3))
    smallest, largest = (round(max(image_size) * side / 224) for side in (256, 512))
    shorter = tf.random.stateless_uniform(
        [], scale_seed, minval=smallest, maxval=largest + 1, dtype=tf.int32
    )
    image = resize_shorter_side(image, shorter)
    return _random_crop_and_flip(image, image_size, crop_seed, flip_seed)


def inception_crop(image, image_size, seed):
    """Random-resized crop (area 8%-100%, aspect 3/4-4/3) and flip: ResNet and GoogLeNet."""
    crop_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.ensure_shape(tf.slice(image, begin, size), [None, None, image.shape[-1]])
    return tf.image.stateless_random_flip_left_right(resize(crop, image_size), flip_seed)


def cifar(image, image_size, seed):
    """CIFAR (He et al. 2016): pad 4 zero pixels each side, random crop back, flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
    padding = [[_CIFAR_PADDING, _CIFAR_PADDING], [_CIFAR_PADDING, _CIFAR_PADDING], [0, 0]]
    image = tf.pad(resize(image, image_size), padding)
    return _random_crop_and_flip(image, image_size, crop_seed, flip_seed)


def shift(image, image_size, seed):
    """Translation only (digits, where a mirror image is another symbol): pad 4, random crop back."""
    padding = [[_CIFAR_PADDING, _CIFAR_PADDING], [_CIFAR_PADDING, _CIFAR_PADDING], [0, 0]]
    image = tf.pad(resize(image, image_size), padding)
    return tf.image.stateless_random_crop(image, [*image_size, image.shape[-1]], seed)


_TRAIN_TRANSFORMS = {
    "alexnet": alexnet,
    "vgg": vgg,
    "resnet_imagenet": inception_crop,
    "googlenet": inception_crop,
    "cifar": cifar,
    "shift": shift,
    "none": resize,
}


def train_transform(name):
    """The augmentation function called `name` (one of AUGMENTATIONS)."""
    return _TRAIN_TRANSFORMS[_check_augmentation(name)]


def eval_transform_for(augment):
    """The evaluation transform of a recipe whose training augmentation is `augment`."""
    return "center_crop" if _check_augmentation(augment) in CENTER_CROP_AUGMENTATIONS else "resize"


def check_eval_transform(name):
    """`name` if it is one of EVAL_TRANSFORMS; a ValueError naming them otherwise."""
    if name not in EVAL_TRANSFORMS:
        raise ValueError(
            f"unknown evaluation transform {name!r}; expected one of {', '.join(EVAL_TRANSFORMS)}")
    return name


def eval_transform(image, image_size, name, *, channels):
    """Evaluation of one image: `channels` (1 or 3) first, then the transform `name` to image_size.

    "center_crop": the shorter side to max(size)/0.875 keeping the aspect ratio, the central size;
    "resize": a bilinear resize of the whole image (aspect ratio not kept).
    """
    check_eval_transform(name)
    image = with_channels(image, channels)
    if name == "resize":
        return resize(image, image_size)
    return center_crop(_eval_resize(image, image_size), image_size)


def ten_crops(image, image_size, *, channels):
    """AlexNet's test crops of one image, [10, H, W, C]: four corners and the center, then mirrored.

    They are cut from the central (H, W)/0.875 window of the image resized as by "center_crop",
    whatever the recipe: the shorter side to max(size)/0.875, keeping the aspect ratio.
    """
    height, width = image_size
    window_height, window_width = (round(side / EVAL_CROP_FRACTION) for side in image_size)
    window = center_crop(_eval_resize(with_channels(image, channels), image_size),
                         (window_height, window_width))
    bottom, right = window_height - height, window_width - width
    offsets = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    crops = [window[top:top + height, left:left + width] for top, left in offsets]
    return tf.stack(crops + [tf.reverse(crop, axis=[1]) for crop in crops])


def center_crop(image, image_size):
    """The central image_size of an image at least that large."""
    height, width = image_size
    offsets = (tf.shape(image)[:2] - tf.constant([height, width])) // 2
    return tf.image.crop_to_bounding_box(image, offsets[0], offsets[1], height, width)


def with_channels(image, channels):
    """Gray to RGB by repeating, RGB to gray by luminance; anything else is refused."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    raise ValueError(f"cannot convert images of {have} channels to {channels}; expected 1 or 3")


def resize_shorter_side(image, shorter):
    """Bilinear resize keeping the aspect ratio so that the shorter side becomes `shorter`."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    shorter = tf.cast(shorter, tf.float32)
    new_shape = tf.maximum(tf.round(shape * shorter / tf.reduce_min(shape)), shorter)
    return tf.image.resize(image, tf.cast(new_shape, tf.int32))


def _check_augmentation(name):
    if name not in _TRAIN_TRANSFORMS:
        raise ValueError(
            f"unknown augmentation {name!r}; expected one of {', '.join(AUGMENTATIONS)}")
    return name


def _eval_resize(image, image_size):
    return resize_shorter_side(image, round(max(image_size) / EVAL_CROP_FRACTION))


def pca_lighting(image, seed):
    """Krizhevsky's lighting noise: add RGB principal components scaled by alpha ~ N(0, 0.1)."""
    alpha = tf.random.stateless_normal([3], seed, stddev=_PCA_ALPHA_STDDEV)
    weights = alpha * tf.constant(_PCA_EIGENVALUES)
    rgb_shift = tf.linalg.matvec(tf.constant(_PCA_EIGENVECTORS), weights)
    return tf.clip_by_value(image + 255.0 * rgb_shift, 0.0, 255.0)


def _random_crop_and_flip(image, image_size, crop_seed, flip_seed):
    height, width = image_size
    image = tf.image.stateless_random_crop(image, [height, width, image.shape[-1]], crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)
