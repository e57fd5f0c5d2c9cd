"""Talking to dockerd: how shrike makes a Docker client, and the one error it raises
when dockerd fails it.

The dockerd is the one ``DOCKER_HOST`` names, else the local socket (the rest of the
Docker SDK's environment is honoured too), and the API version is negotiated: dockerd
may be older than the SDK. :func:`docker_errors` turns the SDK's failures
(unreachable, refused, timed out) into a :class:`DockerError` of one line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import docker
import docker.errors
import requests

from .errors import ShrikeError

#: Seconds a call to dockerd may take (the event stream has no timeout).
DOCKER_TIMEOUT = 30.0

#: Makes a client: code that runs long takes one, so tests can name their own dockerd.
DockerConnect = Callable[[], docker.DockerClient]


class DockerError(ShrikeError):
    """dockerd could not be reached, did not answer, or refused a request."""


def docker_host() -> str:
    """Where the client goes, for messages."""
    return os.environ.get("DOCKER_HOST") or "the default socket"


def docker_client(timeout: float = DOCKER_TIMEOUT, *, failure: str | None = None) -> docker.DockerClient:
    """A client of the dockerd ``DOCKER_HOST`` names (else the local socket), with the API
    version negotiated; asking dockerd for it checks that it answers. ``failure`` begins
    the error's message, as for :func:`docker_errors`."""
    with docker_errors(failure):
        return docker.from_env(version="auto", timeout=timeout)


@contextlib.contextmanager
def docker_errors(failure: str | None = None) -> Iterator[None]:
    """Turn the SDK's failures (unreachable, refused, timed out) into one clear line:
    ``failure`` (by default ``cannot use dockerd at WHERE``), then the reason."""
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
        raise DockerError(f"{failure or f'cannot use dockerd at {docker_host()}'}: {_reason(err)}") from None


def _reason(err: BaseException) -> str:
    """The innermost cause (``Connection refused``), not the SDK's and requests' wrappers
    around it; an error of dockerd's own (an API error) as it is."""
    if isinstance(err, docker.errors.APIError):
        return str(err.explanation or err)
    for _ in range(10):  # the wrappers nest a few deep; never loop on a cycle
        nested = next((a for a in err.args if isinstance(a, BaseException)), None) or err.__cause__ or err.__context__
        if nested is None:
            break
        err = nested
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)
