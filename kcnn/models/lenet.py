"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), 32x32x1 input.

C1 conv 6@5x5 -> S2 subsample -> C3 conv 16@5x5 -> S4 subsample -> C5 conv 120@5x5
-> F6 84 -> output. Subsampling is 2x2 average pooling (the paper's trainable
per-map coefficient and bias are left out, as in the usual 61,706-parameter count);
the output layer is linear instead of the paper's RBF units.

>>> import kcnn
>>> kcnn.build("lenet5").count_params(), kcnn.build("lenet5", connection_table=True).count_params()
(61706, 60806)
"""

from keras import layers

from kcnn.layers import ConnectionTableConv2D, conv
from kcnn.models.heads import dense_classifier, without_top

# LeNet-5 Table I: which S2 maps (columns 0-5) feed each of C3's 16 maps.
C3_CONNECTIONS = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


def build_lenet(inputs, *, include_top, pooling, classes, classifier_activation,
                connection_table=False, activation="tanh"):
    """``connection_table=True`` wires C3 as the paper's Table I (60,806 params at 10 classes)."""
    x = conv(inputs, 6, 5, padding=0, activation=activation, name="c1")
    x = layers.AveragePooling2D(2, name="s2")(x)
    if connection_table:
        x = ConnectionTableConv2D(C3_CONNECTIONS, 5, name="c3")(x)
        x = layers.Activation(activation, name="c3_act")(x)
    else:
        x = conv(x, 16, 5, padding=0, activation=activation, name="c3")
    x = layers.AveragePooling2D(2, name="s4")(x)
    x = conv(x, 120, 5, padding=0, activation=activation, name="c5")
    if not include_top:
        return without_top(x, pooling)
    return dense_classifier(x, classes, classifier_activation, units=(84,), dropout=0.0,
                            hidden_activation=activation)
