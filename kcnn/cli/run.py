"""``kcnn run``: a YAML pipeline of stages (pipelines/*.yaml)."""

import click

from kcnn.cli.options import user_errors


@click.command("run")
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="The run directory (default: runs/<pipeline name>).")
@click.option("--resume", is_flag=True,
              help="Continue the run in OUT: skip the stages completed earlier, continue an interrupted training "
                   "stage from its newest checkpoint (or search from its state), rerun the others.")
@click.option("--rerun-changed", is_flag=True,
              help="With --resume (implied): rerun from scratch the stages whose `with:` changed since they ran, "
                   "and the stages that use their outputs ($stage), instead of refusing.")
def run_command(pipeline, out, resume, rerun_changed):
    """Runs the stages of PIPELINE in order, each into OUT/<stage> with a manifest.json (status running,
    then completed or failed).

    \b
    Example (offline, under a minute on 2 CPU cores: LeNet-5 on digits, evaluated, exported):
      kcnn run pipelines/digits_lenet.yaml --out runs/digits_lenet
    """
    from kcnn.pipeline import StageFailed, run

    with user_errors():
        try:
            manifests = run(pipeline, out, resume=resume, rerun_changed=rerun_changed, echo=click.echo)
        except StageFailed as error:
            raise ValueError(str(error)) from None
    for manifest in manifests:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in manifest.get("metrics", {}).items()
                          if isinstance(v, float))
        click.echo(f"{manifest['stage']}: {manifest['status']}{'; ' + shown if shown else ''}")
