"""``tune``: a keras-tuner search over a space of zoo models, each trial a ``kcnn pretrain`` run.

- Tuners: ``hyperband`` (Li et al. 2018; each trial trains from scratch for its bracket's
  epochs), ``bayesian`` (Gaussian process), ``random``. The objective is validation top-1.
- Budgets: a point's parameters and multiply-adds are counted from its architecture before
  any training (``kcnn.profile``); points over ``max_params``/``max_macs`` (or that cannot be
  built at the input size) are never handed out as trials: the oracle draws again, and the
  skipped points are listed in ``skipped.json`` (keras-tuner's ``max_model_size`` instead
  fails trials and stops after 3 in a row, keras-tuner#175).
- Memory: each trial is a ``kcnn pretrain`` process of its own, so the tuner's memory stays flat
  however many trials run.
- ``resume=True`` reloads the search in ``out`` (keras-tuner's state) and continues; an
  interrupted trial's run resumes from its checkpoint.
- Distributed: keras-tuner's chief/worker mode from ``KERASTUNER_TUNER_ID``,
  ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` (the chief serves the oracle; workers
  run trials into the shared ``out``); the chief writes the results.

``out`` holds ``keras_tuner/`` (the tuner's state), ``trials/<id>/`` (each trial's run),
``trials.csv``, ``trials.md``, ``pareto.png`` (score against MACs, the Pareto front marked),
``skipped.json`` and ``best/`` (the best trial's run: ``kcnn export out/best``).
"""

import json
import os
import shutil
import subprocess
import sys

import keras
import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from kcnn import data, registry
from kcnn.analysis import profile
from kcnn.atomic import write_json
from kcnn.session import caller_state_kept
from kcnn.models import build
from kcnn.tune import report
from kcnn.tune.space import load

TUNERS = ("hyperband", "bayesian", "random")
OBJECTIVE = "val_top1"
MAX_DRAWS = 200  # random points drawn for one trial before the space counts as exhausted


class Budget:
    """Parameters and MACs of a point, counted from its architecture; whether it fits the limits."""

    def __init__(self, space, classes, input_shape, max_params=None, max_macs=None):
        self.space, self.classes, self.input_shape = space, classes, input_shape
        self.max_params, self.max_macs = max_params, max_macs
        self.counts, self.skipped = {}, []

    def measure(self, values):
        """``(params, macs)`` of the point (raises ValueError when it cannot be built)."""
        key = json.dumps({k: values[k] for k in self.space.hyperparameters}, sort_keys=True)
        if key not in self.counts:
            name, options, _ = self.space.resolve(values)
            shape = self.input_shape or registry.get(name).input_shape
            try:
                counted = profile(name, input_shape=tuple(shape), classes=self.classes, **options)
            finally:
                keras.backend.clear_session()  # the counted graph is not needed again
            self.counts[key] = (counted.params, counted.macs)
        return self.counts[key]

    def fits(self, values):
        try:
            params, macs = self.measure(values)
        except ValueError as error:
            reason = str(error)
        else:
            over = [f"{label} {value:,} > {limit:,}" for label, value, limit in
                    (("params", params, self.max_params), ("MACs", macs, self.max_macs))
                    if limit is not None and value > limit]
            if not over:
                return True
            reason = ", ".join(over)
        self.skipped.append({"values": {k: values[k] for k in self.space.hyperparameters}, "reason": reason})
        return False


def _budgeted(oracle_class):
    """``oracle_class`` whose random draws skip the points outside the budget."""

    class BudgetOracle(oracle_class):
        budget = None

        def _random_values(self):
            for _ in range(MAX_DRAWS):
                values = super()._random_values()
                if values is None or self.budget is None or self.budget.fits(values):
                    return values
            return None

        def populate_space(self, trial_id):
            result = super().populate_space(trial_id)
            values = result.get("values")
            if (result.get("status") == TrialStatus.RUNNING and values
                    and self.budget is not None and "tuner/trial_id" not in values and not self.budget.fits(values)):
                values = self._random_values()  # the model-based proposal was out of budget
                if values is None:
                    return {"status": TrialStatus.STOPPED, "values": None}
                return {"status": TrialStatus.RUNNING, "values": values}
            return result

    BudgetOracle.__name__ = f"Budget{oracle_class.__name__}"
    return BudgetOracle


class ZooHyperModel(keras_tuner.HyperModel):
    """Declares the space's hyperparameters and builds the zoo model of a point with ``kcnn.build``."""

    def __init__(self, space, classes, input_shape):
        super().__init__(name=space.name)
        self.space, self.classes, self.input_shape = space, classes, input_shape

    def declare_hyperparameters(self, hp):
        self.space.define(hp)

    def build(self, hp):
        name, options, _ = self.space.resolve(self.space.define(hp))
        return build(name, classes=self.classes, input_shape=self.input_shape, classifier_activation=None, **options)


class ZooTuner(keras_tuner.Tuner):
    """Runs each trial as a ``pretrain`` run of the point's zoo model and recipe overrides."""

    def __init__(self, oracle, hypermodel, *, training, **kwargs):
        super().__init__(oracle, hypermodel, **kwargs)
        self.training = training

    def run_trial(self, trial, *args, **kwargs):
        space = self.hypermodel.space
        values = {key: trial.hyperparameters.get(key) for key in space.hyperparameters}
        name, options, recipe = space.resolve(values)
        epochs = trial.hyperparameters.values.get("tuner/epochs", self.training["max_epochs"])
        out = os.path.join(self.training["out"], "trials", trial.trial_id)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, report.WORKER_FILE), "w", encoding="utf-8") as stream:
            stream.write(self.tuner_id)
        command = pretrain_command(name, self.training, out, options, recipe, epochs, self.hypermodel.input_shape)
        finished = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if finished.returncode:
            raise keras_tuner.errors.FailedTrialError(f"trial {trial.trial_id}: kcnn pretrain failed: "
                                                      f"{finished.stdout.strip().splitlines()[-1:]}")
        with open(os.path.join(out, "history.json"), encoding="utf-8") as stream:
            return {OBJECTIVE: json.load(stream)[-1]["val_top1"]}


