"""A command line built from a settings model: one option per field, its help the field's description.

A field is spelled ``--<name-with-dashes>`` unless its ``Option`` says otherwise; the parser's
defaults are all None, so only what the user typed overrides the environment and the config
file (``frontend.settings.settings_from_args``). Pydantic validates every value; ``explain``
names the option that was wrong.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic.fields import FieldInfo


@dataclass(frozen=True, slots=True)
class Option:
    """How a setting appears on the command line.

    ``flag``: its option when not ``--<name>``; ``exclusive``: options of the same group
    cannot be given together; ``group``: the help section it is listed under;
    ``switches``: (flag, value, help) options that each set the field to a constant
    (``--resume`` / ``--new``) instead of taking a value; ``cli=False``: config file and
    environment only.
    """

    metavar: str | None = None
    flag: str | None = None
    exclusive: str | None = None
    group: str | None = None
    choices: tuple[object, ...] | None = None
    switches: tuple[tuple[str, object, str], ...] = ()
    cli: bool = True


def option_of(field: FieldInfo) -> Option | None:
    return next((m for m in field.metadata if isinstance(m, Option)), None)


def flag_of(name: str, field: FieldInfo) -> str:
    option = option_of(field)
    return option.flag if option is not None and option.flag else f"--{name.replace('_', '-')}"


def build_parser(settings_cls: type[BaseModel], *, prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one option per field of ``settings_cls`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    groups: dict[str, Any] = {}

    def section(option: Option) -> Any:
        target: Any = parser
        if option.group is not None:
            if option.group not in groups:
                groups[option.group] = parser.add_argument_group(option.group)
            target = groups[option.group]
        if option.exclusive is not None:
            if option.exclusive not in groups:
                groups[option.exclusive] = target.add_mutually_exclusive_group()
            target = groups[option.exclusive]
        return target

    for name, field in settings_cls.model_fields.items():
        option = option_of(field) or Option()
        if not option.cli:
            continue
        target = section(option)
        for flag, value, text in option.switches:
            target.add_argument(flag, action="store_const", const=value, dest=name, help=text)
        if not option.switches:
            target.add_argument(flag_of(name, field), dest=name, metavar=option.metavar, help=field.description,
                                type=_cli_type(field), choices=option.choices)
    return parser


def _cli_type(field: FieldInfo) -> Callable[[str], object] | None:
    """What argparse converts the text to: a Literal's type, int, float or Path; text otherwise (a
    field with a BeforeValidator, such as a size like 512MiB, is parsed by pydantic)."""
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return type(typing.get_args(annotation)[0])
    if any(isinstance(m, BeforeValidator) for m in field.metadata):
        return None
    return annotation if annotation in (int, float, Path) else None


def explain(exc: ValidationError, settings_cls: type[BaseModel]) -> str:
    """One line naming each bad option, what is wrong, and the value given."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        field = settings_cls.model_fields.get(where)
        option = flag_of(where, field) if field is not None else f"--{where.replace('_', '-')}" if where else "settings"
        got = f" (got {error['input']!r})" if where else ""
        lines.append(f"{option}: {error['msg'].removeprefix('Value error, ')}{got}")
    return "; ".join(lines)
