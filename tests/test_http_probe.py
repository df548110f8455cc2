"""Tests of mitod.jobs.http_probe against real servers on the loopback interface."""

import json
import logging
import socket
import threading
import time

import pytest
import requests

from mitod.config.site import SiteConfig
from mitod.jobs.http_probe import (
    BODY_LIMIT,
    ERROR_KINDS,
    USER_AGENT,
    ProbeResult,
    SessionPool,
    new_session,
    probe,
)
from tests.fixtures.servers import (  # noqa: F401 - pytest fixtures are used by name
    STOP_TIMEOUT,
    FailingServer,
    FullBacklogServer,
    HangingServer,
    HealthyServer,
    RawServer,
    RedirectServer,
    ResettingServer,
    SlowServer,
    TrickleServer,
    failing_server,
    free_port,
    hanging_server,
    healthy_server,
    ipv6_loopback_available,
    running_server_threads,
    self_signed_certificate,
    start_server,
    tls_files,
)

TIMEOUT = 1.0
# A check must end within TIMEOUT plus about 1 s. The tests allow 3 s so a busy
# machine does not make them flaky.
MARGIN = 3.0
MIB = 1024 * 1024

insecure_warning_ignored = pytest.mark.filterwarnings(
    "ignore::urllib3.exceptions.InsecureRequestWarning")


def site_for(url: str, **overrides) -> SiteConfig:
    settings = {"name": "probe-test", "url": url, "timeout": TIMEOUT}
    settings.update(overrides)
    return SiteConfig(**settings)


def timed_probe(site: SiteConfig, session: requests.Session | None = None):
    started = time.monotonic()
    result = probe(site, session)
    return result, time.monotonic() - started


def probe_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate()
            if thread.name.startswith("mitod-probe")]


