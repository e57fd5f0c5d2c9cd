"""The root command: global options, error handling, and the command list."""

from __future__ import annotations

import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from ..errors import InvalidInput, ShrikeError
from ..stores import STORE_TIMEOUT
from . import compat, output
from .output import LogFormat
from .state import Globals, configure_logging

log = logging.getLogger("shrike")


#: --help lists commands in the order an operator uses them, not alphabetically.
COMMAND_ORDER = (
    "host-range", "ip-range", "server", "create-network", "leases", "release", "reserve", "reconcile", "check",
    "scan", "events", "doctor", "adopt", "export", "import",
)  # fmt: skip


class ShrikeGroup(TyperGroup):
    """Turns expected failures into one line on stderr and exit 1, never a traceback; takes
    the original's program name and flag spellings (see :mod:`.compat`)."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: typer.Context | None = None, **extra: Any
    ) -> typer.Context:
        if parent is None:
            extra.setdefault("default_map", compat.program_defaults(self, info_name))
        return super().make_context(info_name, args, parent, **extra)

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        respelled = compat.respell(self, ctx, args)
        rest = super().parse_args(ctx, respelled.args)
        for option in respelled.switched_off:  # --debug=false: off, whatever DEBUG says
            if option.expose_value:
                ctx.params[option.name] = False
        return rest

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> tuple[str | None, TyperCommand | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            rest = compat.respell(command, ctx, rest, global_options=compat.options(self, ctx)).args
        return name, command, rest

    def list_commands(self, ctx: typer.Context) -> list[str]:
        rank = {name: index for index, name in enumerate(COMMAND_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda name: rank.get(name, len(rank)))

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShrikeError as err:
            output.error(str(err))
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors: exit 2
            raise
        except KeyboardInterrupt:
            output.error("interrupted")
            raise typer.Exit(130) from None
        except Exception as err:  # a bug: say so in one line, the traceback with --debug
            if isinstance(ctx.obj, Globals) and ctx.obj.debug:
                raise
            output.error(f"unexpected {type(err).__name__}: {err} (run with --debug for details)")
            raise typer.Exit(1) from None
        finally:
            if isinstance(ctx.obj, Globals):
                ctx.obj.close()


#: Where ``--cluster-store`` is read from the environment, in click's order.
CLUSTER_STORE_VARIABLES = ["CLUSTER_STORE", "IPAM_CLUSTER_STORE"]  # the original's unit set IPAM_*


def given_cluster_store(ctx: typer.Context, value: str | None) -> str | None:
    """``--cluster-store`` as given: ``None`` when it is not, refused when it is blank.

    A blank value is a mistake (an unset variable in a unit or script), and falling back
    to the embedded store then would give this host a state of its own: on a cluster,
    split brain. An empty variable counts as unset, as click reads it.
    """
    if value is None or value.strip():
        return value
    source = ctx.get_parameter_source("cluster_store")
    if source is not None and source.name == "ENVIRONMENT":
        where = next(name for name in CLUSTER_STORE_VARIABLES if os.environ.get(name))
    else:
        where = "--cluster-store"
    raise InvalidInput(
        f"{where} is blank: give the etcd endpoints (http://HOST:PORT,...), or leave it unset for this host's"
        " embedded store"
    )


app = typer.Typer(
    cls=ShrikeGroup,
    name="shrike",
    help=(
        "Give every Docker container an address on the host's own LAN subnet.\n\n"
        "Declare the LAN with host-range, the container addresses with ip-range, run the "
        "IPAM plugin with server, and bridge the host onto the LAN with create-network. "
        "State lives in an embedded store on this host, or in etcd with --cluster-store."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["--help", "-h"]},  # the original's -h too
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def print_version(ctx: typer.Context, value: bool) -> None:
    """--version: the installed distribution's version (pyproject.toml is its one home)."""
    if not value or ctx.resilient_parsing:
        return
    try:
        version = metadata.version("shrike")
    except metadata.PackageNotFoundError:
        output.error("no version: shrike is not installed (./install.sh or pip install .)")
        raise typer.Exit(1) from None
    typer.echo(f"shrike {version}")
    raise typer.Exit()


