"""shrike against an etcd that wants TLS, a trusted client certificate and a password
(tests/fixtures/etcd_secure.py): the commands work with the right credentials, and every
wrong or missing one ends in a single line on stderr, quickly."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shrike_cli.cli import app
from shrike_cli.errors import InvalidInput
from shrike_cli.ipam import Ipam
from shrike_cli.stores import EtcdStore, StoreError
from tests.fixtures.etcd_secure import SHRIKE_PREFIX, SecureEtcd

#: Every failure here is local (loopback, refused handshakes), so a slow one is a hang.
QUICK = 4.0


def unique_prefix() -> str:
    """A prefix of one test's own, inside what the ``shrike`` etcd user may use."""
    return f"{SHRIKE_PREFIX}test-{uuid.uuid4().hex}/"


def credentials(etcd: SecureEtcd) -> dict[str, str]:
    """All that reaching the secure etcd takes, as the CLI's environment variables."""
    pki = etcd.pki
    return {
        "CLUSTER_STORE": etcd.url,
        "SHRIKE_STORE_PREFIX": unique_prefix(),
        "SHRIKE_ETCD_CA": str(pki.ca),
        "SHRIKE_ETCD_CERT": str(pki.client_cert),
        "SHRIKE_ETCD_KEY": str(pki.client_key),
        "SHRIKE_ETCD_USER": etcd.user,
        "SHRIKE_ETCD_PASSWORD": etcd.password,
    }


def options(etcd: SecureEtcd) -> list[str]:
    """The same as command line options."""
    pki = etcd.pki
    return [
        "--cluster-store", etcd.url,
        "--store-prefix", unique_prefix(),
        "--etcd-ca", str(pki.ca),
        "--etcd-cert", str(pki.client_cert),
        "--etcd-key", str(pki.client_key),
        "--etcd-user", etcd.user,
        "--etcd-password", etcd.password,
    ]  # fmt: skip


