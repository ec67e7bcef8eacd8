"""The ``kcnn`` command: a click group; each command group lives in its own module.

The modules import only click and light helpers at their top; each command imports what it runs
(TensorFlow, the zoo, the training engine) in its body, so ``kcnn --help``, every ``--help`` and usage
errors answer without loading TensorFlow. TensorFlow's start-up chatter stays off stderr unless
``--verbose`` (kcnn.cli.quiet).
"""

import click

from kcnn.cli import quiet
from kcnn.cli.export import export_command, predict_command
from kcnn.cli.finetune import finetune_command
from kcnn.cli.run import run_command
from kcnn.cli.tune import tune_command
from kcnn.cli.train import bench_command, degradation_command, evaluate_command, pretrain_command, recipes
from kcnn.cli.weights import weights
from kcnn.cli.zoo import models, profile


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kcnn")
@click.option("--verbose", is_flag=True, envvar="KCNN_VERBOSE",
              help="Show TensorFlow's C++ log lines as it prints them (at start-up: absl, oneDNN, CUDA); "
                   "also KCNN_VERBOSE=1.")
def main(verbose):
    """kcnn: the classic CNNs (LeNet to ResNet), exact, for Keras 3.

    \b
    Example:
      kcnn models --dataset mnist
    """
    quiet.configure(verbose)


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
