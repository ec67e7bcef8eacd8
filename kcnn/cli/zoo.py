"""``kcnn models`` and ``kcnn profile``: the zoo's table and one model's layers."""

import json

import click

from kcnn.cli.options import echo_table, parse_options, parse_shape, user_errors


def _lecture_error(spec):
    lecture = spec.lecture
    return lecture.get("top5_error") or lecture.get("error") or ""


@click.command()
@click.option("--family", help="Only this family (lenet, alexnet, vgg, googlenet, resnet, cifar_resnet).")
@click.option("--dataset", help="Only models for this dataset (mnist, imagenet, cifar10).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(family, dataset, as_json):
    """Every model of the zoo: family, input, params, MACs (multiply-adds) at the default input.

    \b
    Example:
      kcnn models --family lenet
    """
    import kcnn
    from kcnn.analysis import human

    with user_errors():
        names = kcnn.list_models(family=family, dataset=dataset)
        rows = []
        for name in names:
            spec, counts = kcnn.model_info(name), kcnn.profile(name)
            rows.append({
                "name": name, "family": spec.family, "dataset": spec.dataset, "year": spec.year,
                "input_shape": list(spec.input_shape), "classes": spec.classes,
                "params": counts.params, "macs": counts.macs, "lecture": dict(spec.lecture),
            })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("model", "family", "year", "input", "params", "MACs", "lecture error")
    body = [(r["name"], r["family"], str(r["year"]), "x".join(map(str, r["input_shape"])),
             f"{r['params']:,}", human(r["macs"]), _lecture_error(kcnn.model_info(r["name"])))
            for r in rows]
    echo_table(header, body)


@click.command()
@click.argument("name")
@click.option("--input-shape", callback=parse_shape, help="H,W,C (default: the model's own).")
@click.option("--by", type=click.Choice(["block", "layer"]), default="block", show_default=True,
              help="One row per block (stage, inception module) or per layer.")
@click.option("--format", "fmt", type=click.Choice(["plain", "markdown"]), default="plain", show_default=True)
@click.option("--option", "-o", "options", multiple=True, callback=parse_options,
              help="A variant option KEY=VALUE (repeatable), e.g. -o variant=torchvision.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (layers, blocks, totals, conventions).")
def profile(name, input_shape, by, fmt, options, as_json):
    """Per-layer output shapes, params and MACs of NAME (MACs = multiply-adds; params without BN moving stats).

    \b
    Example:
      kcnn profile lenet5 --by layer
    """
    import kcnn

    with user_errors():
        result = kcnn.profile(name, input_shape=input_shape, **options)
    if as_json:
        click.echo(result.to_json(indent=2))
        return
    click.echo(f"{result.model_name}: input {'x'.join(map(str, result.input_shape))}, "
               f"{result.params:,} params, {result.macs:,} MACs")
    click.echo(result.to_table(by=by, fmt=fmt))
