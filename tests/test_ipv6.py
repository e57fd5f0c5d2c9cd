"""IPv6 next to IPv4: the address values, declarations, allocation, reservations, MAC
indexes, pools and the plugin protocol, on both stores (no dockerd: tests/test_dual_stack.py
runs a real one)."""

from __future__ import annotations

import json
import subprocess

import pytest

from shrike_cli.errors import Conflict, InvalidInput, NotFound
from shrike_cli.ipam import Ipam
from shrike_cli.model import (
    IP,
    V6_START,
    IPv4,
    IPv6,
    Subnet,
    eui64,
    holds_eui64_addresses,
    parse_range,
)
from shrike_cli.plugin.protocol import Driver
from shrike_cli.pools import Pool
from shrike_cli.state import State
from shrike_cli.stores import Store
from shrike_cli.stores.base import Put
from tests.fixtures.plugin import SHRIKE

LAN6 = "2001:db8:1::/64"
#: a container range of 2^64 - 2^16 addresses: every interface id from ::1:0 on
WIDE = ("2001:db8:1::1:0/64", "2001:db8:1:0:ffff:ffff:ffff:ffff/64")


@pytest.fixture
def ipam(store: Store) -> Ipam:
    """Host "hostA" on a dual-stack LAN: 198.51.100.0/24 (hosts .1-.50, containers
    .100-.109) and 2001:db8:1::/64 (hosts ::1-::ff, router fe80::1, containers WIDE)."""
    ipam = Ipam(store, host="hostA")
    ipam.declare_host_range("198.51.100.1/24", "198.51.100.50/24", "198.51.100.254")
    ipam.declare_ip_range("198.51.100.100/24", "198.51.100.109/24")
    ipam.declare_host_range("2001:db8:1::1/64", "2001:db8:1::ff/64", "fe80::1")
    ipam.declare_ip_range(*WIDE)
    return ipam


# ------------------------------------------------------------------ values
@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("2001:DB8:1::1", "2001:db8:1::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  # one zero group stays
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("fe80::1", "fe80::1"),
    ],
)
def test_ipv6_text_is_canonical_so_one_address_is_one_key(text: str, canonical: str) -> None:
    ip = IP(text)
    assert (ip, type(ip), ip.version) == (canonical, IPv6, 6)
    assert IP(int(ip)) == canonical and int(IP(canonical)) == int(ip)
    assert json.dumps({"ip": ip}) == json.dumps({"ip": canonical})


def test_the_families_never_meet_in_the_integers() -> None:
    assert int(IP("255.255.255.255")) < V6_START <= int(IP("2001:db8::"))
    assert type(IP("198.51.100.1")) is IPv4 and IPv4(int(IP("198.51.100.1"))) == "198.51.100.1"
    for refused in ("::", "::1", "::198.51.100.1", "::ffff:198.51.100.1", "::ffff:0:1"):
        with pytest.raises(InvalidInput, match="not a LAN address"):
            IP(refused)
    with pytest.raises(InvalidInput, match="is not an IPv4 address"):
        IPv4("2001:db8::1")
    with pytest.raises(InvalidInput, match="is not an IPv6 address"):
        IPv6("198.51.100.1")
    with pytest.raises(InvalidInput, match="would hold ::/80"):
        Subnet.parse("2001:db8::/2")
    v4, v6 = Subnet.parse("198.51.100.0/24"), Subnet.parse(LAN6)
    assert not v6.contains(int(IP("198.51.100.1"))) and not v4.contains(int(IP("2001:db8:1::1")))


def test_an_ipv6_subnet_has_no_broadcast_address() -> None:
    subnet = Subnet.parse(LAN6)
    assert (subnet.version, subnet.broadcast - subnet.network) == (6, 2**64 - 1)
    assert not subnet.covers(subnet.network, subnet.network)  # the Subnet-Router anycast address
    assert subnet.covers(subnet.network + 1, subnet.broadcast)
    parsed = parse_range("2001:db8:1::/64", "2001:db8:1:0:ffff:ffff:ffff:ffff/64")
    assert parsed.notes == ("skipping 2001:db8:1::: the Subnet-Router anycast address of 2001:db8:1::/64",)
    assert parsed.range.size == 2**64 - 1


