"""The zoo: family builders (``lenet``, ``alexnet``, ``vgg``, ``googlenet``, ``resnet``) and ``build``."""

from kcnn.models.factory import build, deep_graph_recursion, smallest_input_size, variant_options

__all__ = ["build", "deep_graph_recursion", "smallest_input_size", "variant_options"]
