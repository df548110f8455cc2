"""The HTTP status endpoint against a real daemon: /healthz, /api/autonomous/status, errors."""

import http.client
import json
import signal
import socket

import pytest

from mitod.client import Client
from tests.harness import free_port, wait_for


def get(port: int, path: str, method: str = "GET", host: str = "127.0.0.1"):
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        return response.status, dict(response.getheaders()), body
    finally:
        connection.close()


def get_json(port: int, path: str, method: str = "GET", host: str = "127.0.0.1"):
    status, headers, body = get(port, path, method, host)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


@pytest.fixture
def running(make_setup, make_daemon, healthy_server):
    setup = make_setup(sites=[{"name": "web", "url": healthy_server.url, "interval": "1s",
                               "timeout": "1s"}])
    daemon = make_daemon(setup).start()
    yield setup, daemon
    daemon.stop()


def test_healthz_ok_while_running(running):
    setup, _ = running
    status, body = get_json(setup.http_port, "/healthz")
    assert status == 200
    assert body["status"] == "ok"
    assert body["state"] == "running"
    assert body["problems"] == []


def test_healthz_stays_200_while_paused(running):
    setup, _ = running
    with Client(str(setup.socket)) as client:
        client.call("stop")
        status, body = get_json(setup.http_port, "/healthz")
        assert status == 200
        assert body["state"] == "paused"
        client.call("start")


def test_status_matches_control_socket(running):
    setup, daemon = running
    wait_for(lambda: get_json(setup.http_port, "/api/autonomous/status")[1]["sites"][0]["state"]
             == "up", 10, message="the site to be up")
    status, body = get_json(setup.http_port, "/api/autonomous/status")
    assert status == 200
    with Client(str(setup.socket)) as client:
        document = client.call("status")
    assert set(body) == set(document)
    assert body["pid"] == daemon.pid
    assert body["state"] == "running"
    assert body["sites"][0]["name"] == "web"
    assert body["workers"]["total"] == 4
    for key in ("version", "started_at", "uptime_seconds", "config", "tasks", "queue_depth",
                "threads", "system"):
        assert key in body


@pytest.mark.parametrize("path", ["/", "/nope", "/api/autonomous", "/healthz/extra"])
def test_unknown_path_is_404_json(running, path):
    setup, _ = running
    status, body = get_json(setup.http_port, path)
    assert status == 404
    assert body["error"]["code"] == "not_found"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405_json(running, method):
    setup, _ = running
    status, headers, body = get(setup.http_port, "/healthz", method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert json.loads(body)["error"]["code"] == "method_not_allowed"


def test_head_has_no_body(running):
    setup, _ = running
    status, headers, body = get(setup.http_port, "/healthz", "HEAD")
    assert status == 200
    assert body == b""
    assert int(headers["Content-Length"]) > 0


def test_keep_alive_connection_serves_many(running):
    setup, _ = running
    connection = http.client.HTTPConnection("127.0.0.1", setup.http_port, timeout=10)
    try:
        for _ in range(20):
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            assert not response.will_close
    finally:
        connection.close()


def test_malformed_request_line_does_not_hurt(running):
    setup, _ = running
    with socket.create_connection(("127.0.0.1", setup.http_port), timeout=5) as raw:
        raw.sendall(b"\x00\xff garbage\r\n\r\n")
        answer = b""
        while chunk := raw.recv(4096):  # the server closes after an error
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"code": "bad_request"' in answer
    status, _ = get_json(setup.http_port, "/healthz")
    assert status == 200


def test_healthz_503_when_scheduler_thread_dead(make_setup, make_daemon):
    setup = make_setup(daemon={"monitor_interval": "1h"})  # nothing revives it during the test
    daemon = make_daemon(setup, env={"MITOD_TEST_HOOKS": "kill-scheduler"}).start()
    daemon.signal(signal.SIGUSR2)
    daemon.wait_log("the scheduler thread exits on purpose", 5)
    wait_for(lambda: get_json(setup.http_port, "/healthz")[0] == 503, 5,
             message="/healthz to report 503")
    status, body = get_json(setup.http_port, "/healthz")
    assert body["status"] == "degraded"
    assert "thread scheduler is not alive" in body["problems"]
    assert daemon.stop() == 0


def test_monitor_restarts_dead_scheduler(make_setup, make_daemon):
    setup = make_setup(daemon={"monitor_interval": "1s"})
    daemon = make_daemon(setup, env={"MITOD_TEST_HOOKS": "kill-scheduler"}).start()
    daemon.signal(signal.SIGUSR2)
    wait_for(lambda: setup.query("SELECT 1 FROM operation_log WHERE event_type = "
                                 "'thread.restarted' AND details LIKE '%scheduler%'"), 10,
             message="the monitor to restart the scheduler")
    wait_for(lambda: get_json(setup.http_port, "/healthz")[0] == 200, 5,
             message="/healthz to be 200 again")
    assert daemon.stop() == 0


def test_ipv6_listen(make_setup, make_daemon):
    probe = socket.socket(socket.AF_INET6)
    try:
        probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback address")
    finally:
        probe.close()
    port = free_port("::1")
    setup = make_setup(http={"listen": f"[::1]:{port}"})
    daemon = make_daemon(setup).start()
    status, body = get_json(port, "/healthz", host="::1")
    assert status == 200
    assert body["status"] == "ok"
    assert daemon.stop() == 0


def test_disabled_http_binds_nothing(make_setup, make_daemon):
    setup = make_setup(http={"enabled": False})
    daemon = make_daemon(setup).start()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", setup.http_port), timeout=2)
    assert daemon.stop() == 0
