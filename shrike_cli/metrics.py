"""What shrike counts and times, for Prometheus (``shrike server --metrics-address``).

The metrics are module-level, like loggers: the few places that decide something worth
counting do it with one call, whether or not a server exports them (a command of the CLI
counts into a registry nobody reads, for a microsecond). :mod:`.monitoring` serves
them with this host's name as a label, next to the figures it reads from the store.

Every label takes a bounded set of values: endpoint names, reasons and kinds written
in the code, never an address, a MAC or a container.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# A "_created" time series next to every counter is noise here: a counter starts with its
# process, and Prometheus sees that from the reset.
disable_created_metrics()

# -- how an address was chosen (label "how" of ALLOCATIONS)
#: from the never-used or the longest-idle addresses of a range
DYNAMIC = "dynamic"
#: the one asked for (Docker's --ip, or a reservation of a given address)
EXPLICIT = "explicit"
#: the address the container's MAC held before, given back to it
STICKY = "sticky"

ALLOCATIONS = Counter(
    "shrike_allocations",
    "Container addresses handed out, by how the address was chosen (dynamic, explicit, sticky).",
    ["how"],
)
_BY_HOW = {how: ALLOCATIONS.labels(how) for how in (DYNAMIC, EXPLICIT, STICKY)}
RELEASES = Counter("shrike_releases", "Container addresses given back by their container.")
REFUSALS = Counter(
    "shrike_plugin_refusals",
    "Plugin requests answered with an error, by endpoint and reason (full, in_use, host_address, ...).",
    ["endpoint", "reason"],
)
REQUEST_SECONDS = Histogram(
    "shrike_plugin_request_duration_seconds",
    "Time to answer a plugin request, by endpoint.",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STORE_SECONDS = Histogram(
    "shrike_store_operation_duration_seconds",
    "Time of one store operation (get, get_prefix, txn).",
    ["operation"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
STORE_ERRORS = Counter(
    "shrike_store_errors", "Store operations that failed, by kind (unreachable, timeout, refused, ...).", ["kind"]
)
CAS_RETRIES = Counter("shrike_cas_retries", "Compare-and-swap transactions that lost a race and were tried again.")
LEAKS_FOUND = Counter(
    "shrike_leaks_found",
    "Leaked addresses (held, no container holds them) found by the periodic reconcile, each counted once.",
)
LEAKS_FREED = Counter("shrike_leaks_freed", "Leaked addresses the periodic reconcile released.")
LEAKED = Gauge("shrike_leaked_addresses", "Leaked addresses of this host at the last periodic reconcile.")


def allocated(how: str) -> None:
    """A container address was handed out; ``how`` is DYNAMIC, EXPLICIT or STICKY."""
    _BY_HOW[how].inc()


def released() -> None:
    RELEASES.inc()


def cas_retry() -> None:
    CAS_RETRIES.inc()


# Each request and store operation is timed: the children of their histograms are looked
# up once (labels() costs as much as observe()).
_BY_ENDPOINT: dict[str, Histogram] = {}
_BY_OPERATION: dict[str, Histogram] = {}


def plugin_request(endpoint: str, seconds: float, refused: str | None = None) -> None:
    """A plugin request of ``endpoint`` answered in ``seconds``; ``refused`` is the
    reason of an error answer."""
    timer = _BY_ENDPOINT.get(endpoint) or _BY_ENDPOINT.setdefault(endpoint, REQUEST_SECONDS.labels(endpoint))
    timer.observe(seconds)
    if refused is not None:
        REFUSALS.labels(endpoint, refused).inc()


def store_operation(operation: str, seconds: float, error: str | None = None) -> None:
    timer = _BY_OPERATION.get(operation) or _BY_OPERATION.setdefault(operation, STORE_SECONDS.labels(operation))
    timer.observe(seconds)
    if error is not None:
        STORE_ERRORS.labels(error).inc()


def reconciled(new_leaks: int, freed: int, leaked: int) -> None:
    """A periodic reconcile found ``new_leaks`` leaks not seen by the one before,
    released ``freed``, and left ``leaked`` held with no container."""
    LEAKS_FOUND.inc(new_leaks)
    LEAKS_FREED.inc(freed)
    LEAKED.set(leaked)
