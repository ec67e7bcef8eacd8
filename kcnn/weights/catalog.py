"""Where the official ImageNet weights of each supported architecture come from, as their sources publish them.

Each entry: the kcnn model and variant the file fits, its URL, the hash its source
publishes (torchvision: the first 8 hex digits of the sha256, in the file name;
keras.applications: an md5; timm on the Hugging Face hub: none in timm's code),
and the ImageNet-1k validation accuracy the source reports (single 224 crop).
The importer checks a file bearing an entry's name against that hash, and
recognises a renamed official file by its hash. ``using(table)`` puts another table
in the catalogue's place for a block (tests serving files from 127.0.0.1, a mirror).

>>> entry = entries("torchvision", "resnet50")[0]
>>> entry.file_name, entry.options, entry.top1
('resnet50-0676ba61.pth', {'version': 'v1.5'}, 76.13)
"""

import contextlib
import dataclasses
import hashlib
import importlib.resources
import os


@dataclasses.dataclass(frozen=True)
class OfficialWeights:
    library: str
    model: str
    options: dict
    url: str
    hash_kind: str  # "sha256-prefix", "md5" or "none"
    hash: str
    top1: float | None
    top5: float | None
    preprocessing: str
    note: str = ""

    @property
    def file_name(self):
        return self.url.rsplit("/", 1)[-1]

    def matches(self, digests):
        """Whether ``digests`` (``{"sha256": hex, "md5": hex}``) are this file's published hash."""
        kind = "md5" if self.hash_kind == "md5" else "sha256"
        return self.hash_kind != "none" and digests[kind].startswith(self.hash)


TORCHVISION = "https://download.pytorch.org/models/"
# name, kcnn options, file, top-1, top-5 (torchvision 0.29 weights metadata, IMAGENET1K_V1 unless noted)
_TORCHVISION_ROWS = (
    ("alexnet", {"variant": "torchvision"}, "alexnet-owt-7be5be79.pth", 56.522, 79.066),
    ("vgg11", {}, "vgg11-8a719046.pth", 69.02, 88.628),
    ("vgg11_bn", {}, "vgg11_bn-6002323d.pth", 70.37, 89.81),
    ("vgg13", {}, "vgg13-19584684.pth", 69.928, 89.246),
    ("vgg13_bn", {}, "vgg13_bn-abd245e5.pth", 71.586, 90.374),
    ("vgg16", {}, "vgg16-397923af.pth", 71.592, 90.382),
    ("vgg16_bn", {}, "vgg16_bn-6c64b313.pth", 73.36, 91.516),
    ("vgg19", {}, "vgg19-dcbb9e9d.pth", 72.376, 90.876),
    ("vgg19_bn", {}, "vgg19_bn-c79401a0.pth", 74.218, 91.842),
    ("inception_v1", {"variant": "torchvision"}, "googlenet-1378be20.pth", 69.778, 89.53),
    ("resnet18", {"version": "v1.5"}, "resnet18-f37072fd.pth", 69.758, 89.078),
    ("resnet34", {"version": "v1.5"}, "resnet34-b627a593.pth", 73.314, 91.42),
    ("resnet50", {"version": "v1.5"}, "resnet50-0676ba61.pth", 76.13, 92.862),
    ("resnet50", {"version": "v1.5"}, "resnet50-11ad3fa6.pth", 80.858, 95.434),
    ("resnet101", {"version": "v1.5"}, "resnet101-63fe2227.pth", 77.374, 93.546),
    ("resnet101", {"version": "v1.5"}, "resnet101-cd907fc2.pth", 81.886, 95.78),
    ("resnet152", {"version": "v1.5"}, "resnet152-394f9c45.pth", 78.312, 94.046),
    ("resnet152", {"version": "v1.5"}, "resnet152-f82ba261.pth", 82.284, 96.002),
)
_V2_FILES = ("resnet50-11ad3fa6.pth", "resnet101-cd907fc2.pth", "resnet152-f82ba261.pth")
_V2_NOTE = "IMAGENET1K_V2 (new recipe); evaluated with a 232 resize, 224 crop"

KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/"
# name, file, md5 (keras.applications), top-1, top-5 (keras.io applications table)
_KERAS_ROWS = (
    ("vgg16", "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b", 71.3, 90.1),
    ("vgg16", "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc", None, None),
    ("vgg19", "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5", "cbe5617147190e668d6c5d5026f83318", 71.3, 90.0),
    ("vgg19", "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "253f8cb515780f3b799900260a226db6", None, None),
    ("resnet50", "resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5", "2cb95161c43110f7111970584f804107", 74.9, 92.1),
    ("resnet50", "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "4d473c1dd8becc155b73f8504c6f6626", None, None),
    ("resnet101", "resnet/resnet101_weights_tf_dim_ordering_tf_kernels.h5", "f1aeb4b969a6efcfb50fad2f0c20cfc5", 76.4, 92.8),
    ("resnet101", "resnet/resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5", "88cf7a10940856eca736dc7b7e228a21", None, None),
    ("resnet152", "resnet/resnet152_weights_tf_dim_ordering_tf_kernels.h5", "100835be76be38e30d865e96f2aaae62", 76.6, 93.1),
    ("resnet152", "resnet/resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5", "ee4c566cf9a93f14d82f913c2dc6dd0c", None, None),
)

HUGGING_FACE = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
_TIMM_NOTE = "torchvision's V1 weights in timm's layout (timm name <model>.tv_in1k); accuracy as torchvision reports"

CATALOG = (
    *(OfficialWeights("torchvision", name, options, TORCHVISION + file, "sha256-prefix",
                      file.rsplit("-", 1)[1].split(".")[0], top1, top5,
                      "inception" if name == "inception_v1" else "torch", _V2_NOTE if file in _V2_FILES else "")
      for name, options, file, top1, top5 in _TORCHVISION_ROWS),
    *(OfficialWeights("keras", name, {"version": "v1"} if name.startswith("resnet") else {}, KERAS + file,
                      "md5", md5, top1, top5, "caffe", "" if top1 else "no classifier (include_top=False)")
      for name, file, md5, top1, top5 in _KERAS_ROWS),
    *(OfficialWeights("timm", name, options, HUGGING_FACE.format(f"{name}.tv_in1k"), "none", "",
                      top1, top5, "torch", _TIMM_NOTE)
      for name, options, file, top1, top5 in _TORCHVISION_ROWS
      if name.startswith(("vgg", "resnet")) and file not in _V2_FILES),
)

_replacement = None  # the table ``using`` put in CATALOG's place, if any


def imagenet_class_names():
    """The 1,000 ImageNet-1k class names in the index order every supported source uses."""
    text = importlib.resources.files("kcnn.weights").joinpath("imagenet_classes.txt").read_text("utf-8")
    return text.splitlines()


@contextlib.contextmanager
def using(table):
    """Makes ``table`` (``OfficialWeights`` rows) the catalogue inside the block: ``entries``,
    ``identify``, ``kcnn weights list`` and ``kcnn.weights.fetch`` see only its rows.

    >>> row = OfficialWeights("torchvision", "resnet18", {"version": "v1.5"},
    ...                       "http://127.0.0.1:8000/resnet18-0123abcd.pth", "sha256-prefix", "0123abcd",
    ...                       69.758, 89.078, "torch")
    >>> with using([row]):
    ...     [entry.url for entry in entries(model="resnet18")]
    ['http://127.0.0.1:8000/resnet18-0123abcd.pth']
    >>> len(entries(model="resnet18"))
    2
    """
    global _replacement
    previous, _replacement = _replacement, tuple(table)
    try:
        yield
    finally:
        _replacement = previous


def entries(library=None, model=None):
    """Catalogue entries, optionally of one library and/or one kcnn model."""
    return [entry for entry in (CATALOG if _replacement is None else _replacement)
            if library in (None, entry.library) and model in (None, entry.model)]


def file_digests(path, chunk=1 << 20):
    """``{"sha256": hex, "md5": hex}`` of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5()  # noqa: S324 (keras.applications publishes md5)
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def identify(library, path, digests):
    """The catalogue entry ``path`` is, by name or (for a renamed file) by hash; ``None`` if none.

    A file bearing an official name with another hash (a truncated or altered
    download) raises.
    """
    name = os.path.basename(path)
    for entry in entries(library):
        if entry.hash_kind != "none" and entry.file_name == name:
            if not entry.matches(digests):
                kind = "md5" if entry.hash_kind == "md5" else "sha256"
                raise ValueError(f"{name!r} is not the file {library} publishes: its {kind} is "
                                 f"{digests[kind][:16]}..., expected {entry.hash}...; "
                                 f"download it again from {entry.url}")
            return entry
    return next((entry for entry in entries(library) if entry.matches(digests)), None)
