"""``kcnn tune``: a ZFNet-style hyperparameter search over a zoo family, on keras-tuner."""

import click

from kcnn.cli.options import PRECISIONS, TUNERS, parse_shape, user_errors
from kcnn.tune.space import BUILT_IN


@click.command("tune")
@click.option("--space", required=True, help=f"A built-in search space ({', '.join(BUILT_IN)}) or a YAML file.")
@click.option("--dataset", required=True, help="digits, a TFDS name or a folder (as for pretrain).")
@click.option("--tuner", type=click.Choice(TUNERS), default="hyperband", show_default=True)
@click.option("--max-trials", type=click.IntRange(min=1), default=10, show_default=True,
              help="bayesian/random: how many trials.")
@click.option("--max-epochs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Epochs of a fully trained trial (hyperband: of its last round).")
@click.option("--max-params", type=click.IntRange(min=1), help="Skip points with more parameters (counted first).")
@click.option("--max-macs", type=click.IntRange(min=1), help="Skip points with more multiply-adds (counted first).")
@click.option("--input-shape", callback=parse_shape, help="H,W,C of the trials (default: the space's, else the model's).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the search in --out.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The search directory.")
def tune_command(space, dataset, tuner, max_trials, max_epochs, max_params, max_macs, input_shape, precision, seed,
                 resume, out):
    """Searches SPACE on DATASET with keras-tuner; writes trials.{csv,md}, pareto.png and best/ to OUT.
    Distributed: run one chief and several workers with KERASTUNER_TUNER_ID (chief, tuner0, ...),
    KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set.

    \b
    Example (one small trial on digits, offline; a real search: more trials and epochs, hyperband):
      kcnn tune --space resnet --dataset digits --tuner random --max-trials 1 --max-epochs 1 \\
        --max-params 120000 --input-shape 32,32,3 --out runs/tune
    """
    from kcnn.tune.search import tune

    with user_errors():
        rows = tune(space, dataset, out, tuner=tuner, max_trials=max_trials, max_epochs=max_epochs,
                    max_params=max_params, max_macs=max_macs, input_shape=input_shape, precision=precision,
                    seed=seed, resume=resume)
    if rows:
        best = max((row for row in rows if row["score"] is not None), key=lambda row: row["score"], default=None)
        click.echo(f"{len(rows)} trials; best: trial {best['trial']}, val top-1 {best['score']:.2f}%, "
                   f"{best['params']:,} params, {best['macs']:,} MACs; results in {out} (best run: {out}/best)"
                   if best else f"{len(rows)} trials, none completed; see {out}")