def pretrain_command(name, training, out, options, recipe, epochs, input_shape):
    """The ``kcnn pretrain`` command of one trial: each trial runs in a process of its own, so that
    nothing a trial allocates (graphs, datasets, the Keras session) stays in the tuner's process."""
    command = [sys.executable, "-m", "kcnn.cli", "pretrain", "--model", name, "--dataset", training["dataset"],
               "--out", out, "--epochs", str(epochs), "--precision", training["precision"],
               "--seed", str(training["seed"]), "--checkpoint-every", str(10**9)]
    command += [part for key, value in options.items() for part in ("--option", f"{key}={json.dumps(value)}")]
    command += [part for key, value in recipe.items() for part in ("--set", f"{key}={json.dumps(value)}")]
    if input_shape:
        command += ["--input-shape", ",".join(map(str, input_shape))]
    if os.path.isdir(os.path.join(out, "checkpoints")):
        command.append("--resume")  # an interrupted trial of a resumed search continues its run
    return command


def _oracle(tuner, objective, *, max_trials, max_epochs, seed):
    if tuner not in TUNERS:
        raise ValueError(f"unknown tuner {tuner!r}; accepted: {', '.join(TUNERS)}")
    seed += 1  # keras-tuner takes a seed of 0 for "none" and draws a random one
    if tuner == "hyperband":
        return _budgeted(keras_tuner.oracles.HyperbandOracle)(objective=objective, max_epochs=max_epochs, seed=seed)
    if tuner == "bayesian":
        return _budgeted(keras_tuner.oracles.BayesianOptimizationOracle)(objective=objective, max_trials=max_trials,
                                                                          seed=seed)
    return _budgeted(keras_tuner.oracles.RandomSearchOracle)(objective=objective, max_trials=max_trials, seed=seed)


@caller_state_kept()  # keras-tuner clears the Keras session between trials; the caller's comes back
def tune(space, dataset, out, *, tuner="hyperband", max_trials=10, max_epochs=3, max_params=None, max_macs=None,
         input_shape=None, precision="auto", seed=0, resume=False):
    r"""Searches ``space`` (a built-in name or YAML file) on ``dataset`` into ``out``; returns the trial rows
    (on the chief, or when not distributed; ``None`` on a worker).

    >>> import contextlib, io, os, tempfile, kcnn
    >>> root = tempfile.mkdtemp()
    >>> with open(os.path.join(root, "lenet.yaml"), "w") as file:
    ...     _ = file.write("model: lenet5\ninput_shape: [32, 32, 1]\nhyperparameters:\n"
    ...                    "  lr: {min: 0.01, max: 0.1, sampling: log}\nrecipe: {lr: $lr}\n")
    >>> with contextlib.redirect_stdout(io.StringIO()):  # keras-tuner's progress
    ...     rows = kcnn.tune(os.path.join(root, "lenet.yaml"), "digits", os.path.join(root, "search"),
    ...                      tuner="random", max_trials=1, max_epochs=1)
    >>> len(rows), "model.weights.h5" in os.listdir(os.path.join(root, "search", "best"))  # the best trial's run
    (1, True)
    """
    space = load(space)
    out = os.fspath(out)
    state = os.path.join(out, "keras_tuner")
    chief = os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief"
    # The chief's oracle state, not the folder: a worker started first creates the folder too.
    if chief and os.path.isfile(os.path.join(state, "oracle.json")) and not resume:
        raise ValueError(f"{out!r} already holds a search; pass --resume to continue it or choose another --out")
    info = data.dataset_info(dataset)
    shape = tuple(input_shape or space.input_shape or ()) or None
    budget = Budget(space, info.num_classes, shape, max_params, max_macs)
    if not budget.fits(space.defaults()) and max_params is None and max_macs is None:
        raise ValueError(f"the default point of space {space.name!r} cannot be built: {budget.skipped[-1]['reason']}")
    oracle = _oracle(tuner, keras_tuner.Objective(OBJECTIVE, direction="max"), max_trials=max_trials,
                     max_epochs=max_epochs, seed=seed)
    oracle.budget = budget
    searcher = ZooTuner(oracle, ZooHyperModel(space, info.num_classes, shape), directory=out,
                        project_name="keras_tuner", overwrite=False,
                        training={"dataset": dataset, "out": out, "max_epochs": max_epochs, "precision": precision,
                                  "seed": seed})
    searcher.search()
    if not chief:
        return None
    rows = report.trial_rows(searcher.oracle, budget, os.path.join(out, "trials"), max_epochs)
    report.write(out, rows, space)
    write_json(os.path.join(out, "skipped.json"), budget.skipped)
    _keep_best(out, rows)
    return rows


def _keep_best(out, rows):
    completed = [row for row in rows if row["score"] is not None]
    if not completed:
        return
    best = max(completed, key=lambda row: row["score"])
    source, target = os.path.join(out, "trials", best["trial"]), os.path.join(out, "best")
    partial = f"{target}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    shutil.rmtree(target, ignore_errors=True)
    os.rename(partial, target)
