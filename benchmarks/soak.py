"""A soak: the storm's churn (tests/fixtures/storm.py) at a steady rate for a long time,
without faults, watching that nothing drifts.

    sudo python3 benchmarks/soak.py                 # 30 minutes, a row every 2 minutes
    sudo python3 benchmarks/soak.py --minutes 5 --interval 60

Two hosts (each a private dockerd 20.10 in network namespaces of its own and a
``shrike server --debug --host-name storm-X`` following it) on one etcd; on each, one
random action (run, run --restart always, restart, stop, start, kill, rm, network
connect/disconnect, run --ip of a held address) every ``--pace`` seconds, on a shared
range of 16 addresses that fills at times. Each interval prints:

* actions/s: actions done by both hosts (refusals included: a full range refuses runs);
* violations: addresses on two running containers at once (across hosts, seen twice)
  plus the problems ``shrike check`` finds in the store (one snapshot), looked for every
  15 s: must be 0;
* RequestAddress p50 / p99 (ms): the server's own time for each successful call, from
  its ``--debug`` log lines (one per request, with its duration), both servers together;
* each server's resident memory (VmRSS of /proc/PID/status): must not grow with the
  actions done.

Not part of the tests (it runs for half an hour); exits 1 when a violation was seen.
Everything it starts it stops by PID, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import percentile  # noqa: E402
from tests.fixtures.dockerd import term_as_interrupt  # noqa: E402
from tests.fixtures.storm import Churn, Cluster, Log, addresses_twice, store_problems  # noqa: E402

#: Seconds between two looks for violations.
CHECK_EVERY = 15.0
#: A successful RequestAddress in the server's --debug log: "POST /IpamDriver.RequestAddress 200 1.2ms ...".
REQUEST = re.compile(rb"POST /IpamDriver\.RequestAddress 200 ([0-9.]+)ms")


@dataclass
class Interval:
    """What one interval saw."""

    minute: float
    actions_per_s: float
    violations: int
    requests: int
    p50: float
    p99: float
    rss_mib: tuple[float, ...]

    def row(self) -> str:
        rss = " / ".join(f"{r:.1f}" for r in self.rss_mib)
        return (
            f"| {self.minute:.0f} | {self.actions_per_s:.2f} | {self.violations} | {self.requests} |"
            f" {self.p50:.1f} / {self.p99:.1f} | {rss} |"
        )


HEADER = (
    "| minute | actions/s | violations | RequestAddress calls | RequestAddress p50 / p99 (ms) |"
    " server RSS a / b (MiB) |\n| --- | --- | --- | --- | --- | --- |"
)


def rss_mib(pid: int) -> float:
    """The resident memory of process ``pid`` (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Durations:
    """The RequestAddress durations the servers logged since the last call."""

    def __init__(self, logs: list[Path]) -> None:
        self.logs = logs
        self.offsets = [log.stat().st_size for log in logs]

    def read(self) -> list[float]:
        found = []
        for n, log in enumerate(self.logs):
            with open(log, "rb") as f:
                f.seek(self.offsets[n])
                data = f.read()
            end = data.rfind(b"\n") + 1  # a line being written waits for the next read
            self.offsets[n] += end
            found += [float(ms) for ms in REQUEST.findall(data[:end])]
        return found


def soak(workdir: Path, minutes: float, interval: float, pace: float, seed: int) -> list[Interval]:
    rows: list[Interval] = []
    with Cluster(workdir) as cluster:
        durations = Durations([host.server.log_path for host in cluster.hosts])
        log = Log()
        print(f"seed {seed}, {len(cluster.hosts)} hosts, an action every {pace:g} s on each", flush=True)
        print(HEADER, flush=True)
        with Churn(cluster, seed, log, pace=pace) as churn:
            started = time.monotonic()
            done = 0
            while (elapsed := time.monotonic() - started) < minutes * 60:
                begun = time.monotonic()
                end = begun + min(interval, minutes * 60 - elapsed)
                violations = []
                while (left := end - time.monotonic()) > 0:
                    time.sleep(min(CHECK_EVERY, left))
                    violations += addresses_twice(cluster) + store_problems(cluster)
                for violation in violations:
                    print(f"violation: {violation}", flush=True)
                actions = log.since(done)
                done += len(actions)
                took = durations.read() or [0.0]
                row = Interval(
                    minute=(time.monotonic() - started) / 60,
                    actions_per_s=len(actions) / (time.monotonic() - begun),
                    violations=len(violations),
                    requests=len(took),
                    p50=statistics.median(took),
                    p99=percentile(took, 99) if len(took) > 1 else took[0],
                    rss_mib=tuple(rss_mib(host.server.pid) for host in cluster.hosts),
                )
                rows.append(row)
                print(row.row(), flush=True)
            print("actions:", dict(sorted(churn.counts.items())), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    parser.add_argument("--interval", type=float, default=120.0, help="seconds per row (default 120)")
    parser.add_argument("--pace", type=float, default=0.5, help="seconds between one host's actions (default 0.5)")
    parser.add_argument("--seed", type=int, default=None, help="the churn's seed (default: random, printed)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, term_as_interrupt)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    with tempfile.TemporaryDirectory(prefix="shrike-soak-") as tmp:
        rows = soak(Path(tmp), args.minutes, args.interval, args.pace, seed)
    violations = sum(row.violations for row in rows)
    first, last = rows[0], rows[-1]
    growth = [b - a for a, b in zip(first.rss_mib, last.rss_mib, strict=True)]
    print(
        f"violations: {violations}; RSS from the first row to the last: "
        + ", ".join(f"{g:+.1f} MiB" for g in growth)
        + f"; RequestAddress p99 first / last row: {first.p99:.1f} / {last.p99:.1f} ms"
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
