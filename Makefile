# `make demo` and `make test` set themselves up: a virtualenv in .venv with pinned dependencies.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-parity bench bench-small-data clean

$(STAMP): setup.py constraints.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

# the main job: a zoo backbone fine-tuned for segmentation on the generated shapes (offline, CPU);
# --resume makes a second `make demo` (or one after an interruption) continue the same run
demo: $(STAMP)
	$(VENV)/bin/kcnn finetune --backbone resnet18 --task segmentation --head unet --dataset shapes \
		--epochs 8 --out runs/demo-segmentation --resume
	$(VENV)/bin/kcnn evaluate runs/demo-segmentation --dataset shapes

test: $(STAMP)
	$(PYTHON) -m pytest -n 2 --durations=15

# torchvision parity: installs torch + torchvision (~5.5 GB) into the same virtualenv
test-parity: $(STAMP)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,parity]'
	$(PYTHON) -m pytest -n 2 -m parity tests/test_parity_torchvision.py tests/test_parity_rcnn.py

bench: $(STAMP)
	$(PYTHON) benchmarks/resnet50_vs_keras_applications.py

# from scratch on a small folder of real photographs with pasted objects (benchmarks/photo_objects.py):
# kcnn finetune's plain commands, with their defaults (benchmarks/README.md has the figures)
bench-small-data: $(STAMP)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	$(PYTHON) benchmarks/photo_objects.py --out runs/photo_objects
	$(VENV)/bin/kcnn finetune --backbone resnet18 --task segmentation --dataset runs/photo_objects/masks \
		--image-size 128 --out runs/photo-segmentation --resume
	$(VENV)/bin/kcnn finetune --backbone resnet18 --task detection --dataset runs/photo_objects/coco \
		--image-size 128 --out runs/photo-detection --resume

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
