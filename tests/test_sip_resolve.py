"""RFC 3263 server location (firebox.sip.resolve), sans-I/O: transport and target order
from NAPTR/SRV/A records, RFC 2782 weighted choice with a deterministic random source, the
cluster's static table, failure memory and the 4.3 failover of one request."""

from __future__ import annotations

import pytest

from firebox.cluster.config import ClusterConfig
from firebox.sip.message import parse_message
from firebox.sip.resolve import (
    NaptrRecord,
    RequestFailover,
    SipResolver,
    SipTarget,
    SrvRecord,
    StaticRecords,
    fails_over,
    first_hop,
    locate,
    order_srv,
)


def lowest(total: int) -> int:
    return 0


def highest(total: int) -> int:
    return total


def table() -> StaticRecords:
    return StaticRecords(
        srv_records={
            "_sip._udp.example.net": [
                SrvRecord(20, 0, 5070, "c.example.net"),
                SrvRecord(10, 10, 5060, "a.example.net"),
                SrvRecord(10, 90, 5062, "b.example.net"),
            ],
            "_sip._tcp.example.net": [SrvRecord(10, 0, 5080, "a.example.net")],
        },
        address_records={
            "a.example.net": ["10.0.0.1"],
            "b.example.net": ["10.0.0.2", "fd00::2"],
            "c.example.net": ["10.0.0.3"],
            "example.net": ["10.0.0.9"],
        },
    )


def test_srv_order_is_by_priority_then_weighted_choice():
    records = [
        SrvRecord(20, 5, 1, "late"),
        SrvRecord(10, 30, 1, "x"),
        SrvRecord(10, 0, 1, "zero"),
        SrvRecord(10, 70, 1, "y"),
    ]
    # choose(0): the first record whose running sum reaches 0 is the zero-weight one
    # (RFC 2782 puts zero weights first), then x (30 >= 0), then y.
    assert [r.target for r in order_srv(records, lowest)] == ["zero", "x", "y", "late"]
    # choose(total): the last record of the running sum each time.
    assert [r.target for r in order_srv(records, highest)] == ["y", "x", "zero", "late"]
    # A number between: running sums 0, 30, 100; 31 picks y first.
    picks = iter([31, 0, 0, 0])
    assert [r.target for r in order_srv(records, lambda total: next(picks))] == ["y", "zero", "x", "late"]


def test_weights_share_the_load_in_proportion():
    """Over every value choose() can give, a 90/10 split puts the heavy record first
    about 9 times in 10 (exactly, counting the inclusive bound: 91 of 101)."""
    records = [SrvRecord(10, 10, 1, "light"), SrvRecord(10, 90, 1, "heavy")]
    firsts = [order_srv(records, lambda total, v=v: v)[0].target for v in range(101)]
    assert firsts.count("heavy") == 90 and firsts.count("light") == 11


def test_srv_names_give_targets_in_order_with_their_addresses():
    targets = locate("sip:example.net", table(), choose=lowest, transports=("udp",))
    assert targets == [
        SipTarget("udp", "10.0.0.1", 5060),
        SipTarget("udp", "10.0.0.2", 5062),
        SipTarget("udp", "fd00::2", 5062),
        SipTarget("udp", "10.0.0.3", 5070),
    ]
    both = locate("sip:example.net", table(), choose=lowest, transports=("udp", "tcp"))
    assert both[-1] == SipTarget("tcp", "10.0.0.1", 5080)


def test_numeric_hosts_and_explicit_ports_short_circuit():
    records = table()
    assert locate("sip:10.1.2.3", records) == [SipTarget("udp", "10.1.2.3", 5060)]
    assert locate("sip:[fd00::7]:5099;transport=tcp", records) == [SipTarget("tcp", "fd00::7", 5099)]
    assert locate("sips:10.1.2.3", records) == [SipTarget("tls", "10.1.2.3", 5061)]
    # explicit port: no SRV, the host's A record with that port
    assert locate("sip:example.net:5999", records) == [SipTarget("udp", "10.0.0.9", 5999)]
    # maddr overrides the host (RFC 3263 4.2)
    assert locate("sip:user@example.net;maddr=10.4.4.4", records) == [SipTarget("udp", "10.4.4.4", 5060)]


def test_transport_parameter_selects_its_srv_name():
    assert locate("sip:example.net;transport=tcp", table()) == [SipTarget("tcp", "10.0.0.1", 5080)]


def test_naptr_decides_the_transport_order():
    records = table()
    records.naptr_records["example.net"] = [
        NaptrRecord(10, 20, "SIP+D2U", "_sip._udp.example.net"),
        NaptrRecord(10, 10, "SIP+D2T", "_sip._tcp.example.net"),
        NaptrRecord(5, 10, "SIP+D2X", "_weird.example.net"),  # unknown service: skipped
    ]
    targets = locate("sip:example.net", records, choose=lowest)
    assert targets[0] == SipTarget("tcp", "10.0.0.1", 5080)  # preference 10 before 20
    assert targets[1] == SipTarget("udp", "10.0.0.1", 5060)
    # a client without TCP skips the TCP record
    assert locate("sip:example.net", records, choose=lowest, transports=("udp",))[0].transport == "udp"


def test_no_srv_falls_back_to_the_hosts_addresses():
    assert locate("sip:example.net", StaticRecords(address_records={"example.net": ["10.9.9.9"]})) == [
        SipTarget("udp", "10.9.9.9", 5060)
    ]
    assert locate("sip:nowhere.invalid", StaticRecords()) == []
    with pytest.raises(ValueError, match="not a SIP URI"):
        locate("tel:+16035550100", StaticRecords())