def test_eui64_addresses_as_slaac_forms_them() -> None:
    # RFC 4291 appendix A: ff:fe in the middle, the universal/local bit flipped.
    assert eui64(Subnet.parse(LAN6), "02:42:c6:33:64:96") == "2001:db8:1:0:42:c6ff:fe33:6496"
    assert eui64(Subnet.parse(LAN6), "00:1b:21:0a:0b:0c") == "2001:db8:1:0:21b:21ff:fe0a:b0c"
    with pytest.raises(InvalidInput, match="need an IPv6 /64"):
        eui64(Subnet.parse("2001:db8:1::/80"), "02:42:c6:33:64:96")
    low = (int(IP("2001:db8:1::100")), int(IP("2001:db8:1::ffff")))
    assert not holds_eui64_addresses(*low)
    assert holds_eui64_addresses(int(IP("2001:db8:1::1:0")), int(IP("2001:db8:1:0:ffff:ffff:ffff:ffff")))
    one = int(IP("2001:db8:1:0:42:c6ff:fe33:6496"))
    assert holds_eui64_addresses(one, one) and not holds_eui64_addresses(one + 2**24, one + 2**24)


# ------------------------------------------------------------ declarations
def test_a_64_costs_what_a_24_costs(store: Store) -> None:
    ipam = Ipam(store, host="hostA")
    ipam.declare_host_range("2001:db8:1::1/64", "2001:db8:1::ff/64", "fe80::1")
    declared = ipam.declare_ip_range(*WIDE)
    assert [entry.key for entry in store.get_prefix("")] == ["config"]  # one key, whatever the size
    assert declared.range.size == 2**64 - 2**16
    assert "SLAAC hosts form" in declared.notes[0]  # a range holding EUI-64 interface ids
    # Allocating from it writes what the allocation holds, nothing per address of the range.
    leases = [ipam.request_address(LAN6).ip for _ in range(40)]
    assert leases[:2] == ["2001:db8:1::1:0", "2001:db8:1::1:1"] and len(set(leases)) == 40
    assert len(store.get_prefix("")) == 1 + 40 + 1  # config, leases, one cursor
    listing = {r["start"]: r for r in (u.to_json() for u in _usage(ipam))}
    assert listing["2001:db8:1::1:0"]["free"] == 2**64 - 2**16 - 40


def _usage(ipam: Ipam) -> list:
    from shrike_cli.ranges import usage

    return usage(ipam.config(), ipam.leases())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("2001:db8:1::1/64", "2001:db8:1::ff/64", "198.51.100.254"), "not an IPv6 address, as the subnet"),
        (("2001:db8:1::1/64", "2001:db8:1::ff/64", "2001:db8:2::1"), "not a usable address of the subnet"),
        (("2001:db8:1::1/64", "2001:db8:1::ff/129", "fe80::1"), r"invalid prefix length \(1-128\)"),
        (("2001:db8:1::1/64", "2001:db8:2::ff/64", "fe80::1"), "outside 2001:db8:1::/64"),
        (("::1/64", "::ff/64", "fe80::1"), "not a LAN address"),
        (("2001:db8:1::g/64", "2001:db8:1::ff/64", "fe80::1"), "not a valid IPv4 or IPv6 address"),
    ],
)
def test_bad_ipv6_declarations_change_nothing(store: Store, args: tuple[str, str, str], message: str) -> None:
    ipam = Ipam(store, host="hostA")
    with pytest.raises(InvalidInput, match=message):
        ipam.declare_host_range(*args)
    assert store.get_prefix("") == []


def test_a_link_local_or_global_gateway_and_both_lans(ipam: Ipam) -> None:
    config = ipam.config()
    assert config.gateway_of(Subnet.parse(LAN6)) == "fe80::1"
    assert sorted(map(str, config.lans)) == ["198.51.100.0/24", LAN6]
    with pytest.raises(InvalidInput, match="already has the gateway fe80::1"):
        ipam.declare_host_range("2001:db8:1::100:0/64", "2001:db8:1::100:ff/64", "2001:db8:1::fe")
    with pytest.raises(InvalidInput, match="overlaps the container range"):
        ipam.declare_host_range("2001:db8:1::2:0/64", "2001:db8:1::2:ff/64")