def without(args: list[str], *names: str) -> list[str]:
    """``args`` less the named options and their values."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        else:
            kept.append(arg)
    return kept


def replaced(args: list[str], name: str, value: str) -> list[str]:
    return [*without(args, name), name, value]


#: The CLI's variables, cleared so that the machine's environment cannot change a test.
CLEAN_ENV = dict.fromkeys(
    [
        "CLUSTER_STORE", "SHRIKE_STORE_PREFIX", "DEBUG",
        "SHRIKE_ETCD_CA", "SHRIKE_ETCD_CERT", "SHRIKE_ETCD_KEY", "SHRIKE_ETCD_USER", "SHRIKE_ETCD_PASSWORD",
    ],
    "",
)  # fmt: skip


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """Run the CLI in-process: exit code, stdout, stderr and how long it took."""
    start = time.monotonic()
    result = CliRunner().invoke(app, args, env={**CLEAN_ENV, **(env or {})})
    return result.exit_code, result.stdout, result.stderr, time.monotonic() - start


def assert_one_line_error(code: int, stdout: str, stderr: str, seconds: float, *words: str) -> str:
    assert code == 1, stderr
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shrike: error: "), stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert seconds < QUICK, f"took {seconds:.1f} s: {lines[0]}"
    return lines[0]


def declare_and_list(args: list[str], env: dict[str, str] | None = None) -> None:
    """host-range, ip-range and leases through ``invoke`` all succeed."""
    hosts = invoke(
        [*args, "host-range", "--ip-start=10.77.0.1/24", "--ip-end=10.77.0.20/24", "--gateway=10.77.0.254"], env
    )
    assert hosts[0] == 0, hosts[2]
    containers = invoke([*args, "ip-range", "--ip-start=10.77.0.100/24", "--ip-end=10.77.0.109/24"], env)
    assert containers[0] == 0, containers[2]
    assert "in 10.77.0.0/24" in containers[1]
    reserved = invoke([*args, "reserve", "web1"], env)
    assert (reserved[0], reserved[1]) == (0, "10.77.0.100\n"), reserved[2]
    leases = invoke([*args, "leases", "-o", "json"], env)
    assert leases[0] == 0, leases[2]
    assert '"10.77.0.100"' in leases[1]
    listing = invoke([*args, "ip-range", "-o", "json"], env)
    assert listing[0] == 0 and '"10.77.0.100"' in listing[1], listing[2]


# ------------------------------------------------------------------------- it works


def test_commands_with_options(secure_etcd: SecureEtcd) -> None:
    declare_and_list(options(secure_etcd))


def test_commands_with_environment_variables(secure_etcd: SecureEtcd) -> None:
    declare_and_list([], credentials(secure_etcd))


def test_user_colon_password(secure_etcd: SecureEtcd) -> None:
    args = without(options(secure_etcd), "--etcd-password", "--etcd-user")
    code, _, stderr, _ = invoke([*args, "--etcd-user", f"{secure_etcd.user}:{secure_etcd.password}", "leases"])
    assert code == 0, stderr


def test_real_process_with_environment_variables_only(secure_etcd: SecureEtcd) -> None:
    env = {**os.environ, **CLEAN_ENV, **credentials(secure_etcd)}

    def shrike(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["shrike", *args], capture_output=True, text=True, env=env, timeout=60)

    hosts = shrike("host-range", "--ip-start=10.78.0.1/24", "--ip-end=10.78.0.9/24", "--gateway=10.78.0.254")
    assert hosts.returncode == 0, hosts.stderr
    assert shrike("ip-range", "--ip-start=10.78.0.50/24", "--ip-end=10.78.0.59/24").returncode == 0
    assert shrike("reserve", "db").stdout == "10.78.0.50\n"
    leases = shrike("leases")
    assert leases.returncode == 0 and "10.78.0.50" in leases.stdout, leases.stderr

    # A wrong password, in a real process: gRPC's own log lines must not reach stderr either.
    start = time.monotonic()
    env["SHRIKE_ETCD_PASSWORD"] = "not-the-password"
    wrong = shrike("leases")
    assert_one_line_error(
        wrong.returncode, wrong.stdout, wrong.stderr, time.monotonic() - start, secure_etcd.url, "authentication failed"
    )
    # And without the CA: the handshake failure that gRPC would also log.
    env["SHRIKE_ETCD_PASSWORD"], env["SHRIKE_ETCD_CA"] = secure_etcd.password, ""
    start = time.monotonic()
    untrusted = shrike("leases")
    assert_one_line_error(
        untrusted.returncode, untrusted.stdout, untrusted.stderr, time.monotonic() - start, "CERTIFICATE_VERIFY_FAILED"
    )


# --------------------------------------------------------- each wrong credential


def test_wrong_password(secure_etcd: SecureEtcd) -> None:
    args = replaced(options(secure_etcd), "--etcd-password", "not-the-password")
    line = assert_one_line_error(*invoke([*args, "leases"]), secure_etcd.url)
    assert "authentication failed" in line


def test_no_password_at_all(secure_etcd: SecureEtcd) -> None:
    args = without(options(secure_etcd), "--etcd-user", "--etcd-password")
    assert_one_line_error(*invoke([*args, "leases"]), secure_etcd.url, "permission denied")


def test_user_without_password(secure_etcd: SecureEtcd) -> None:
    args = without(options(secure_etcd), "--etcd-password")
    assert_one_line_error(*invoke([*args, "leases"]), "both a user and a password")


def test_prefix_the_user_may_not_use(secure_etcd: SecureEtcd) -> None:
    args = replaced(options(secure_etcd), "--store-prefix", "/elsewhere/")
    assert_one_line_error(*invoke([*args, "leases"]), secure_etcd.url, "permission denied")


def test_untrusted_server_certificate(secure_etcd: SecureEtcd) -> None:
    # Without --etcd-ca the system's CAs are used, and none of them signed the test CA.
    args = without(options(secure_etcd), "--etcd-ca")
    line = assert_one_line_error(*invoke([*args, "leases"]), secure_etcd.url, "CERTIFICATE_VERIFY_FAILED")
    assert "give the CA certificate" in line


@pytest.mark.parametrize("which", ["none", "foreign"])
def test_client_certificate_refused(secure_etcd: SecureEtcd, which: str) -> None:
    args = without(options(secure_etcd), "--etcd-cert", "--etcd-key")
    if which == "foreign":
        # The server's own certificate: signed by the right CA, but for servers only.
        args += ["--etcd-cert", str(secure_etcd.pki.server_cert), "--etcd-key", str(secure_etcd.pki.server_key)]
    line = assert_one_line_error(*invoke([*args, "leases"]), secure_etcd.url)
    assert "client certificate" in line


def test_client_key_of_another_certificate(secure_etcd: SecureEtcd) -> None:
    args = replaced(options(secure_etcd), "--etcd-key", str(secure_etcd.pki.server_key))
    assert_one_line_error(*invoke([*args, "leases"]), secure_etcd.url, "client key")


@pytest.mark.parametrize("option", ["--etcd-ca", "--etcd-cert", "--etcd-key"])
def test_missing_certificate_file(secure_etcd: SecureEtcd, option: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    args = replaced(options(secure_etcd), option, str(missing))
    assert_one_line_error(*invoke([*args, "leases"]), str(missing), "No such file or directory")


def test_certificate_file_not_pem(secure_etcd: SecureEtcd, tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    args = replaced(options(secure_etcd), "--etcd-ca", str(garbage))
    assert_one_line_error(*invoke([*args, "leases"]), str(garbage), "not a PEM file")


def test_plain_http_against_the_tls_server(secure_etcd: SecureEtcd) -> None:
    http_url = secure_etcd.url.replace("https://", "http://")
    args = without(options(secure_etcd), "--etcd-ca", "--etcd-cert", "--etcd-key")
    line = assert_one_line_error(*invoke([*replaced(args, "--cluster-store", http_url), "leases"]), http_url)
    assert "https://" in line


def test_certificates_with_a_plain_http_url(secure_etcd: SecureEtcd) -> None:
    http_url = secure_etcd.url.replace("https://", "http://")
    args = replaced(options(secure_etcd), "--cluster-store", http_url)
    assert_one_line_error(*invoke([*args, "leases"]), "need https://")


# ------------------------------------------------------------------ the library


def open_secure_store(etcd: SecureEtcd, password: str | None = None) -> EtcdStore:
    """An :class:`EtcdStore` with all the credentials (the password ``password`` if given)."""
    pki = etcd.pki
    return EtcdStore(
        etcd.url,
        prefix=unique_prefix(),
        ca_cert=pki.ca,
        cert_cert=pki.client_cert,
        cert_key=pki.client_key,
        user=etcd.user,
        password=password or etcd.password,
    )


@pytest.fixture
def secure_store(secure_etcd: SecureEtcd) -> Iterator[EtcdStore]:
    store = open_secure_store(secure_etcd)
    try:
        yield store
    finally:
        store.close()


def test_ipam_allocate_and_release(secure_store: EtcdStore) -> None:
    ipam = Ipam(secure_store, host="tls-host")
    ipam.declare_host_range("10.79.0.1/24", "10.79.0.9/24", "10.79.0.254")
    ipam.declare_ip_range("10.79.0.100/24", "10.79.0.101/24")
    first = ipam.request_address("10.79.0.0/24")
    second = ipam.request_address("10.79.0.0/24")
    assert {first.ip, second.ip} == {"10.79.0.100", "10.79.0.101"}
    assert ipam.release_address(first.ip) is not None
    assert ipam.request_address("10.79.0.0/24").ip == first.ip
    assert {lease.ip for lease in ipam.leases()} == {"10.79.0.100", "10.79.0.101"}


def test_library_errors(secure_etcd: SecureEtcd) -> None:
    pki = secure_etcd.pki
    with pytest.raises(InvalidInput, match="both its key and its certificate"):
        EtcdStore(secure_etcd.url, ca_cert=pki.ca, cert_cert=pki.client_cert)
    store = open_secure_store(secure_etcd, password="wrong")
    try:
        with pytest.raises(StoreError, match="authentication failed"):
            store.get("x")
    finally:
        store.close()
