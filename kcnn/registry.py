"""One explicit registry of the zoo: names, aliases, defaults and metadata.

>>> from kcnn import registry
>>> registry.get("googlenet").name
'inception_v1'
>>> registry.get("resnet5")
Traceback (most recent call last):
...
ValueError: unknown model 'resnet5'; did you mean: resnet56, resnet50, resnet152? (kcnn.list_models() lists all 30)
"""

import dataclasses
import difflib
import importlib
from typing import Any, Callable, Mapping, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about one registered architecture.

    ``builder`` is the family's builder; ``options`` the keyword options that
    make this architecture out of the family (e.g. ``depth=50``).
    ``lecture`` holds the figures the lecture reports (params, error), as text.
    """

    name: str
    family: str
    builder: Callable[..., Any]
    options: Mapping[str, Any]
    input_shape: Tuple[int, int, int]
    classes: int
    dataset: str
    year: int
    paper: str
    aliases: Tuple[str, ...] = ()
    lecture: Mapping[str, str] = dataclasses.field(default_factory=dict)
    description: str = ""
    # Regex whose first group names the block a layer belongs to (profile grouping).
    block_pattern: str = r"^(.*)$"


_MODELS: dict = {}
_ALIASES: dict = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Adds ``spec`` to the zoo; a name or alias that is taken raises ``ValueError``."""
    for key in (spec.name, *spec.aliases):
        if key in _MODELS or key in _ALIASES:
            raise ValueError(f"model name {key!r} is already registered")
    _MODELS[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def _zoo() -> dict:
    """The registered specs. The zoo's table (``kcnn.models.catalog``) registers itself when first imported;
    ``import kcnn`` imports nothing heavy, so the first lookup imports it (its builders need Keras)."""
    if not _MODELS:
        importlib.import_module("kcnn.models.catalog")
    return _MODELS


def get(name: str) -> ModelSpec:
    """The spec registered under ``name`` or one of its aliases."""
    _zoo()
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _MODELS:
        return _MODELS[key]
    close = difflib.get_close_matches(key, list(_MODELS) + list(_ALIASES), n=3, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}{hint} (kcnn.list_models() lists all {len(_MODELS)})"
    )


def list_models(family: Optional[str] = None, dataset: Optional[str] = None) -> list:
    """Registered names in registration order, optionally filtered by family or dataset.

    >>> list_models(family="vgg")[:3]
    ['vgg11', 'vgg11_bn', 'vgg13']
    >>> list_models(dataset="cifar10")[0]
    'resnet20'
    """
    families = {spec.family for spec in _zoo().values()}
    datasets = {spec.dataset for spec in _MODELS.values()}
    if family is not None and family not in families:
        raise ValueError(f"unknown family {family!r}; accepted: {', '.join(sorted(families))}")
    if dataset is not None and dataset not in datasets:
        raise ValueError(f"unknown dataset {dataset!r}; accepted: {', '.join(sorted(datasets))}")
    return [
        spec.name
        for spec in _MODELS.values()
        if (family is None or spec.family == family) and (dataset is None or spec.dataset == dataset)
    ]
