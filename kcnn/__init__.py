"""kcnn: the classic CNNs of the ImageNet era, exact, for Keras 3.

>>> import kcnn
>>> model = kcnn.build("inception_v1")
>>> model.output_shape
(None, 1000)
>>> "resnet1202" in kcnn.list_models(family="cifar_resnet")
True
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kcnn.analysis import Profile, profile  # noqa: E402
from kcnn.backbone import backbone, feature_taps  # noqa: E402
from kcnn.models import build, deep_graph_recursion, smallest_input_size, variant_options  # noqa: E402
from kcnn.registry import ModelSpec, list_models  # noqa: E402
from kcnn.registry import get as model_info  # noqa: E402
from kcnn.weights.importer import import_weights  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "ModelSpec", "Profile", "backbone", "build", "deep_graph_recursion", "feature_taps",
    "import_weights", "list_models", "model_info", "profile", "smallest_input_size", "variant_options",
]
