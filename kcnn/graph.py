"""Reading a functional model's graph: which layer feeds which.

>>> import keras
>>> x = keras.Input((4,), name="x")
>>> model = keras.Model(x, keras.layers.Dense(2, name="fc")(x))
>>> parents(model.get_layer("fc")), consumers(model)
(['x'], {'x': ['fc']})
"""

import keras


def parents(layer):
    """Names of the layers whose outputs ``layer`` takes (none for an input layer)."""
    if isinstance(layer, keras.layers.InputLayer):
        return []
    return [t._keras_history.operation.name for t in keras.tree.flatten(layer.input)]


def consumers(model):
    """``{layer name: [names of the layers that take its output]}`` for every layer that has any."""
    taken = {}
    for layer in model.layers:
        for parent in parents(layer):
            taken.setdefault(parent, []).append(layer.name)
    return taken