def parse_host_name(text: str) -> str:
    """``--host-name``: a name leases and store keys carry, so one word of printable
    characters without "/"; anything else is a usage error."""
    if not text or len(text) > 255 or "/" in text or not text.isprintable() or any(c.isspace() for c in text):
        raise typer.BadParameter(f"{text!r} is not a usable host name (printable characters, no space or '/')")
    return text


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            is_eager=True,
            expose_value=False,
            callback=print_version,
            help="Print the version and exit.",
        ),
    ] = False,
    cluster_store: Annotated[
        str | None,
        typer.Option(
            "--cluster-store",
            envvar=CLUSTER_STORE_VARIABLES,
            help=(
                "Comma-separated etcd v3 endpoints (http:// or https://)."
                " Without it, state is kept in an embedded store on this host."
            ),
            show_envvar=True,
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            envvar="SHRIKE_STATE_DIR",
            help="Folder of the embedded store [default: /var/lib/shrike for root, ~/.local/state/shrike otherwise].",
            show_envvar=True,
            file_okay=False,
        ),
    ] = None,
    store_timeout: Annotated[
        float,
        typer.Option(
            "--store-timeout",
            envvar="SHRIKE_STORE_TIMEOUT",
            metavar="SECONDS",
            min=0.1,
            help=(
                "How long one store call may take: for etcd the whole call, across endpoints and retries;"
                " for the embedded store, the wait for another process's write."
            ),
            show_envvar=True,
        ),
    ] = STORE_TIMEOUT,
    store_prefix: Annotated[
        str | None,
        typer.Option(
            "--store-prefix",
            envvar="SHRIKE_STORE_PREFIX",
            help="Key prefix in etcd, to keep several LANs in one etcd [default: /shrike/].",
            show_envvar=True,
        ),
    ] = None,
    etcd_ca: Annotated[
        Path | None,
        typer.Option(
            "--etcd-ca",
            envvar="SHRIKE_ETCD_CA",
            metavar="FILE",
            help="PEM file of the CA that signed etcd's certificate (https://) [default: the system's CAs].",
            show_envvar=True,
        ),
    ] = None,
    etcd_cert: Annotated[
        Path | None,
        typer.Option(
            "--etcd-cert",
            envvar="SHRIKE_ETCD_CERT",
            metavar="FILE",
            help="PEM file of the client certificate to show etcd, when it checks them (with --etcd-key).",
            show_envvar=True,
        ),
    ] = None,
    etcd_key: Annotated[
        Path | None,
        typer.Option(
            "--etcd-key",
            envvar="SHRIKE_ETCD_KEY",
            metavar="FILE",
            help="PEM file of the client certificate's private key.",
            show_envvar=True,
        ),
    ] = None,
    etcd_user: Annotated[
        str | None,
        typer.Option(
            "--etcd-user",
            envvar="SHRIKE_ETCD_USER",
            metavar="USER[:PASSWORD]",
            help="etcd user, when etcd has authentication enabled; USER:PASSWORD as with etcdctl.",
            show_envvar=True,
        ),
    ] = None,
    etcd_password: Annotated[
        str | None,
        typer.Option(
            "--etcd-password",
            envvar="SHRIKE_ETCD_PASSWORD",
            metavar="PASSWORD",
            help="The etcd user's password; prefer the environment variable, which ps does not show.",
            show_envvar=True,
        ),
    ] = None,
    host_name: Annotated[
        str | None,
        typer.Option(
            "--host-name",
            envvar="SHRIKE_HOST_NAME",
            parser=parse_host_name,
            metavar="NAME",
            help="The name this host's leases carry, the same every time it runs; two servers on one machine"
            " (tests, a server in a container) with two names are two hosts [default: the machine's hostname].",
            show_envvar=True,
        ),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar=["DEBUG", "IPAM_DEBUG"],
            help="Log what happens, one line per step, on stderr; --debug=true and --debug=false also work.",
            show_envvar=True,
        ),
    ] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            envvar="SHRIKE_LOG_FORMAT",
            help="How stderr is written: text, or json (one object a line: time, level, event and the"
            " request's fields) for log shippers; errors and notes too.",
            show_envvar=True,
            case_sensitive=False,
        ),
    ] = LogFormat.text,
) -> None:
    configure_logging(debug, log_format)
    ctx.obj = Globals(
        cluster_store=given_cluster_store(ctx, cluster_store),
        state_dir=state_dir,
        store_timeout=store_timeout,
        store_prefix=store_prefix,
        debug=debug,
        etcd_ca=etcd_ca,
        etcd_cert=etcd_cert,
        etcd_key=etcd_key,
        etcd_user=etcd_user,
        etcd_password=etcd_password,
        host_name=host_name,
    )
