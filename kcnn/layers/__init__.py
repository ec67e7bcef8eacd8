"""Building blocks of the zoo (imports nothing above ``kcnn.layers``)."""

from kcnn.layers.common import batch_norm, conv, conv_bn_act, max_pool, scaled_widths
from kcnn.layers.custom import ChannelPadShortcut, ConnectionTableConv2D, LocalResponseNormalization
from kcnn.layers.inception import inception_module
from kcnn.layers.normalize import Normalize, normalize
from kcnn.layers.residual import SHORTCUTS, residual_block

__all__ = [
    "ChannelPadShortcut", "ConnectionTableConv2D", "LocalResponseNormalization", "Normalize", "SHORTCUTS",
    "batch_norm", "conv", "conv_bn_act", "inception_module", "max_pool", "normalize", "residual_block",
    "scaled_widths",
]
