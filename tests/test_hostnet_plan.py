"""create-network's plans, persist files and transaction runner, on hosts described as
values: no namespace, no Docker."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shrike_cli.errors import Conflict, InvalidInput, NotFound
from shrike_cli.hostnet import persist
from shrike_cli.hostnet.actions import AddShim, ClaimLease, CreateNetwork, WriteFiles
from shrike_cli.hostnet.docker_net import LABEL_PREFIX, NetworkView
from shrike_cli.hostnet.hostview import Address, HostView, Link, Route
from shrike_cli.hostnet.plan import Plan, Request, build_setup, build_teardown, labels_of, lan_of, move_order
from shrike_cli.hostnet.setup import Env, TransactionFailed, run
from shrike_cli.model import Config, IPv4, Lease, Subnet, parse_range

DATA = Path(__file__).parent / "data" / "persist"
ME = "hostA"
MAC = "02:00:00:00:00:39"

CONFIG = Config(
    lans={Subnet.parse("198.51.100.0/24"): IPv4("198.51.100.254")},
    host_ranges=(parse_range("198.51.100.1/24", "198.51.100.99/24").range,),
    ip_ranges=(parse_range("198.51.100.100/24", "198.51.100.199/24").range,),
)
LAN = lan_of(CONFIG, "198.51.100.39")

PRIMARY = Address("198.51.100.39", 24, "198.51.100.255")
SECONDARY = Address("198.51.100.41", 24, "198.51.100.255")
DEFAULT = Route("0.0.0.0/0", gateway="198.51.100.254")
NEAR = Route("203.0.113.0/25", gateway="198.51.100.253", metric=50)
FAR = Route("10.99.0.0/16", gateway="203.0.113.1")  # its gateway is behind NEAR
LINK_ONLY = Route("203.0.113.128/25", scope=253)


def host_before(**uplink: Any) -> HostView:
    """A host whose uplink up0 holds two addresses and four routes."""
    return HostView(
        links=(
            Link("lo", 1, mac="00:00:00:00:00:00", mtu=65536),
            replace(Link("up0", 2, "veth", MAC), **uplink),
        ),
        addresses={"lo": (Address("127.0.0.1", 8),), "up0": (PRIMARY, SECONDARY)},
        routes={"up0": (FAR, NEAR, LINK_ONLY, DEFAULT)},
    )


def host_after() -> HostView:
    """The same host once bridge mode is set up."""
    return HostView(
        links=(Link("lo", 1), Link("up0", 2, "veth", MAC, master="br0"), Link("br0", 3, "bridge", MAC)),
        addresses={"br0": (PRIMARY, SECONDARY)},
        routes={"br0": (DEFAULT, NEAR, LINK_ONLY, FAR)},
    )


def our_network(request: Request, *, containers: tuple[str, ...] = ()) -> NetworkView:
    return NetworkView(request.name, "id1", request.mode, request.plugin, labels_of(request, "up0"), containers)


def host_lease(host: str = ME) -> Lease:
    return Lease(ip="198.51.100.39", kind="host", state="held", subnet="198.51.100.0/24", host=host)


def steps(plan: Plan) -> list[str]:
    return [str(action) for action in plan.actions]


# ------------------------------------------------------------------------ LAN
def test_lan_comes_from_the_declarations() -> None:
    assert LAN.subnet.prefixlen == 24 and str(LAN.subnet) == "198.51.100.0/24"
    assert LAN.router == "198.51.100.254"
    assert LAN.container_cidrs == (
        "198.51.100.100/30", "198.51.100.104/29", "198.51.100.112/28", "198.51.100.128/26", "198.51.100.192/29",
    )  # fmt: skip


def test_an_address_outside_every_host_range_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not in any host range"):
        lan_of(CONFIG, "198.51.100.150")


# --------------------------------------------------------------- bridge setup
def test_bridge_plan_moves_everything_in_a_safe_order() -> None:
    plan = build_setup(Request("198.51.100.39"), LAN, host_before(), None, None, ME)
    assert steps(plan)[2:] == [
        f"set br0's MAC to {MAC}",
        "put 198.51.100.39/24, 198.51.100.41/24 on br0",
        "make up0 a port of br0",
        "move route default via 198.51.100.254 from up0 to br0",
        "move route 203.0.113.0/25 via 198.51.100.253 metric 50 from up0 to br0",
        "move route 203.0.113.128/25 from up0 to br0",
        "move route 10.99.0.0/16 via 203.0.113.1 from up0 to br0",
        # secondaries first: removing the primary first would take them along
        "remove 198.51.100.41/24, 198.51.100.39/24 from up0",
    ]
    assert isinstance(plan.actions[0], ClaimLease) and plan.actions[0].ip == "198.51.100.39"
    create = plan.actions[1]
    assert isinstance(create, CreateNetwork)
    spec = create.spec
    assert (spec.name, spec.driver, spec.ipam_driver) == ("mynet", "bridge", "shrike")
    assert (spec.subnet, spec.gateway) == ("198.51.100.0/24", "198.51.100.39")
    assert spec.aux_addresses == {"DefaultGatewayIPv4": "198.51.100.254"}
    assert spec.options == {
        "com.docker.network.bridge.name": "br0",
        "com.docker.network.bridge.enable_icc": "true",
        "com.docker.network.bridge.enable_ip_masquerade": "false",
        "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
        "com.docker.network.driver.mtu": "1500",
    }
    assert spec.labels == {
        LABEL_PREFIX + "mode": "bridge",
        LABEL_PREFIX + "host-ip": "198.51.100.39",
        LABEL_PREFIX + "uplink": "up0",
        LABEL_PREFIX + "bridge": "br0",
    }
    assert plan.to_json()["steps"] == steps(plan)


def test_route_order_default_first_then_on_link_then_the_rest() -> None:
    assert move_order([FAR, LINK_ONLY, NEAR, DEFAULT], [PRIMARY]) == (DEFAULT, LINK_ONLY, NEAR, FAR)


def test_options_reach_the_network() -> None:
    request = Request("198.51.100.39", name="lan", bridge="brlan", uplink="up0", plugin="talkingdata")
    plan = build_setup(request, LAN, host_before(mtu=9000), None, None, ME)
    spec = next(a.spec for a in plan.actions if isinstance(a, CreateNetwork))
    assert (spec.name, spec.ipam_driver, spec.options["com.docker.network.bridge.name"]) == (
        "lan",
        "talkingdata",
        "brlan",
    )
    assert spec.options["com.docker.network.driver.mtu"] == "9000"


def test_this_hosts_lease_is_not_claimed_again() -> None:
    plan = build_setup(Request("198.51.100.39"), LAN, host_before(), None, host_lease(), ME)
    assert not any(isinstance(a, ClaimLease) for a in plan.actions)


@pytest.mark.parametrize(
    "lease, message",
    [
        (host_lease("hostB"), "recorded as host hostB"),
        (replace(host_lease(), kind="gateway"), "recorded as a gateway address"),
    ],
)
def test_an_address_held_by_someone_else_is_refused(lease: Lease, message: str) -> None:
    with pytest.raises(Conflict, match=message):
        build_setup(Request("198.51.100.39"), LAN, host_before(), None, lease, ME)


@pytest.mark.parametrize(
    "request_, host, error, message",
    [
        (Request("198.51.100.40"), host_before(), NotFound, "no interface of this host holds 198.51.100.40"),
        (Request("198.51.100.39", uplink="eth1"), host_before(), InvalidInput, "is on up0, not on --uplink eth1"),
        (Request("198.51.100.39"), host_before(master="br9"), InvalidInput, "up0 is already a port of br9"),
        (Request("198.51.100.39"), host_before(up=False), InvalidInput, "the uplink up0 is down"),
        (Request("198.51.100.39"), host_before(kind="bridge"), InvalidInput, "is on bridge up0"),
        (Request("198.51.100.39", bridge="lo"), host_before(), Conflict, "--bridge lo is taken"),
        (Request("198.51.100.39", shim=True), host_before(), InvalidInput, "--macvlan-shim goes with --mode macvlan"),
        (Request("198.51.100.39", mode="ipvlan"), host_before(), InvalidInput, "--mode must be one of"),
    ],
)
def test_checks_fail_before_any_action(request_: Request, host: HostView, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build_setup(request_, LAN, host, None, None, ME)


def test_a_prefix_length_other_than_the_declared_lans_is_refused() -> None:
    host = host_before()
    host = replace(host, addresses={"up0": (Address("198.51.100.39", 22),)})
    with pytest.raises(InvalidInput, match="does not match the declared LAN 198.51.100.0/24"):
        build_setup(Request("198.51.100.39"), LAN, host, None, None, ME)


# ----------------------------------------------------------------- reruns
def test_a_rerun_on_a_host_set_up_plans_nothing() -> None:
    request = Request("198.51.100.39")
    plan = build_setup(request, LAN, host_after(), our_network(request), host_lease(), ME)
    assert plan.already and plan.actions == ()
    assert (plan.addresses, plan.routes) == ((PRIMARY, SECONDARY), (DEFAULT, NEAR, LINK_ONLY, FAR))


def test_a_network_of_that_name_not_made_by_us_is_refused() -> None:
    other = NetworkView("mynet", "id0", "bridge", "default", {})
    with pytest.raises(Conflict, match="already exists .* not made by create-network"):
        build_setup(Request("198.51.100.39"), LAN, host_before(), other, None, ME)


def test_our_network_with_other_settings_is_refused() -> None:
    existing = our_network(Request("198.51.100.39", bridge="br1"))
    with pytest.raises(Conflict, match=r"exists with other settings \(bridge\)"):
        build_setup(Request("198.51.100.39"), LAN, host_after(), existing, host_lease(), ME)


def test_our_network_on_a_host_half_set_up_is_refused() -> None:
    request = Request("198.51.100.39")
    with pytest.raises(Conflict, match="up0 is not a port of br0: run 'shrike create-network --undo"):
        build_setup(request, LAN, host_before(), our_network(request), host_lease(), ME)


# ----------------------------------------------------------------- macvlan
def test_macvlan_plan_leaves_the_host_alone_unless_a_shim_is_asked_for() -> None:
    plan = build_setup(Request("198.51.100.39", mode="macvlan"), LAN, host_before(), None, None, ME)
    assert [type(a) for a in plan.actions] == [ClaimLease, CreateNetwork]
    spec = plan.actions[1].spec  # type: ignore[union-attr]
    assert (spec.driver, spec.options, spec.gateway, spec.aux_addresses) == (
        "macvlan",
        {"parent": "up0"},
        "198.51.100.254",
        {},
    )

    on_a_bridge = build_setup(Request("198.51.100.39", mode="macvlan"), LAN, host_before(kind="bridge"), None, None, ME)
    assert on_a_bridge.actions[1].spec.options == {"parent": "up0"}  # type: ignore[union-attr]

    plan = build_setup(Request("198.51.100.39", mode="macvlan", shim=True), LAN, host_before(), None, None, ME)
    shim = plan.actions[-1]
    assert isinstance(shim, AddShim)
    assert (shim.shim.name, shim.shim.parent, shim.shim.address.cidr) == ("shim-mynet", "up0", "198.51.100.39/32")
    assert shim.shim.routes == LAN.container_cidrs


# ---------------------------------------------------------------- teardown
def test_teardown_is_the_inverse_and_removes_the_network_last() -> None:
    request = Request("198.51.100.39")
    plan = build_teardown("mynet", our_network(request), host_after(), host_lease(), ME)
    assert steps(plan) == [
        "put 198.51.100.39/24, 198.51.100.41/24 on up0",
        "move route default via 198.51.100.254 from br0 to up0",
        "move route 203.0.113.0/25 via 198.51.100.253 metric 50 from br0 to up0",
        "move route 203.0.113.128/25 from br0 to up0",
        "move route 10.99.0.0/16 via 203.0.113.1 from br0 to up0",
        "remove 198.51.100.41/24, 198.51.100.39/24 from br0",
        "release up0 from its bridge",
        "release the host lease of 198.51.100.39",
        "remove Docker network mynet",
    ]


def test_teardown_refuses_while_containers_are_attached_unless_forced() -> None:
    network = our_network(Request("198.51.100.39"), containers=("web1",))
    with pytest.raises(Conflict, match=r"containers are attached to mynet \(web1\)"):
        build_teardown("mynet", network, host_after(), host_lease(), ME)
    plan = build_teardown("mynet", network, host_after(), host_lease(), ME, force=True)
    assert steps(plan)[-1] == "remove Docker network mynet, disconnecting web1"


def test_teardown_needs_our_network() -> None:
    with pytest.raises(NotFound):
        build_teardown("mynet", None, host_after(), None, ME)
    with pytest.raises(InvalidInput, match="not made by create-network"):
        build_teardown("mynet", NetworkView("mynet", "x", "bridge", "default", {}), host_after(), None, ME)


# ----------------------------------------------------------------- persist
def bridge_config() -> Plan:
    return build_setup(Request("198.51.100.39"), LAN, host_before(), None, None, ME)


@pytest.mark.parametrize("manager", persist.MANAGERS)
def test_persist_files_match_the_expected_ones(manager: str) -> None:
    render = persist.render_ifcfg if manager == persist.IFCFG else persist.render_networkd
    rendered = render(bridge_config())
    expected = {path.name: path.read_text() for path in (DATA / manager).iterdir()}
    assert rendered == expected


@pytest.mark.parametrize("manager", persist.MANAGERS)
def test_persist_keeps_what_it_replaces_and_its_undo_restores_it(tmp_path: Path, manager: str) -> None:
    where = persist.folder(tmp_path, manager)
    where.mkdir(parents=True)
    old_uplink = where / ("ifcfg-up0" if manager == persist.IFCFG else "20-up0.network")
    old_uplink.write_text("DEVICE=up0\nIPADDR=198.51.100.39\n" if manager == persist.IFCFG else "[Match]\nName=up0\n")
    unrelated = where / ("ifcfg-lo" if manager == persist.IFCFG else "30-eth9.network")
    unrelated.write_text("[Match]\nName=eth9\n")
    before = {p.name: p.read_text() for p in where.iterdir()}

    changes = persist.setup_files(tmp_path, manager, bridge_config())
    run([WriteFiles(changes)], Env(None, None, None), lambda _: None)  # type: ignore[arg-type]
    written = {p.name: p.read_text() for p in where.iterdir()}
    assert written[old_uplink.name + persist.BACKUP_SUFFIX] == before[old_uplink.name]
    assert written[unrelated.name] == before[unrelated.name]
    if manager == persist.NETWORKD:
        assert old_uplink.name not in written  # it would configure the uplink first
    assert persist.setup_files(tmp_path, manager, bridge_config()) == ()  # a rerun changes nothing

    run([WriteFiles(persist.teardown_files(tmp_path, manager))], Env(None, None, None), lambda _: None)  # type: ignore[arg-type]
    assert {p.name: p.read_text() for p in where.iterdir()} == before


@pytest.mark.parametrize("name", ["", "-net", "my net", "net\n[Network]", "net\x1b[31m", "n\u00e9t", "net/1"])
def test_a_name_docker_does_not_take_is_refused_by_the_plan_and_by_persist(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput, match="is not a Docker network name"):
        build_setup(Request("198.51.100.39", name=name), LAN, host_before(), None, None, ME)
    # persist checks the name it writes itself, whoever built the layout.
    for manager in persist.MANAGERS:
        with pytest.raises(InvalidInput, match="is not a Docker network name"):
            persist.setup_files(tmp_path, manager, replace(bridge_config(), network=name))


@pytest.mark.parametrize("name", ["mynet", "my_net.2-b", "0net"])
def test_docker_network_names_are_taken(name: str) -> None:
    assert build_setup(Request("198.51.100.39", name=name), LAN, host_before(), None, None, ME).network == name


@pytest.mark.parametrize("bridge", ["", "bridge-too-long-0", "br 0", "br/0", "br:0", "br\n0", "br\x1b", ".."])
def test_a_bridge_name_linux_does_not_take_is_refused(bridge: str) -> None:
    with pytest.raises(InvalidInput, match="is not an interface name"):
        build_setup(Request("198.51.100.39", bridge=bridge), LAN, host_before(), None, None, ME)


def test_the_network_manager_is_detected_from_the_root(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="give --network-manager"):
        persist.detect(tmp_path)
    (tmp_path / persist.IFCFG_DIR).mkdir(parents=True)
    assert persist.detect(tmp_path) == persist.IFCFG
    unit = tmp_path / persist.NETWORKD_ENABLED
    unit.parent.mkdir(parents=True)
    unit.symlink_to("/lib/systemd/system/systemd-networkd.service")  # dangling here, as in an image
    assert persist.detect(tmp_path) == persist.NETWORKD


# ------------------------------------------------------------- transaction
def test_a_failing_step_undoes_the_steps_before_it(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.write_text("old\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, so nothing can be created below it\n")
    actions = [
        WriteFiles(((str(kept), "new\n"), (str(tmp_path / "added"), "x\n"))),
        WriteFiles(((str(tmp_path / "more"), "y\n"), (str(blocker / "child"), "z\n"))),
    ]
    lines: list[str] = []
    with pytest.raises(TransactionFailed) as failure:
        run(actions, Env(None, None, None), lines.append)  # type: ignore[arg-type]
    assert f"could not write {tmp_path / 'more'}" in str(failure.value)
    assert f"File exists: {blocker}" in str(failure.value)
    assert "every change made before it was undone" in str(failure.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "kept"]
    assert kept.read_text() == "old\n"
    assert lines[-2:] == [f"- undo: {actions[1]}", f"- undo: {actions[0]}"]
