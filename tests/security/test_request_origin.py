"""``request_origin``: forwarded headers count only from ``trusted_proxies`` (issue 9, finding 10)."""

from __future__ import annotations

from ipaddress import ip_network

from teams_ehr.integrations.proxy import RequestOrigin, request_origin

PROXIES = (ip_network("10.0.0.0/8"), ip_network("::1/128"))


def test_an_untrusted_peer_is_its_own_origin() -> None:
    origin = request_origin(
        "198.51.100.9", "http", forwarded_for=["203.0.113.7"], forwarded_proto=["https"]
    )
    assert origin == RequestOrigin("198.51.100.9", "http")
    assert not origin.secure
    assert request_origin(None, "https") == RequestOrigin("unknown", "https")


def test_the_right_most_untrusted_forwarded_address_is_the_client() -> None:
    origin = request_origin(
        "10.0.0.2",
        "http",
        forwarded_for=["6.6.6.6, 203.0.113.7", "10.1.1.1"],  # a prepended lie, the client, a hop
        forwarded_proto=["http, https"],
        trusted_proxies=PROXIES,
    )
    assert origin == RequestOrigin("203.0.113.7", "https")
    assert origin.secure


def test_ipv6_peers_and_odd_values() -> None:
    origin = request_origin("::1", "http", forwarded_for=["[2001:db8::5]"], trusted_proxies=PROXIES)
    assert origin == RequestOrigin("2001:db8::5", "http")
    # A malformed entry stops the walk at the last trusted hop; an unknown scheme is ignored.
    odd = request_origin(
        "10.0.0.2",
        "http",
        forwarded_for=["203.0.113.7, not-an-ip"],
        forwarded_proto=["gopher"],
        trusted_proxies=PROXIES,
    )
    assert odd == RequestOrigin("10.0.0.2", "http")
    everyone_trusted = request_origin(
        "10.0.0.2", "http", forwarded_for=["10.3.3.3"], trusted_proxies=PROXIES
    )
    assert everyone_trusted.client == "10.3.3.3"
