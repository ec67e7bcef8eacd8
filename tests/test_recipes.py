"""Training recipes: overrides, the papers' schedules, fitting a recipe to --epochs/--steps, the Keras schedule."""

import json
import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.train import recipes

SPES = (7, 391)


def _sample_steps(recipe, spe, seed=0):
    """Step 0, both sides of every boundary and of the warm-up's end, the end, and random steps."""
    to_steps = (lambda v: int(v)) if recipe.unit == "steps" else (lambda v: int(round(v * spe)))
    total = to_steps(recipe.length)
    edges = [to_steps(b) for b in recipe.boundaries] + [to_steps(recipe.warmup), total]
    steps = {0, 1, total + 5}
    for edge in edges:
        steps.update(s for s in (edge - 2, edge - 1, edge, edge + 1) if s >= 0)
    rng = random.Random(seed)
    steps.update(rng.randrange(total + 1) for _ in range(200))
    return sorted(steps)


def test_recipe_overrides_are_checked():
    assert recipes.get("resnet_cifar", lr=0.01).lr == 0.01
    with pytest.raises(ValueError, match="unknown recipe field 'learning_rate'; accepted: augment"):
        recipes.get("resnet_cifar", learning_rate=0.01)
    with pytest.raises(ValueError, match="recipe field 'batch_size' must be int"):
        recipes.get("resnet_cifar", batch_size="big")
    with pytest.raises(ValueError, match="unknown recipe 'resnet'.*did you mean"):
        recipes.get("resnet")


def test_paper_schedules():
    cifar = recipes.get("resnet_cifar")
    assert [cifar.learning_rate(s, steps_per_epoch=391) for s in (0, 31999, 32000, 48000)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001])
    imagenet = recipes.get("resnet_imagenet")
    assert imagenet.total_steps(steps_per_epoch=5005) == 90 * 5005
    assert imagenet.learning_rate(30 * 5005, 5005) == pytest.approx(0.01)


@pytest.mark.parametrize("spe", SPES)
@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_in_steps_gives_the_same_rate_at_every_step(name, spe):
    recipe = recipes.RECIPES[name]
    steps = recipe.in_steps(spe)
    assert steps.unit == "steps" and steps.length == recipe.total_steps(spe)
    assert steps.total_steps(spe) == recipe.total_steps(spe)
    for step in _sample_steps(recipe, spe):
        assert steps.learning_rate(step, spe) == recipe.learning_rate(step, spe), step
    if recipe.unit == "steps":
        assert steps is recipe


def test_in_steps_converts_an_epochs_recipe_by_rounding():
    shapes = recipes.get("vgg", length=12, warmup=1, boundaries=(2.5, 7))  # 12 epochs, 1 epoch of warm-up
    steps = shapes.in_steps(7)
    assert (steps.length, steps.boundaries, steps.warmup) == (84, (round(2.5 * 7), 49), 7)
    with pytest.raises(ValueError, match="steps_per_epoch must be at least 1"):
        shapes.in_steps(0)


def test_for_run_scales_the_boundaries_in_proportion():
    recipe, note = recipes.get("resnet_cifar").for_run(391, epochs=10)
    total = 10 * 391
    expected = tuple(round(b * total / 64000) for b in (32000, 48000))
    assert expected == (1955, 2932)
    assert (recipe.unit, recipe.length, recipe.boundaries, recipe.warmup) == ("steps", total, expected, 0)
    assert recipe.learning_rate(1954, 391) == pytest.approx(0.1)
    assert recipe.learning_rate(1955, 391) == pytest.approx(0.01)
    assert recipe.learning_rate(total - 1, 391) == pytest.approx(0.001)
    assert "64000 steps -> 3910 steps" in note and "--epochs 10 x 391 steps" in note
    assert "32000, 48000 -> 1955, 2932" in note and "\n" not in note


def test_for_run_scales_an_epochs_recipe_to_steps():
    spe = 5005
    recipe, note = recipes.get("resnet_imagenet").for_run(spe, steps=900)
    old_total = 90 * spe
    assert recipe.length == 900
    assert recipe.boundaries == tuple(round(b * spe * 900 / old_total) for b in (30, 60)) == (300, 600)
    assert note.startswith(f"recipe resnet_imagenet: 90 epochs ({old_total} steps) -> 900 steps (--steps 900)")


def test_for_run_keeps_the_warmup_up_to_a_tenth_of_the_run():
    recipe, note = recipes.get("retinanet").for_run(75, steps=300)
    assert recipe.warmup == 30
    assert recipe.boundaries == tuple(round(b * 300 / 90000) for b in (60000, 80000))
    assert "warm-up 500 -> 30 steps (at most a tenth of the run)" in note
    assert recipe.learning_rate(0, 75) == pytest.approx(0.01 / 30)
    assert recipe.learning_rate(29, 75) == pytest.approx(0.01)

    longer, note = recipes.get("retinanet").for_run(75, steps=180000)
    assert longer.warmup == 500 and longer.boundaries == (120000, 160000)
    assert "warm-up 500 steps kept" in note

    tiny, _ = recipes.get("retinanet").for_run(75, steps=5)
    assert tiny.warmup == 0 and tiny.boundaries == (round(60000 * 5 / 90000), round(80000 * 5 / 90000))

    epochs, _ = recipes.get("vgg", warmup=1).for_run(40, epochs=30)  # a 1-epoch warm-up kept in steps
    assert (epochs.length, epochs.warmup) == (1200, 40)
    small, _ = recipes.get("small_data").for_run(62, epochs=10)  # 100 steps of warm-up: over a tenth of 620
    assert (small.length, small.warmup) == (620, 62)


