"""Fixtures for subgate's integration tests. All opt-in by name; nothing
here is autouse or starts a server unless a test asks for it.

    free_port         function returning a free loopback port
    gateway_template  session: a provisioned state dir (tenants, members,
                      active keys) and the DNS records of its keys; every
                      gateway starts from a copy of it
    dns_records       session: {"SEL._domainkey.DOMAIN": "v=DKIM1; ..."}
    dns_file          session: the same as "NAME TXT-TEXT" lines (for the
                      verifiers in tests/tools)
    gateway           session: one running subgated + sink shared by tests
                      that do not change its state or its processes
    make_gateway      function: factory for private gateways with their own
                      settings, started (or not) on demand, stopped after
                      the test

When a test fails, the tail of each involved gateway's log is added to the
report. Logs and state stay under pytest's temporary directory.
"""

import pytest

import helpers
from helpers import BIN, Gateway


def _check_binaries():
    missing = [
        str(BIN / n)
        for n in ("subgated", "subgate-signer", "subgate")
        if not (BIN / n).is_file()
    ]
    if missing:
        pytest.fail(
            "missing %s: build first (make, or make SANITIZE=1 with "
            "SUBGATE_BIN=build-san/bin)" % ", ".join(missing),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def free_port():
    return helpers.free_port


@pytest.fixture(scope="session")
def gateway_template(tmp_path_factory):
    _check_binaries()
    root = tmp_path_factory.mktemp("template")
    cert, key = helpers.make_cert(root)
    state = root / "state"
    state.mkdir()
    settings = helpers.base_settings(
        state, cert, key, helpers.free_port(), helpers.free_port(),
        helpers.free_port())
    config = root / "subgate.conf"
    helpers.write_config(config, settings)
    records = helpers.provision(config)
    dns_file = root / "dns.txt"
    helpers.write_dns_file(dns_file, records)
    return {
        "root": root,
        "state": state,
        "config": config,
        "cert": cert,
        "key": key,
        "records": records,
        "dns_file": dns_file,
    }


@pytest.fixture(scope="session")
def dns_records(gateway_template):
    return gateway_template["records"]


@pytest.fixture(scope="session")
def dns_file(gateway_template):
    return gateway_template["dns_file"]


@pytest.fixture(scope="session")
def gateway(gateway_template, tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("gw-shared"), gateway_template)
    try:
        gw.start()
    except BaseException:
        gw.close()
        raise
    yield gw
    gw.close()


class GatewayFactory:
    """make_gateway(settings=None, start=True, sink=True, sink_tls=True,
    sink_reply=None, start_sink=True) -> a private Gateway."""

    def __init__(self, root, template):
        self.root = root
        self.template = template
        self.gateways = []

    def __call__(self, settings=None, start=True, **kw):
        gw = Gateway(self.root / ("gw%d" % len(self.gateways)),
                     self.template, settings, **kw)
        self.gateways.append(gw)
        if start:
            gw.start()
        return gw

    def close(self):
        for gw in self.gateways:
            gw.close()


@pytest.fixture
def make_gateway(tmp_path, gateway_template):
    factory = GatewayFactory(tmp_path, gateway_template)
    yield factory
    factory.close()


def _gateways_of(item):
    seen = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Gateway):
            seen.append(value)
        elif isinstance(value, GatewayFactory):
            seen.extend(value.gateways)
    return seen


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or rep.when not in ("setup", "call"):
        return
    for gw in _gateways_of(item):
        rep.sections.append(
            ("subgated log %s (%s)" % (gw.name, gw.log), gw.log_tail()))
        sink_log = gw.sink.log
        if sink_log.exists() and sink_log.stat().st_size:
            rep.sections.append(
                ("sink log %s" % sink_log,
                 sink_log.read_text(errors="replace")[-3000:]))
