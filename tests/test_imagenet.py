"""The ImageNet path users run (`kcnn pretrain resnet18 imagenet2012 --manual-dir DIR`), end to end.

Tiny ILSVRC2012 archives in the real layout (a train tar of per-synset tars of JPEGs, a flat val
tar of JPEGs) let TFDS 4.9's `imagenet2012` builder prepare offline; the validation labels come
from the file TFDS bundles (one wnid per val image, in the sorted order of the image names).
"""

import io
import json
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf

import kcnn
from kcnn.data import dataset_info
from kcnn.train import pretrain

SYNSETS = ("n01440764", "n01443537", "n01484850")  # the first three ImageNet classes
TRAIN_PER_SYNSET = 2
VAL_IMAGES = 4
SHAPE = (32, 32, 3)


def _jpeg(rng, height=32, width=40):
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return tf.io.encode_jpeg(pixels).numpy()


def _add(tar, name, payload):
    member = tarfile.TarInfo(name)
    member.size = len(payload)
    tar.addfile(member, io.BytesIO(payload))


def _write_ilsvrc2012(manual_dir, rng):
    """ILSVRC2012_img_train.tar (per-synset tars) and ILSVRC2012_img_val.tar (flat JPEGs)."""
    with tarfile.open(manual_dir / "ILSVRC2012_img_train.tar", "w") as train:
        for synset in SYNSETS:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as synset_tar:
                for index in range(TRAIN_PER_SYNSET):
                    _add(synset_tar, f"{synset}_{10026 + index}.JPEG", _jpeg(rng))
            _add(train, f"{synset}.tar", inner.getvalue())
    val_names = [f"ILSVRC2012_val_{index:08d}.JPEG" for index in range(1, VAL_IMAGES + 1)]
    with tarfile.open(manual_dir / "ILSVRC2012_img_val.tar", "w") as val:
        for name in val_names:
            _add(val, name, _jpeg(rng))
    return val_names


def test_pretrain_resnet18_on_imagenet2012_from_manual_dir(tmp_path):
    import tensorflow_datasets as tfds
    manual_dir, data_dir, out = tmp_path / "manual", tmp_path / "tfds", tmp_path / "run"
    manual_dir.mkdir()
    val_names = _write_ilsvrc2012(manual_dir, np.random.default_rng(0))

    rows = pretrain("resnet18", "imagenet2012", out, manual_dir=str(manual_dir), data_dir=str(data_dir),
                    steps=2, precision="fp32", input_shape=SHAPE, overrides={"batch_size": 2}, verbose=0)

    # TFDS prepared the dataset in data_dir from the tars, with ImageNet's label space.
    builder = tfds.builder("imagenet2012", data_dir=str(data_dir))
    assert builder.is_prepared()
    assert builder.info.splits["train"].num_examples == len(SYNSETS) * TRAIN_PER_SYNSET
    assert builder.info.splits["validation"].num_examples == VAL_IMAGES
    info = dataset_info("imagenet2012", data_dir=str(data_dir))
    assert info.num_classes == 1000
    assert info.num_examples == {"train": len(SYNSETS) * TRAIN_PER_SYNSET, "val": VAL_IMAGES}
    assert info.class_names[:len(SYNSETS)] == SYNSETS
    # Train labels come from the synset tar names, val labels from TFDS's bundled list.
    label_of = {}
    for split in ("train", "validation"):
        for example in builder.as_dataset(split=split).as_numpy_iterator():
            label_of[example["file_name"].decode()] = info.class_names[example["label"]]
    for name, label in label_of.items():
        if not name.startswith("ILSVRC2012_val_"):
            assert name.split("_")[0] == label
    bundled = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt").read_text()
    assert {name: label_of[name] for name in val_names} == dict(zip(val_names, bundled.split()))

    # The run trained the requested steps, evaluated on the validation split and saved the model.
    history = json.loads((out / "history.json").read_text())
    assert rows == history and len(history) == 1
    assert history[0]["step"] == 2 and history[0]["epoch"] == 1
    assert np.isfinite(history[0]["loss"]) and np.isfinite(history[0]["val_loss"])
    model = kcnn.build("resnet18", weights=out / "model.weights.h5", input_shape=SHAPE)
    assert model.output_shape == (None, 1000)
    metadata = model.weights_metadata
    assert metadata["classes"] == 1000 and metadata["source"]["dataset"] == "imagenet2012"
    assert metadata["class_names"][0] == info.class_names[0] == "n01440764"
    assert list(metadata["class_names"]) == list(info.class_names)


def test_imagenet2012_without_manual_dir_fails_fast_saying_how(tmp_path):
    start = time.monotonic()
    with pytest.raises(ValueError, match="'imagenet2012' is not prepared") as error:
        dataset_info("imagenet2012", data_dir=str(tmp_path / "empty"))
    assert time.monotonic() - start < 5
    assert "--manual-dir" in str(error.value)
