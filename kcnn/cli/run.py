"""``kcnn run``: a YAML pipeline of stages (pipelines/*.yaml)."""

import click

from kcnn.cli.options import user_errors
from kcnn.pipeline import StageFailed, run


@click.command("run")
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="The run directory (default: runs/<pipeline name>).")
@click.option("--resume", is_flag=True, help="Skip the stages completed earlier, rerun from the first that is not.")
def run_command(pipeline, out, resume):
    """Runs the stages of PIPELINE in order, each into OUT/<stage> with a manifest.json."""
    with user_errors():
        try:
            manifests = run(pipeline, out, resume=resume, echo=click.echo)
        except StageFailed as error:
            raise ValueError(str(error)) from None
    for manifest in manifests:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in manifest.get("metrics", {}).items()
                          if isinstance(v, float))
        click.echo(f"{manifest['stage']}: {manifest['status']}{'; ' + shown if shown else ''}")
