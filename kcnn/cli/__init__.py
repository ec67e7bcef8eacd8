"""The ``kcnn`` command: a click group; each command group lives in its own module."""

import click

from kcnn.cli.export import export_command, predict_command
from kcnn.cli.finetune import finetune_command
from kcnn.cli.run import run_command
from kcnn.cli.tune import tune_command
from kcnn.cli.train import bench_command, degradation_command, evaluate_command, pretrain_command, recipes
from kcnn.cli.weights import weights
from kcnn.cli.zoo import models, profile


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kcnn")
def main():
    """kcnn: the classic CNNs (LeNet to ResNet), exact, for Keras 3."""


main.add_command(models)
main.add_command(profile)
main.add_command(weights)
main.add_command(pretrain_command, name="pretrain")
main.add_command(finetune_command)
main.add_command(recipes)
main.add_command(evaluate_command)
main.add_command(degradation_command)
main.add_command(bench_command)
main.add_command(export_command)
main.add_command(predict_command)
main.add_command(tune_command)
main.add_command(run_command)
