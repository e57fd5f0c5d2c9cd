"""Drop-in use for TalkingData's oam-docker-ipam: its program name, its plugin's name, and
the flag spellings its CLI library accepted.

The original's CLI (codegangsta/cli, on Go's ``flag`` package) took every flag with one
dash or two (``-ip-start``, ``--ip-start``), a value after ``=`` or as the next word, and
a boolean's value only after ``=`` (``--debug=true``): ``--debug server`` is the flag,
then the command. :func:`respell` turns those spellings into the ones click parses, so
scripts and systemd units written for the original run unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

from .output import usage_error

#: The original's program name (its console script here): run under it, plugin names
#: default to the original's.
ORIGINAL_PROGRAM = "oam-docker-ipam"
#: The original plugin's name: its networks say ``--ipam-driver talkingdata``.
ORIGINAL_PLUGIN = "talkingdata"
#: The plugin's name when run as ``shrike``.
PLUGIN_NAME = "shrike"

PluginNameOption = Annotated[
    str,
    typer.Option(
        "--plugin-name",
        help=f"The IPAM plugin's name, which networks give as --ipam-driver and 'server' runs with"
        f" ({ORIGINAL_PLUGIN}, the original's, when run as {ORIGINAL_PROGRAM}).",
    ),
]

#: What a boolean option takes after ``=``: Go's strconv.ParseBool words (1, t, true, 0,
#: f, false), and yes/no, on/off, y/n, in any case, as its environment variable takes them.
BOOLEANS = {
    **dict.fromkeys(("1", "t", "true", "y", "yes", "on"), True),
    **dict.fromkeys(("0", "f", "false", "n", "no", "off"), False),
}


def program_defaults(group: TyperGroup, program: str | None) -> dict[str, dict[str, str]] | None:
    """click's ``default_map`` for ``program``: run as the original, every command with a
    ``--plugin-name`` defaults to the original plugin's name (and --help shows it)."""
    if program != ORIGINAL_PROGRAM:
        return None
    return {
        name: {"plugin_name": ORIGINAL_PLUGIN}
        for name, command in group.commands.items()
        if any(param.name == "plugin_name" for param in command.params)
    }


@dataclass
class Respelled:
    """A command line as click parses it, and the boolean options given ``=false``."""

    args: list[str] = field(default_factory=list)
    switched_off: list[TyperOption] = field(default_factory=list)


def options(command: TyperGroup | TyperCommand, ctx: typer.Context) -> dict[str, tuple[str, TyperOption]]:
    """Each option's names without dashes (``ip-start``, ``o``, ``h``), to its usual
    spelling (the long one) and the option."""
    found = {}
    for param in command.get_params(ctx):
        if isinstance(param, TyperOption):
            usual = next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])
            found.update((opt.lstrip("-"), (usual, param)) for opt in param.opts)
    return found


def _flag_syntax(word: str) -> tuple[str, str | None] | None:
    """Go's flag syntax: ``-name``, ``--name``, ``-name=value``, ``--name=value`` as
    (name, value or None); None for an argument."""
    if not word.startswith("-") or word == "-":
        return None
    name, equals, value = word[2 if word.startswith("--") else 1 :].partition("=")
    return name, value if equals else None


def respell(
    command: TyperGroup | TyperCommand,
    ctx: typer.Context,
    args: Sequence[str],
    *,
    global_options: Mapping[str, tuple[str, TyperOption]] | None = None,
) -> Respelled:
    """``args`` for ``command`` with the original's spellings made click's.

    For the root command (``global_options`` None) this stops at the first argument, the
    command, as Go's flag package does, and takes a boolean's value: ``--debug=true`` is
    ``--debug``, ``--debug=false`` is in ``switched_off``. For a subcommand,
    ``global_options`` are the root's: one of them typed after the command is refused with
    where it goes. An unknown option is left for click to refuse.
    """
    known_options = options(command, ctx)
    done = Respelled()
    words: Iterator[str] = iter(args)
    bare_flag = None  # a boolean option just given without a value
    for word in words:
        syntax = _flag_syntax(word)
        if word == "--" or (syntax is None and global_options is None):
            if bare_flag and word.lower() in BOOLEANS and word not in command.commands and not ctx.resilient_parsing:
                usage_error(f"{bare_flag} takes its value after '=': {bare_flag}={word}", ctx)
            done.args += [word, *words]  # the command and its arguments, or "--" and arguments
            break
        bare_flag = None
        known = known_options.get(syntax[0]) if syntax else None
        if syntax is None or known is None:
            if syntax and global_options and syntax[0] in global_options and not ctx.resilient_parsing:
                usual = global_options[syntax[0]][0] + ("" if syntax[1] is None else f"={syntax[1]}")
                where = f"{ctx.find_root().info_name} {usual} {command.name} ..."
                usage_error(f"{usual} is a global option: give it before the command ({where})", ctx)
            done.args.append(word)
            continue
        value, (usual, option) = syntax[1], known
        if not option.is_bool_flag:
            # Without "=", its value is the next word, whatever it looks like (as in Go and click).
            done.args += [usual if value is None else f"{usual}={value}", *islice(words, 1 if value is None else 0)]
        elif value is None:
            done.args.append(usual)
            bare_flag = usual
        elif global_options is not None:
            done.args.append(f"{usual}={value}")  # click says the option takes no value
        else:
            state = BOOLEANS.get(value.lower())
            if state is None and not ctx.resilient_parsing:  # not while completing
                usage_error(f"{usual}={value} is neither true nor false: give {usual} or {usual}=false", ctx)
            if state:
                done.args.append(usual)
            else:
                done.switched_off.append(option)
    return done
