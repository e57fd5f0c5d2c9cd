"""Session-wide fixtures: real etcd, real dockerd, network namespaces (see tests/fixtures)."""

pytest_plugins = [
    "tests.fixtures.etcd",
    "tests.fixtures.etcd_secure",
    "tests.fixtures.stores",
    "tests.fixtures.netns",
    "tests.fixtures.dockerd",
    "tests.fixtures.plugin",
    "tests.fixtures.hostnet",
    "tests.fixtures.fresh_host",
    "tests.fixtures.original",
]