def test_for_run_drops_boundaries_that_rounding_merges():
    googlenet = recipes.get("googlenet")  # 31 boundaries, every 8 of 250 epochs
    recipe, note = googlenet.for_run(10, steps=20)
    scaled = [min(max(round(b * 10 * 20 / 2500), 1), 19) for b in googlenet.boundaries]
    expected = tuple(sorted(set(scaled)))
    assert recipe.boundaries == expected
    assert all(1 <= b <= 19 for b in expected) and list(expected) == sorted(set(expected))
    assert f"{len(scaled) - len(expected)} merged by rounding" in note and "(31 boundaries)" in note

    unreached, note = recipes.get("resnet_cifar", boundaries=(32000, 70000)).for_run(1, steps=640)
    assert unreached.boundaries == (320,) and "1 never reached" in note


def test_for_run_without_a_new_length():
    retinanet = recipes.get("retinanet")
    assert retinanet.for_run(75) == (retinanet, None)
    assert retinanet.for_run(75, steps=90000) == (retinanet, None)
    epochs = recipes.get("vgg")  # 74 epochs
    assert epochs.for_run(40) == (epochs.in_steps(40), None)
    assert epochs.for_run(40, epochs=74) == (epochs.in_steps(40), None)
    small = recipes.get("small_data")  # 1,200 steps
    assert small.for_run(75, epochs=16) == (small, None)


def test_for_run_rejects_bad_lengths():
    retinanet = recipes.get("retinanet")
    with pytest.raises(ValueError, match="give --epochs or --steps, not both"):
        retinanet.for_run(75, epochs=1, steps=10)
    with pytest.raises(ValueError, match="--epochs must be at least 1"):
        retinanet.for_run(75, epochs=0)
    with pytest.raises(ValueError, match="--steps must be a whole number"):
        retinanet.for_run(75, steps=2.5)


SCHEDULE_CASES = [(name, spe, {}) for name in sorted(recipes.RECIPES) for spe in SPES] + [
    ("deeplabv3", 7, {"warmup": 100}),                       # poly with warm-up
    ("small_data", 391, {}),                                   # cosine with a 1-epoch warm-up
    ("resnet_cifar", 7, {"warmup": 3, "boundaries": (100, 20)}),  # unsorted boundaries
]


def _expected(recipe, spe, steps, factor=1.0, offset=0):
    return np.asarray([factor * recipe.learning_rate(s + offset, spe) for s in steps])


def _check_close(actual, expected, recipe):
    np.testing.assert_allclose(np.asarray(actual, "float64"), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name,spe,overrides", SCHEDULE_CASES)
def test_lr_schedule_equals_learning_rate(name, spe, overrides):
    recipe = recipes.get(name, **overrides)
    schedule = recipe.lr_schedule(spe)
    steps = _sample_steps(recipe, spe)
    assert all(schedule(s).dtype == "float32" for s in steps[:3])
    _check_close([float(schedule(s)) for s in steps], _expected(recipe, spe, steps), recipe)
    graph = tf.function(lambda step: schedule(step))
    _check_close([float(graph(tf.constant(s, tf.int64))) for s in steps], _expected(recipe, spe, steps), recipe)


@pytest.mark.parametrize("name", ["retinanet", "small_data", "deeplabv3"])
def test_lr_schedule_factor_and_offset(name):
    recipe, _ = recipes.get(name).for_run(13, steps=400)
    schedule = recipe.lr_schedule(13, factor=0.1, offset=25)
    steps = list(range(0, 400, 3))
    _check_close([float(schedule(s)) for s in steps], _expected(recipe, 13, steps, 0.1, 25), recipe)


def test_lr_schedule_serializes():
    recipe, _ = recipes.get("retinanet", lr=0.02).for_run(75, epochs=10)
    schedule = recipe.lr_schedule(75, factor=0.5, offset=10)
    config = schedule.get_config()
    assert json.loads(json.dumps(config)) == config
    assert config["recipe"]["boundaries"] == [500, 667] and config["offset"] == 10
    serialized = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert isinstance(restored, recipes.RecipeSchedule) and restored.recipe == recipe
    assert (restored.steps_per_epoch, restored.factor, restored.offset) == (75, 0.5, 10)
    steps = list(range(0, 800, 7))
    assert [float(restored(s)) for s in steps] == [float(schedule(s)) for s in steps]
    optimizer = keras.optimizers.SGD.from_config(keras.optimizers.SGD(schedule).get_config())
    assert isinstance(optimizer._learning_rate, recipes.RecipeSchedule)


@pytest.mark.parametrize("compiled", [False, True])
def test_lr_schedule_drives_an_optimizer(compiled):
    recipe = recipes.get("resnet_cifar", length=12, boundaries=(4, 7), warmup=2, momentum=0.0)
    optimizer = recipe.build_optimizer(recipe.lr_schedule(steps_per_epoch=5))
    weight = keras.Variable(np.ones(3, "float32"))
    optimizer.build([weight])
    apply = lambda: optimizer.apply_gradients([(tf.ones(3), weight)])  # noqa: E731
    apply = tf.function(apply) if compiled else apply
    for k in range(10):
        assert int(optimizer.iterations) == k
        assert float(optimizer.learning_rate) == pytest.approx(recipe.learning_rate(k, 5), rel=1e-6)
        apply()
