"""The input normalisation a set of weights was trained with, as data.

Images go in as RGB pixels in [0, 255] (uint8 or float), NHWC; what comes out is
what the network's first convolution saw during training.

- ``torch``: RGB / 255, minus ImageNet mean, over ImageNet std (torchvision, timm).
- ``caffe``: RGB -> BGR, minus the BGR ImageNet mean, no scaling (keras.applications VGG/ResNet).
- ``inception``: RGB / 255, minus 0.5, over 0.5, i.e. [-1, 1] (torchvision GoogLeNet, whose
  ImageNet weights run with ``transform_input=True``).
- ``none``: pixels as they are.

>>> import numpy as np
>>> np.asarray(PRESETS["inception"](np.array([[[[0, 255, 127.5]]]]))).tolist()
[[[[-1.0, 1.0, 0.0]]]]
"""

import dataclasses

from kcnn.layers.normalize import Normalize, normalize


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    name: str
    channel_order: str = "RGB"
    scale: float = 1.0
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)

    def __call__(self, images):
        """Normalises a batch of RGB [0, 255] images (any array type Keras takes)."""
        return normalize(images, channel_order=self.channel_order, scale=self.scale, mean=self.mean, std=self.std)

    def layer(self, name="preprocessing"):
        """This normalisation as a serializable Keras layer (``kcnn.layers.Normalize``)."""
        return Normalize(preset=self.name, channel_order=self.channel_order, scale=self.scale, mean=self.mean,
                         std=self.std, name=name)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing field {unknown[0]!r}; accepted: {', '.join(sorted(known))}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = {
    "torch": Preprocessing("torch", "RGB", 1 / 255, IMAGENET_MEAN, IMAGENET_STD),
    "caffe": Preprocessing("caffe", "BGR", 1.0, (103.939, 116.779, 123.68)),
    "inception": Preprocessing("inception", "RGB", 1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "none": Preprocessing("none"),
}
GRAYSCALE = Preprocessing("gray", "RGB", 1 / 255, (0.5,), (0.5,))


def default_preprocessing(channels):
    """The normalisation kcnn trains with from scratch: ImageNet mean/std for colour, [-1, 1] for grayscale."""
    return PRESETS["torch"] if channels == 3 else GRAYSCALE


def preset(name):
    """A preset by name, with a clear error for an unknown one."""
    if name not in PRESETS:
        raise ValueError(f"unknown preprocessing {name!r}; accepted: {', '.join(PRESETS)}")
    return PRESETS[name]