# -------------------------------------------------------------- allocation
def test_each_family_from_its_own_ranges_with_the_same_rules(ipam: Ipam) -> None:
    v4 = ipam.request_address("198.51.100.0/24", mac="02:42:00:00:00:01")
    v6 = ipam.request_address(LAN6, mac="02:42:00:00:00:01")
    assert (v4.cidr, v6.cidr) == ("198.51.100.100/24", "2001:db8:1::1:0/64")
    assert ipam.request_address(LAN6, "2001:db8:1::1:99").cidr == "2001:db8:1::1:99/64"
    for ip, message in (
        ("2001:db8:1::1:99", "already in use"),
        ("2001:db8:1::5", "is a host address"),
        ("198.51.100.105", "outside the subnet 2001:db8:1::/64"),
        ("2001:db8:2::1", "outside the subnet"),
    ):
        with pytest.raises((Conflict, InvalidInput), match=message):
            ipam.request_address(LAN6, ip)
    # The MAC index is per family: a dual-stack container's MAC points at both addresses,
    # and each comes back to it while free.
    ipam.release_address(v4.ip)
    ipam.release_address(v6.ip)
    assert ipam.request_address(LAN6, mac="02:42:00:00:00:01").ip == v6.ip
    assert ipam.request_address("198.51.100.0/24", mac="02:42:00:00:00:01").ip == v4.ip
    keys = {entry.key: entry.value for entry in ipam.store.get_prefix("macs/")}
    assert keys == {"macs/02:42:00:00:00:01": {"ip": v4.ip}, "macs/02:42:00:00:00:01/6": {"ip": v6.ip}}


def test_released_v6_addresses_come_back_longest_idle_first_and_parked_ones_wait(ipam: Ipam) -> None:
    ipam.declare_ip_range("2001:db8:1::100/64", "2001:db8:1::101/64")
    small = Pool.of(LAN6, "2001:db8:1::100/127")
    first, second = (ipam.request_address(small).ip for _ in range(2))
    assert (first, second) == ("2001:db8:1::100", "2001:db8:1::101")
    owner = {"container_id": "c1", "name": "web1", "network": "n"}
    ipam.set_owner(ipam.lease(first), ipam.state.lease(first).revision, owner)
    assert ipam.release_address(first, keep=True).state == "parked"
    ipam.release_address(second)
    assert ipam.request_address(small).ip == second  # the parked one waits while another is free
    assert ipam.request_address(small, owner={"name": "web1"}, returning=None).ip == first  # nothing else left


def test_reservations_hold_one_address_of_each_family(ipam: Ipam) -> None:
    v4 = ipam.reserve("web1")
    v6 = ipam.reserve("web1", version=6)
    assert (v4.ip.version, v6.ip.version) == (4, 6)
    assert ipam.reserve("web1").ip == v4.ip and ipam.reserve("web1", version=6).ip == v6.ip
    assert ipam.reserve("db", ip="2001:db8:1::1:42").ip == "2001:db8:1::1:42"
    with pytest.raises(InvalidInput, match="not of the family asked for"):
        ipam.reserve("db", ip="2001:db8:1::1:43", version=4)
    assert ipam.reserved_families("web1") == [4, 6]
    # A request naming its container gets its reservation of the pool's family.
    assert ipam.request_address(LAN6, owner={"name": "web1"}).ip == v6.ip
    assert ipam.release_name("web1", 6).state == "held"  # its running container keeps it
    assert ipam.reserved_families("web1") == [4]
    with pytest.raises(NotFound, match="no IPv6 reservation named web1"):
        ipam.release_name("web1", 6)
    keys = [entry.key for entry in ipam.store.get_prefix("names/")]
    assert keys == ["names/db/6", "names/web1"]


def test_only_ipv6_lans_reserve_ipv6_by_default(store: Store) -> None:
    ipam = Ipam(store, host="hostA")
    ipam.declare_host_range("2001:db8:1::1/64", "2001:db8:1::ff/64", "fe80::1")
    ipam.declare_ip_range("2001:db8:1::100/64", "2001:db8:1::1ff/64")
    assert ipam.reserve("web1").ip == "2001:db8:1::100"


def test_addresses_derived_from_macs_need_no_state(ipam: Ipam) -> None:
    ipam.declare_host_range("2001:db8:2::1/64", "2001:db8:2::ff/64", "fe80::1")
    ipam.declare_ip_range("2001:db8:2::100/64", "2001:db8:2::1ff/64")
    pool = Pool.of("2001:db8:2::/64", eui64=True)
    assert Pool.from_id(pool.id) == pool and pool.id == "shrike/2001:db8:2::/64+eui64"
    lease = ipam.request_address(pool, mac="02:42:c6:33:64:96")
    assert (lease.ip, lease.range) == ("2001:db8:2:0:42:c6ff:fe33:6496", "")
    assert ipam.store.get_prefix("macs/") == []  # the MAC finds it without an index
    # The same MAC elsewhere (another network, a stale request) does not get it twice.
    with pytest.raises(Conflict, match="already in use"):
        ipam.request_address(pool, mac="02:42:c6:33:64:96")
    # Released, even by dockerd (which asks to keep it for the container), it is forgotten.
    released = ipam.release_address(lease.ip, pool, keep=True)
    assert released is not None and released.state == "released"
    assert ipam.lease(lease.ip) is None
    assert ipam.request_address(pool, mac="02:42:c6:33:64:96").ip == lease.ip  # and comes back
    # An explicit --ip6 and a request without a MAC follow the usual rules.
    assert ipam.request_address(pool, "2001:db8:2::150").ip == "2001:db8:2::150"
    assert ipam.request_address(pool).ip == "2001:db8:2::100"
    # A globally unique MAC (universal/local bit clear) derives one with that bit set.
    assert ipam.request_address(pool, mac="00:1b:21:0a:0b:0c").ip == "2001:db8:2:0:21b:21ff:fe0a:b0c"
    with pytest.raises(InvalidInput, match="eui64"):
        Pool.of("198.51.100.0/24", eui64=True)


