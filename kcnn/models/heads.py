"""The classifier tops shared by the families (keras.applications conventions).

``include_top=False`` returns the feature map, or its global ``"avg"``/``"max"``
pooling when ``pooling`` is given.
"""

from keras import layers

POOLINGS = (None, "avg", "max")


def without_top(x, pooling):
    """The network's output when the classifier is left off."""
    if pooling is None:
        return x
    pool = layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D
    return pool(name=f"{pooling}_pool")(x)


def predictions(x, classes, activation, name="predictions"):
    """The last linear layer, named ``predictions`` like keras.applications.

    It computes in float32 whatever the mixed-precision policy, so logits and softmax
    keep float32's range (the Keras mixed-precision guide's advice).
    """
    return layers.Dense(classes, activation=activation, dtype="float32", name=name)(x)


def pooled_classifier(x, classes, activation, *, dropout=0.0):
    """Global average pool -> dropout -> linear (ResNet, GoogLeNet)."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return predictions(x, classes, activation)


def dense_classifier(x, classes, activation, *, units, dropout, hidden_activation="relu"):
    """Flatten -> ``fc1``.. hidden layers (ReLU unless told) and dropout -> linear (LeNet, AlexNet, VGG).

    Needs a fixed input size: the first hidden layer's width depends on it.
    """
    if None in x.shape[1:]:
        raise ValueError(
            "include_top=True flattens the feature map and needs a fixed input size; "
            "pass input_shape=(H, W, C) or include_top=False"
        )
    x = layers.Flatten(name="flatten")(x)
    for i, width in enumerate(units, start=1):
        x = layers.Dense(width, activation=hidden_activation, name=f"fc{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return predictions(x, classes, activation)
