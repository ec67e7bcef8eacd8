"""Hyperparameter search in the ZFNet style: search spaces as data, budgets, keras-tuner tuners."""