def test_export_and_import_carry_both_families(ipam: Ipam, tmp_path) -> None:
    from shrike_cli.stores import EmbeddedStore

    ipam.request_address(LAN6, mac="02:42:00:00:00:01")
    ipam.reserve("web1", version=6)
    document = State(ipam.store).export()
    assert set(document["records"]["macs"]) == {"02:42:00:00:00:01/6"}
    assert set(document["records"]["reservations"]) == {"web1/6"}
    target = EmbeddedStore(tmp_path / "copy.db")
    try:
        State(target).import_(json.loads(json.dumps(document)))
        copy = Ipam(target, host="hostA")
        assert copy.reserve("web1", version=6).ip == ipam.reserve("web1", version=6).ip
        assert copy.request_address(LAN6).ip == "2001:db8:1::1:2"
    finally:
        target.close()


# ---------------------------------------------------------------- protocol
def _call(ipam: Ipam, path: str, body: dict) -> tuple[int, dict]:
    return Driver(ipam).handle(f"/IpamDriver.{path}", json.dumps(body).encode())


def test_the_plugin_serves_ipv6_pools_and_addresses(ipam: Ipam) -> None:
    status, reply = _call(ipam, "RequestPool", {"Pool": LAN6, "SubPool": "", "Options": {}, "V6": True})
    assert (status, reply) == (200, {"PoolID": "shrike/2001:db8:1::/64", "Pool": LAN6, "Data": {}})
    pool_id = reply["PoolID"]
    mac = {"com.docker.network.endpoint.macaddress": "02:42:00:00:00:07"}
    assert _call(ipam, "RequestAddress", {"PoolID": pool_id, "Address": "", "Options": mac}) == (
        200,
        {"Address": "2001:db8:1::1:0/64", "Data": {}},
    )
    assert _call(ipam, "RequestAddress", {"PoolID": pool_id, "Address": "2001:db8:1::1:5", "Options": mac})[0] == 200
    status, reply = _call(ipam, "RequestAddress", {"PoolID": pool_id, "Address": "2001:db8:1::5", "Options": mac})
    assert status == 500 and "host address" in reply["Err"]
    assert _call(ipam, "ReleaseAddress", {"PoolID": pool_id, "Address": "2001:db8:1::1:5"}) == (200, {})
    assert ipam.lease("2001:db8:1::1:5").state == "released"
    # eui64 is an IPv6 pool's option; dockerd sends it with the IPv4 pool too, which ignores it.
    options = {"eui64": "true"}
    status, reply = _call(ipam, "RequestPool", {"Pool": LAN6, "SubPool": "", "Options": options, "V6": True})
    assert reply["PoolID"] == "shrike/2001:db8:1::/64+eui64"
    v4 = {"Pool": "198.51.100.0/24", "SubPool": "", "Options": options, "V6": False}
    assert _call(ipam, "RequestPool", v4)[1]["PoolID"] == "shrike/198.51.100.0/24"
    status, reply = _call(ipam, "RequestPool", {"Pool": "", "SubPool": "", "Options": {}, "V6": True})
    assert status == 500 and "--subnet for IPv6 too" in reply["Err"] and LAN6 in reply["Err"]
    status, reply = _call(ipam, "RequestPool", {"Pool": LAN6, "Options": {"eui64": "maybe"}, "V6": True})
    assert status == 500 and "give true or false" in reply["Err"]


# ---------------------------------------------------------------- the CLI
def _cli(store_args: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHRIKE, *store_args, *args], capture_output=True, text=True, timeout=60)


