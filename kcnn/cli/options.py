"""Parsing shared by the commands: shapes, ``key=value`` options, errors as one line."""

import contextlib
import json

import click


def parse_shape(ctx, param, value):
    """'224,224,3' -> (224, 224, 3)."""
    if value is None:
        return None
    try:
        shape = tuple(int(part) for part in value.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise click.BadParameter(f"expected H,W,C as three positive integers (e.g. 224,224,3), got {value!r}")
    return shape


def parse_options(ctx, param, values):
    """('variant=torchvision', 'towers=2', 'widths=[64,128,256,256,128]') -> a dict (JSON values, else text)."""
    options = {}
    for item in values:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
        if isinstance(options[key], list):
            options[key] = tuple(options[key])
    return options


@contextlib.contextmanager
def user_errors():
    """Turns the library's ValueErrors (bad user input) into one ``Error: ...`` line and exit code 1."""
    try:
        yield
    except ValueError as error:
        raise click.ClickException(str(error)) from None


def echo_table(header, rows):
    """Prints rows of strings as left-aligned columns under ``header``."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for cells in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
