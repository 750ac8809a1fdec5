"""Which ports a run uses: defaults, given, moved along, or free."""

import socket

import pytest

from bulwark.devstack.net import ephemeral_ports, free_port
from bulwark.devstack.ports import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, Ports, choose_ports

MOVED = {"api": 28000, "auth": 28001, "ratelimit": 25051}


def _all(ports: Ports) -> list[int]:
    return [port for _, port in ports.labelled()]


def test_nothing_given_is_the_defaults() -> None:
    ports = choose_ports({}, {})
    assert ports.service == DEFAULT_PORTS
    assert ports.metrics == DEFAULT_METRICS_PORTS


def test_moved_services_move_their_metrics_ports_too() -> None:
    ports = choose_ports(MOVED, {})
    assert ports.service == MOVED
    assert not set(ports.metrics.values()) & set(DEFAULT_METRICS_PORTS.values())
    assert len(set(_all(ports))) == 6


def test_a_given_port_is_kept_and_an_unmoved_service_keeps_its_defaults() -> None:
    ports = choose_ports({"api": 28000}, {"api": 29464})
    assert ports.service == {**DEFAULT_PORTS, "api": 28000}
    assert ports.metrics == {**DEFAULT_METRICS_PORTS, "api": 29464}


def test_free_ports_moves_every_port_not_given() -> None:
    ports = choose_ports({"auth": 28001}, {}, free=True)
    assert ports.service["auth"] == 28001
    defaults = {*DEFAULT_PORTS.values(), *DEFAULT_METRICS_PORTS.values()}
    assert not (set(_all(ports)) - {28001}) & defaults
    assert len(set(_all(ports))) == 6


def test_two_uses_of_one_port_are_refused() -> None:
    with pytest.raises(ValueError, match="api and auth metrics would both use port 9465"):
        choose_ports({"api": 9465}, {})


def test_taken_names_the_ports_another_program_listens_on() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        ports = choose_ports({"api": busy}, {}, free=True)
        assert ports.taken("127.0.0.1") == [("api", busy)]
    assert choose_ports({"api": free_port()}, {}, free=True).taken("127.0.0.1") == []


def test_free_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    """An outgoing connection's local port (the ephemeral range) can never take a free port
    between its pick and the server's bind: the stacks' "Address already in use"."""
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert max(ports) < ephemeral_ports().start
    for port in ports[:5]:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