def test_the_cli_declares_lists_reserves_and_releases_ipv6(store_args: list[str]) -> None:
    for args in (
        ["host-range", "--ip-start=198.51.100.1/24", "--ip-end=198.51.100.50/24", "--gateway=198.51.100.254"],
        ["ip-range", "--ip-start=198.51.100.100/24", "--ip-end=198.51.100.109/24"],
        ["host-range", "--ip-start=2001:db8:1::1/64", "--ip-end=2001:db8:1::ff/64", "--gateway=fe80::1"],
        ["ip-range", f"--ip-start={WIDE[0]}", f"--ip-end={WIDE[1]}"],
    ):
        result = _cli(store_args, *args)
        assert result.returncode == 0, result.stderr
    assert "(18446744073709486080 addresses) in 2001:db8:1::/64, gateway fe80::1" in result.stdout
    assert "note: 2001:db8:1::1:0/64-2001:db8:1:0:ffff:ffff:ffff:ffff/64 holds addresses" in result.stderr
    listing = json.loads(_cli(store_args, "ip-range", "-o", "json").stdout)
    assert [(r["subnet"], r["size"], r["free"]) for r in listing] == [
        ("198.51.100.0/24", 10, 10),
        (LAN6, 2**64 - 2**16, 2**64 - 2**16),
    ]
    table = _cli(store_args, "ip-range").stdout
    assert "2001:db8:1:0:ffff:ffff:ffff:ffff" in table and "18446744073709486080" in table

    both = _cli(store_args, "reserve", "web1", "--family", "both")
    assert both.returncode == 0, both.stderr
    assert both.stdout.split() == ["198.51.100.100", "2001:db8:1::1:0"]  # prints only the addresses
    assert _cli(store_args, "reserve", "web1", "--family", "6").stdout == "2001:db8:1::1:0\n"
    assert _cli(store_args, "reserve", "web1").stdout == "198.51.100.100\n"
    leases = json.loads(_cli(store_args, "leases", "-o", "json").stdout)
    assert [(lease["ip"], lease["name"]) for lease in leases] == [
        ("198.51.100.100", "web1"),
        ("2001:db8:1::1:0", "web1"),
    ]

    one = _cli(store_args, "release", "--name", "web1", "--family", "6", "-o", "json")
    assert json.loads(one.stdout)["ip"] == "2001:db8:1::1:0"
    rest = _cli(store_args, "release", "--name", "web1")
    assert rest.stdout == "released 198.51.100.100\n"
    released = _cli(store_args, "release", "--ip", "2001:db8:1::1:0")
    assert released.returncode == 1 and "no container holds 2001:db8:1::1:0" in released.stderr

    for args, message in (
        (["release", "--ip", "2001:db8:1::zz"], "not a valid IPv4 or IPv6 address"),
        (["reserve", "db", "--ip", "::1"], "not a LAN address"),
        (["reserve", "db", "--family", "both", "--ip", "2001:db8:1::1:9"], "--family both goes without --ip"),
        (["release", "--ip", "2001:db8:1::1:0", "--family", "6"], "--family goes with --name"),
    ):
        refused = _cli(store_args, *args)
        assert refused.returncode in (1, 2) and message in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1 or refused.returncode == 2


def test_addresses_typed_in_any_form_find_their_lease(ipam: Ipam) -> None:
    lease = ipam.request_address(LAN6, "2001:DB8:1:0:0:0:1:7")
    assert lease.ip == "2001:db8:1::1:7"
    assert ipam.release_container("2001:0db8:0001::1:7").ip == "2001:db8:1::1:7"
    ipam.claim_host("2001:db8:1::9")
    assert ipam.release_host("2001:DB8:1::9").ip == "2001:db8:1::9"


def test_check_finds_nothing_wrong_with_a_dual_stack_store(ipam: Ipam) -> None:
    """``shrike check``'s rules hold for IPv6 records too: per-family index entries, an
    address derived from a MAC (outside every range), an eui64 pool's record."""
    ipam.declare_host_range("2001:db8:2::1/64", "2001:db8:2::ff/64", "fe80::1")
    ipam.declare_ip_range("2001:db8:2::100/64", "2001:db8:2::1ff/64")
    ipam.reserve("web1", version=4)
    ipam.reserve("web1", subnet=LAN6)
    mac = "02:42:00:00:00:01"
    released = [ipam.request_address(pool, mac=mac).ip for pool in ("198.51.100.0/24", LAN6)]
    for ip in released:
        ipam.release_address(ip)
    eui = Pool.of("2001:db8:2::/64", eui64=True)
    ipam.request_pool(eui)
    ipam.request_address(eui, mac="02:42:c6:33:64:96")
    state = State(ipam.store)
    assert state.check().findings == ()
    # A wrong entry is still found: the IPv6 reservation pointing at the IPv4 address.
    web1 = ipam.reserve("web1", version=4).ip
    ipam.store.txn([], [Put("names/web1/6", {"ip": web1})])
    [finding] = state.check().findings
    assert (finding.problem, finding.ip) == ("name-dangling", web1)