def cluster() -> ClusterConfig:
    return ClusterConfig.model_validate({
        "name": "core.example.net", "node_id": "node-a",
        "nodes": [
            {"id": "node-a", "sip": "127.0.0.1:5060", "http": "127.0.0.1:8080", "priority": 10, "weight": 50},
            {"id": "node-b", "sip": "127.0.0.1:5062", "http": "127.0.0.1:8082", "priority": 10, "weight": 50},
            {"id": "node-c", "sip": "[::1]:5064", "http": "127.0.0.1:8084", "priority": 20, "weight": 0},
        ],
    })  # fmt: skip


def test_the_cluster_name_resolves_to_every_node():
    config = cluster()
    records = StaticRecords.for_cluster(config.name, config.nodes, transports=("udp", "tcp"))
    udp = locate("sip:core.example.net;lr", records, choose=lowest, transports=("udp",))
    assert udp == [
        SipTarget("udp", "127.0.0.1", 5060),
        SipTarget("udp", "127.0.0.1", 5062),
        SipTarget("udp", "::1", 5064),
    ]
    assert [t.port for t in locate("sip:core.example.net", records, choose=highest, transports=("udp",))] == [
        5062, 5060, 5064,
    ]  # fmt: skip
    tcp = locate("sip:CORE.example.net.;transport=tcp", records, choose=lowest)
    assert [t.transport for t in tcp] == ["tcp"] * 3
    # plain mappings work as well as the config model
    plain = StaticRecords.for_cluster("c.test", [{"id": "n1", "sip": "10.0.0.1:5070"}])
    assert locate("sip:c.test", plain, transports=("udp",)) == [SipTarget("udp", "10.0.0.1", 5070)]


def test_resolver_puts_failed_targets_last_for_a_while():
    config = cluster()
    resolver = SipResolver(
        StaticRecords.for_cluster(config.name, config.nodes), transports=("udp",), choose=lowest,
        down_seconds=10.0, clock=lambda: 0.0,
    )  # fmt: skip
    assert resolver("sip:core.example.net") == ("127.0.0.1", 5060, "udp")
    resolver.mark_failed(("127.0.0.1", 5060, "udp"), now=100.0)
    assert [t.port for t in resolver.targets("sip:core.example.net", now=105.0)] == [5062, 5064, 5060]
    assert [t.port for t in resolver.targets("sip:core.example.net", now=110.0)] == [5060, 5062, 5064]
    resolver.mark_failed(SipTarget("udp", "127.0.0.1", 5062), now=200.0)
    resolver.mark_ok(("127.0.0.1", 5062, "udp"))
    assert resolver.targets("sip:core.example.net", now=201.0)[1].port == 5062
    assert resolver("tel:911") is None


BYE = (
    b"BYE sip:caller@127.0.0.1:7000 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-first;rport\r\n"
    b"Max-Forwards: 70\r\nRoute: <sip:core.example.net;lr>\r\n"
    b"From: <sip:psap@example.net>;tag=a\r\nTo: <sip:caller@example.net>;tag=b\r\n"
    b"Call-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
)


def test_request_failover_walks_the_targets_with_fresh_branches():
    config = cluster()
    resolver = SipResolver(StaticRecords.for_cluster(config.name, config.nodes), transports=("udp",), choose=lowest)
    bye = parse_message(BYE)
    assert first_hop(bye) == "sip:core.example.net;lr"
    branches = iter(["z9hG4bK-two", "z9hG4bK-three"])
    fo = RequestFailover.for_request(bye, resolver, ("core.example.net", 5060, "udp"), now=0.0,
                                     branch_factory=lambda: next(branches))  # fmt: skip
    assert fo.destination == ("127.0.0.1", 5060, "udp") and fo.request.branch == "z9hG4bK-first"
    assert fo.advance(now=1.0)
    assert fo.destination == ("127.0.0.1", 5062, "udp")
    moved = fo.request
    assert moved.branch == "z9hG4bK-two" and moved.cseq == (2, "BYE") and moved.call_id == "c1"
    assert moved.headers.get("Via") == "SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-two;rport"
    assert moved.headers.get_all("Route") == ["<sip:core.example.net;lr>"]
    assert fo.advance(now=2.0) and fo.destination == ("::1", 5064, "udp")
    assert not fo.advance(now=3.0)
    # the failures are remembered (for the next requests), until a target answers again
    assert resolver.is_down(SipTarget("udp", "127.0.0.1", 5060), 4.0)
    fo.succeeded()
    assert not resolver.is_down(SipTarget("udp", "::1", 5064), 4.0)


def test_without_a_resolver_the_plain_next_hop_is_kept():
    bye = parse_message(BYE)
    fo = RequestFailover.for_request(bye, None, ("10.0.0.5", 5060, "udp"))
    assert fo.destination == ("10.0.0.5", 5060, "udp") and fo.request is bye
    assert not fo.advance()
    nothing = SipResolver(StaticRecords())
    assert RequestFailover.for_request(bye, nothing, ("10.0.0.5", 5060, "udp")).destination == ("10.0.0.5", 5060, "udp")


def test_which_outcomes_fail_over():
    assert fails_over(None) and fails_over(503)
    assert not fails_over(200) and not fails_over(486) and not fails_over(500) and not fails_over(408)