def response_head(status_line: str, headers: dict[str, str]) -> bytes:
    lines = [status_line] + [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- passing checks ------------------------------------------------------------


def test_healthy_server_passes(healthy_server):
    result, _ = timed_probe(site_for(healthy_server.url))

    assert result.ok
    assert result.status_code == 200
    assert result.error_kind is None
    assert result.reason is None
    assert result.bytes == len(healthy_server.body)
    assert result.response_ms > 0
    assert result.final_url == healthy_server.url
    assert result.redirects == 0
    assert result.truncated is False
    assert healthy_server.hits == 1


def test_request_carries_method_and_headers(healthy_server):
    site = site_for(healthy_server.url_for("/status?x=1"), method="POST",
                    headers=(("Accept", "text/plain"), ("X-Probe", "yes")))

    result = probe(site)

    assert result.ok
    request = healthy_server.requests[0]
    assert request.method == "POST"
    assert request.path == "/status?x=1"
    assert request.headers["accept"] == "text/plain"
    assert request.headers["x-probe"] == "yes"
    assert request.headers["user-agent"] == USER_AGENT


def test_head_request_reads_no_body(healthy_server):
    result = probe(site_for(healthy_server.url, method="HEAD"))

    assert result.ok
    assert result.status_code == 200
    assert result.bytes == 0
    assert healthy_server.requests[0].method == "HEAD"


def test_details_are_json_safe(healthy_server):
    details = probe(site_for(healthy_server.url)).to_details()

    decoded = json.loads(json.dumps(details))
    assert decoded["ok"] is True
    assert decoded["status_code"] == 200
    assert decoded["final_url"] == healthy_server.url
    assert set(decoded) == {"ok", "status_code", "reason", "error_kind", "response_ms", "bytes",
                            "final_url", "redirects", "truncated"}


# -- failing checks, one row per kind of broken server ------------------------

FAILURE_CASES = [
    # id, server class, constructor arguments, error kind, words in the reason
    ("failing", FailingServer, {}, "http_status",
     ["HTTP 500 Internal Server Error, expected 200-399"]),
    # A silent server trips the read timeout or the overall deadline, whichever
    # fires first, because both are TIMEOUT seconds. A trickling server can
    # only trip the deadline.
    ("slow", SlowServer, {"delay": 5.0}, "timeout",
     ["timed out after 1 s", "response headers", "{endpoint}"]),
    ("hanging", HangingServer, {}, "timeout",
     ["timed out after 1 s", "response headers", "{endpoint}"]),
    ("trickle body", TrickleServer, {"interval": 0.05}, "timeout",
     ["timed out after 1 s", "overall deadline", "response body", "{endpoint}"]),
    ("trickle headers", TrickleServer, {"interval": 0.05, "mode": "headers"}, "timeout",
     ["timed out after 1 s", "overall deadline", "response headers", "{endpoint}"]),
    ("resetting", ResettingServer, {}, "connection_reset",
     ["connection reset by {endpoint}"]),
    ("redirect loop", RedirectServer, {}, "too_many_redirects",
     ["too many redirects", "max_redirects is 10"]),
    ("bad status line", RawServer, {"payload": b"garbage\r\n\r\n"}, "invalid_response",
     ["invalid response from {endpoint}", "invalid status line", "garbage"]),
    ("short body", RawServer,
     {"payload": response_head("HTTP/1.1 200 OK", {"Content-Length": "100"}) + b"abc"},
     "invalid_response", ["invalid response from {endpoint}", "body ended after 3 bytes",
                          "97 more expected"]),
    ("closed without response", RawServer, {"payload": b""}, "connection_reset",
     ["{endpoint} closed the connection without sending a response"]),
]


@pytest.mark.parametrize("server_class, arguments, kind, words",
                         [case[1:] for case in FAILURE_CASES],
                         ids=[case[0] for case in FAILURE_CASES])
def test_broken_server_fails(start_server, server_class, arguments, kind, words):
    server = start_server(server_class, **arguments)
    endpoint = f"127.0.0.1:{server.port}"

    result, elapsed = timed_probe(site_for(server.url))

    assert not result.ok
    assert result.error_kind == kind
    assert result.error_kind in ERROR_KINDS
    for word in words:
        assert word.format(endpoint=endpoint) in result.reason
    assert elapsed < TIMEOUT + MARGIN
    assert probe_threads() == []


def test_refused_connection_names_endpoint():
    port = free_port()

    result = probe(site_for(f"http://127.0.0.1:{port}/"))

    assert not result.ok
    assert result.error_kind == "connection_refused"
    assert result.reason == f"connection refused by 127.0.0.1:{port}"
    assert result.status_code is None
    assert result.final_url is None


def test_unresolvable_name_is_dns_failure():
    # Names under the reserved .invalid top-level domain never resolve, so no
    # HTTP request is sent anywhere.
    result, elapsed = timed_probe(site_for("http://mitod-test.invalid/"))

    assert not result.ok
    assert result.error_kind == "dns_failure"
    assert "name resolution failed for mitod-test.invalid" in result.reason
    assert elapsed < TIMEOUT + MARGIN


def test_connect_timeout_ends_on_time():
    with FullBacklogServer() as server:
        result, elapsed = timed_probe(site_for(server.url))

    assert not result.ok
    assert result.error_kind == "timeout"
    assert "timed out after 1 s" in result.reason
    assert f"connecting to 127.0.0.1:{server.port}" in result.reason
    assert elapsed < TIMEOUT + MARGIN


def test_hanging_server_leaves_no_threads(hanging_server):
    result, elapsed = timed_probe(site_for(hanging_server.url))

    assert result.error_kind == "timeout"
    assert elapsed < TIMEOUT + MARGIN
    assert probe_threads() == []


# -- expected status ranges ---------------------------------------------------


def test_expected_500_passes(failing_server):
    result = probe(site_for(failing_server.url, expect_status=((500, 500),)))

    assert result.ok
    assert result.status_code == 500
    assert result.reason is None


def test_unexpected_200_names_ranges(healthy_server):
    result = probe(site_for(healthy_server.url, expect_status=((201, 299), (404, 404))))

    assert not result.ok
    assert result.error_kind == "http_status"
    assert result.status_code == 200
    assert result.reason == "HTTP 200 OK, expected 201-299, 404"


def test_status_flip_fails_then_recovers(healthy_server):
    site = site_for(healthy_server.url)

    healthy_server.status = 503
    down = probe(site)
    healthy_server.status = 200
    up = probe(site)

    assert down.error_kind == "http_status"
    assert "HTTP 503 Service Unavailable" in down.reason
    assert up.ok


# -- redirects -----------------------------------------------------------------


def test_redirect_to_healthy_path_passes(start_server):
    server = start_server(HealthyServer, redirects={"/old": "/new"})

    result = probe(site_for(server.url_for("/old")))

    assert result.ok
    assert result.status_code == 200
    assert result.redirects == 1
    assert result.final_url == server.url_for("/new")
    assert [request.path for request in server.requests] == ["/old", "/new"]


def test_redirect_to_other_server_passes(start_server):
    target = start_server(HealthyServer)
    redirect = start_server(RedirectServer, location=target.url_for("/landing"))

    result = probe(site_for(redirect.url))

    assert result.ok
    assert result.redirects == 1
    assert result.final_url == target.url_for("/landing")
    assert target.hits == 1


def test_redirects_up_to_limit_pass(start_server):
    server = start_server(HealthyServer, redirects={"/1": "/2", "/2": "/3"})

    within = probe(site_for(server.url_for("/1"), max_redirects=2))
    beyond = probe(site_for(server.url_for("/1"), max_redirects=1))

    assert within.ok
    assert within.redirects == 2
    assert not beyond.ok
    assert beyond.error_kind == "too_many_redirects"
    assert beyond.redirects == 1
    assert beyond.status_code == 302


def test_loop_between_two_servers_fails(start_server):
    first = start_server(RedirectServer)
    second = start_server(RedirectServer, location=first.url)
    first.location = second.url

    result = probe(site_for(first.url, max_redirects=4))

    assert not result.ok
    assert result.error_kind == "too_many_redirects"
    assert result.redirects == 4
    assert "max_redirects is 4" in result.reason
    assert first.hits + second.hits == 5


def test_redirect_to_closed_port_fails(start_server):
    port = free_port()
    server = start_server(RedirectServer, location=f"http://127.0.0.1:{port}/moved")

    result = probe(site_for(server.url))

    assert result.error_kind == "connection_refused"
    assert result.reason == f"connection refused by 127.0.0.1:{port}"
    assert result.redirects == 1
    assert result.status_code is None
    assert result.final_url is None


def test_zero_max_redirects_judges_redirect(start_server):
    server = start_server(HealthyServer, redirects={"/old": "/new"})

    default = probe(site_for(server.url_for("/old"), max_redirects=0))
    strict = probe(site_for(server.url_for("/old"), max_redirects=0,
                            expect_status=((200, 299),)))

    assert default.ok
    assert default.status_code == 302
    assert default.redirects == 0
    assert default.final_url == server.url_for("/old")
    assert strict.error_kind == "http_status"
    assert strict.reason == "HTTP 302 Found, expected 200-299"
    assert server.hits == 2


# -- body size limit -----------------------------------------------------------


def test_large_body_is_truncated(start_server):
    server = start_server(HealthyServer, body=b"x" * (3 * MIB))

    result = probe(site_for(server.url))

    assert result.ok
    assert result.truncated is True
    assert BODY_LIMIT <= result.bytes < 3 * MIB


def test_stalled_large_body_is_not_awaited(start_server):
    # The server promises 10 MiB, sends 2 MiB and stalls. Reading stops at
    # BODY_LIMIT, so the check passes instead of waiting for the deadline.
    payload = response_head("HTTP/1.1 200 OK", {"Content-Length": str(10 * MIB)})
    server = start_server(RawServer, payload=payload + b"x" * (2 * MIB), hold_open=True)

    result = probe(site_for(server.url))

    assert result.ok
    assert result.truncated is True


def test_stalled_redirect_body_is_not_awaited(start_server):
    # requests would read a redirect's whole body into memory before following
    # it. The probe drains at most BODY_LIMIT bytes, so this redirect passes.
    target = start_server(HealthyServer)
    payload = response_head("HTTP/1.1 302 Found", {"Location": target.url,
                                                   "Content-Length": str(10 * MIB)})
    server = start_server(RawServer, payload=payload + b"x" * (2 * MIB), hold_open=True)

    result = probe(site_for(server.url))

    assert result.ok
    assert result.redirects == 1
    assert result.final_url == target.url
    assert result.truncated is False


# -- TLS -----------------------------------------------------------------------


def test_self_signed_certificate_is_tls_error(start_server, tls_files):
    server = start_server(HealthyServer, tls=tls_files)

    result = probe(site_for(server.url))

    assert not result.ok
    assert result.error_kind == "tls_error"
    assert f"TLS error with 127.0.0.1:{server.port}" in result.reason
    assert "certificate verify failed: self-signed certificate" in result.reason
    assert server.hits == 0


@insecure_warning_ignored
def test_unverified_tls_passes(start_server, tls_files):
    server = start_server(HealthyServer, tls=tls_files)

    result = probe(site_for(server.url, verify_tls=False))

    assert result.ok
    assert result.final_url == server.url
    assert server.hits == 1


def test_ca_file_verifies_certificate(start_server, tls_files):
    server = start_server(HealthyServer, tls=tls_files)

    result = probe(site_for(server.url, ca_file=str(tls_files.cert_file)))

    assert result.ok
    assert result.status_code == 200


def test_hostname_mismatch_is_tls_error(start_server, tmp_path):
    files = self_signed_certificate(tmp_path, hosts=("localhost",))
    server = start_server(HealthyServer, tls=files)

    result = probe(site_for(server.url, ca_file=str(files.cert_file)))

    assert result.error_kind == "tls_error"
    assert "certificate verify failed" in result.reason
    assert "mismatch" in result.reason


# -- secrets -------------------------------------------------------------------

SECRET_HEADER = ("Authorization", "Bearer token-4f1c9")


def secret_sites(port: int, path: str = "/") -> list[SiteConfig]:
    url = f"http://user:secret@127.0.0.1:{port}{path}"
    return [site_for(url, headers=(SECRET_HEADER,)),
            site_for(url, headers=(SECRET_HEADER,), expect_status=((201, 201),))]


@pytest.mark.parametrize("server_class, arguments", [
    (HealthyServer, {}),
    (FailingServer, {}),
    (HangingServer, {}),
    (RedirectServer, {}),
    (RawServer, {"payload": b"HTTP/1.1 200 OK secret Bearer token-4f1c9\r\n\r\n"}),
    (HealthyServer, {"redirects": {"/": "http://user:secret@127.0.0.1:1/secret"}}),
], ids=["healthy", "failing", "hanging", "redirect loop", "echoing status line",
        "redirect with password"])
def test_secrets_never_appear_in_result(start_server, caplog, server_class, arguments):
    server = start_server(server_class, **arguments)
    caplog.set_level(logging.DEBUG, logger="mitod.jobs.http_probe")

    for site in secret_sites(server.port):
        result = probe(site)
        texts = [repr(result), json.dumps(result.to_details()), caplog.text]
        for text in texts:
            assert "secret" not in text
            assert SECRET_HEADER[1] not in text
            assert "token-4f1c9" not in text
        assert result.final_url is None or "user:***@" in result.final_url


def test_secrets_kept_out_when_request_fails():
    port = free_port()
    bad_header = ("Authorization", "Bearer token-4f1c9\n")
    sites = [
        site_for(f"http://user:secret@127.0.0.1:{port}/", headers=(SECRET_HEADER,)),
        site_for("http://user:secret@mitod-test.invalid/", headers=(SECRET_HEADER,)),
        site_for(f"http://user:secret@127.0.0.1:{port}/", headers=(bad_header,)),
    ]

    for site in sites:
        result = probe(site)
        text = repr(result) + json.dumps(result.to_details())
        assert not result.ok
        assert "secret" not in text
        assert "token-4f1c9" not in text


def test_password_reaches_server_as_basic_auth(healthy_server):
    result = probe(site_for(f"http://user:secret@127.0.0.1:{healthy_server.port}/"))

    assert result.ok
    assert result.final_url == f"http://user:***@127.0.0.1:{healthy_server.port}/"
    assert healthy_server.requests[0].headers["authorization"].startswith("Basic ")


# -- sessions ------------------------------------------------------------------


def test_pool_reuses_session_and_connection(healthy_server):
    pool = SessionPool()
    site = site_for(healthy_server.url)

    first = pool.probe(site)
    second = pool.probe(site)
    pool.close()

    assert first.ok
    assert second.ok
    assert healthy_server.hits == 2
    assert healthy_server.connections_accepted == 1


def test_pool_replaces_session_on_config_change():
    pool = SessionPool()
    site = site_for("http://127.0.0.1:1/")

    session = pool.session_for(site)
    same = pool.session_for(site)
    changed = pool.session_for(site_for("http://127.0.0.1:1/", timeout=2.0))

    assert same is session
    assert changed is not session
    assert len(pool) == 1
    pool.close()


def test_pool_retain_and_discard():
    pool = SessionPool()
    for name in ("a", "b", "c"):
        pool.session_for(SiteConfig(name=name, url="http://127.0.0.1:1/"))

    pool.retain(["a", "b"])
    after_retain = len(pool)
    pool.discard("a")

    assert after_retain == 2
    assert len(pool) == 1
    pool.close()
    assert len(pool) == 0


def test_plain_session_is_rejected(healthy_server):
    with pytest.raises(ValueError, match="new_session"):
        probe(site_for(healthy_server.url), requests.Session())


def test_server_restart_on_same_port(healthy_server):
    pool = SessionPool()
    site = site_for(healthy_server.url)
    port = healthy_server.port

    before = pool.probe(site)
    healthy_server.stop()
    down = pool.probe(site)
    healthy_server.start()
    after = pool.probe(site)
    pool.close()

    assert before.ok
    assert down.error_kind == "connection_refused"
    assert down.reason == f"connection refused by 127.0.0.1:{port}"
    assert healthy_server.port == port
    assert after.ok


class SecondRequestDroppingServer(HealthyServer):
    """Server that responds to the first request on a connection and drops it on the next."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.answered = []

    def handle(self, connection, request):
        if any(connection is answered for answered in self.answered):
            return False
        self.answered.append(connection)
        return super().handle(connection, request)


def test_closed_keepalive_connection_is_retried(start_server):
    server = start_server(SecondRequestDroppingServer)
    pool = SessionPool()
    site = site_for(server.url)

    first = pool.probe(site)
    second = pool.probe(site)
    pool.close()

    assert first.ok
    assert second.ok
    assert server.hits == 3
    assert server.connections_accepted == 2


def test_closed_keepalive_post_is_not_retried(start_server):
    server = start_server(SecondRequestDroppingServer)
    pool = SessionPool()
    site = site_for(server.url, method="POST")

    first = pool.probe(site)
    second = pool.probe(site)
    pool.close()

    assert first.ok
    assert second.error_kind == "connection_reset"
    assert "closed the connection without sending a response" in second.reason
    assert server.hits == 2
    assert server.connections_accepted == 1


def test_server_closing_after_each_response_passes(start_server):
    payload = response_head("HTTP/1.1 200 OK", {"Content-Length": "3"}) + b"OK\n"
    server = start_server(RawServer, payload=payload)
    pool = SessionPool()
    site = site_for(server.url)

    results = [pool.probe(site) for _ in range(30)]
    pool.close()

    assert [result.error_kind for result in results] == [None] * 30
    assert server.hits == 30


def test_cookies_do_not_carry_over(start_server):
    payload = response_head("HTTP/1.1 200 OK", {"Content-Length": "0",
                                                "Set-Cookie": "visit=1; Path=/"})
    server = start_server(RawServer, payload=payload)
    session = new_session()

    probe(site_for(server.url), session)
    probe(site_for(server.url), session)
    session.close()

    assert [request.headers.get("cookie") for request in server.requests] == [None, None]


# -- IPv6 ----------------------------------------------------------------------

ipv6_only = pytest.mark.skipif(not ipv6_loopback_available(),
                               reason="this machine cannot bind TCP sockets to ::1")


@ipv6_only
def test_ipv6_loopback_passes(start_server):
    server = start_server(HealthyServer, host="::1")

    result = probe(site_for(server.url))

    assert result.ok
    assert result.final_url == f"http://[::1]:{server.port}/"


@ipv6_only
def test_ipv6_refused_names_endpoint():
    port = free_port("::1")

    result = probe(site_for(f"http://[::1]:{port}/"))

    assert result.error_kind == "connection_refused"
    assert result.reason == f"connection refused by [::1]:{port}"


# -- the fixture servers themselves ------------------------------------------------


@pytest.mark.parametrize("server_class, arguments", [
    (HangingServer, {}),
    (TrickleServer, {"interval": 0.5}),
    (SlowServer, {"delay": 30.0}),
])
def test_server_stops_with_stuck_client(server_class, arguments):
    server = server_class(**arguments).start()
    client = socket.create_connection(("127.0.0.1", server.port))
    client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    time.sleep(0.1)

    started = time.monotonic()
    server.stop()
    elapsed = time.monotonic() - started
    client.close()

    assert elapsed < STOP_TIMEOUT
    assert server.hits == 1
    assert running_server_threads() == []


def test_probe_result_is_frozen():
    result = ProbeResult(ok=True, status_code=200, reason=None, error_kind=None,
                         response_ms=1.0, bytes=0, final_url=None, redirects=0)

    with pytest.raises(AttributeError):
        result.ok = False
