"""The control socket server in this process, with a small dispatcher, over real Unix sockets.

These tests cover binding, limits and hostile input without a daemon; the
tests in test_control_daemon.py repeat the important ones against a real one.
"""

import grp
import json
import os
import socket
import stat
import threading
import time

import pytest

from mitod.client import Client, ClientError, ControlError, NotRunningError
from mitod.config.control import ControlConfig
from mitod.control import protocol
from mitod.control.server import ControlServer, ControlServerError
from tests.harness import short_tempdir, wait_for


class SmallDispatcher:
    """Commands for exercising the server: ping, echo, sleep, stream, big and boom."""

    def __init__(self, config: ControlConfig):
        self.config = config

    def control_config(self) -> ControlConfig:
        return self.config

    def dispatch(self, request, session):
        args = request.args
        if request.command == "ping":
            return protocol.ok_response(request.id, {"pong": True, "uid": session.peer.uid,
                                                     "pid": session.peer.pid})
        if request.command == "echo":
            return protocol.ok_response(request.id, args)
        if request.command == "sleep":
            session.wait(args["seconds"])
            return protocol.ok_response(request.id, {"slept": args["seconds"]})
        if request.command == "big":
            return protocol.ok_response(request.id, {"data": "x" * args["size"]})
        if request.command == "stream":
            for number in range(args.get("count", 3)):
                if not session.send(protocol.ok_response(request.id, {"n": number},
                                                         stream=True)):
                    return None
            while session.wait(0.05):
                pass
            if session.stopping.is_set():
                return protocol.ok_response(request.id, {"end": "stopping"}, stream=False)
            return None
        if request.command == "boom":
            raise RuntimeError("boom")
        return protocol.error_response(request.id, protocol.UNKNOWN_COMMAND, "unknown")


@pytest.fixture
def folder():
    path = short_tempdir("mitod-ctl-")
    yield path
    for entry in path.iterdir():
        entry.unlink()
    path.rmdir()


@pytest.fixture
def make_server(folder):
    servers = []

    def make(name: str = "ctl.sock", **settings) -> ControlServer:
        config = ControlConfig(**{"group": "", **settings})
        server = ControlServer(str(folder / name), config, SmallDispatcher(config))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def connect(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def exchange(sock: socket.socket, payload: bytes) -> dict:
    sock.sendall(payload)
    return read_message(sock)


def read_message(sock: socket.socket) -> dict | None:
    line = protocol.LineReader(sock, 1 << 24).read_line(time.monotonic() + 5)
    return None if line is None else json.loads(line)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read everything until the server closes; fail if it does not within ``timeout`` s."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def request(command: str, request_id=1, **args) -> bytes:
    return protocol.encode(protocol.request_message(request_id, command, args))


# -- binding -------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666])
def test_bind_sets_configured_mode(make_server, mode):
    server = make_server(socket_mode=mode)
    server.start()
    info = os.stat(server.path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == mode


def test_bind_sets_configured_group(make_server):
    group = grp.getgrnam("nogroup")
    server = make_server(group="nogroup")
    server.start()
    assert os.stat(server.path).st_gid == group.gr_gid


def test_bind_leaves_no_temporary_files(make_server, folder):
    server = make_server()
    server.start()
    assert sorted(entry.name for entry in folder.iterdir()) == ["ctl.sock"]


def test_bind_rejects_unknown_group(make_server, folder):
    server = make_server(group="mitod-no-such-group")
    with pytest.raises(ControlServerError, match="group 'mitod-no-such-group' does not exist"):
        server.start()
    assert list(folder.iterdir()) == []


def test_bind_rejects_missing_folder(make_server):
    server = make_server(name="missing/ctl.sock")
    with pytest.raises(ControlServerError, match="does not exist"):
        server.start()


def test_bind_never_removes_regular_file(make_server, folder):
    (folder / "ctl.sock").write_text("keep me")
    server = make_server()
    with pytest.raises(ControlServerError, match="exists and is not a socket"):
        server.start()
    assert (folder / "ctl.sock").read_text() == "keep me"


def test_bind_replaces_stale_socket(make_server, folder):
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(folder / "ctl.sock"))
    leftover.close()
    server = make_server()
    server.start()
    with Client(server.path) as client:
        assert client.call("ping")["pong"] is True


def test_bind_refuses_live_socket(make_server):
    first = make_server()
    first.start()
    second = make_server()
    with pytest.raises(ControlServerError, match=f"another mitod is answering on {first.path}"):
        second.start()
    with Client(first.path) as client:
        assert client.call("ping")["pong"] is True


def test_stop_removes_own_socket(make_server):
    server = make_server()
    server.start()
    server.stop()
    assert not os.path.exists(server.path)
    assert not server.is_alive()


def test_stop_keeps_socket_that_replaced_ours(make_server, folder):
    server = make_server()
    server.start()
    os.unlink(server.path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(server.path)
    try:
        server.stop()
        assert stat.S_ISSOCK(os.lstat(server.path).st_mode)
    finally:
        other.close()


# -- requests ------------------------------------------------------------------

def test_pipelined_requests_answered_in_order(make_server):
    server = make_server()
    server.start()
    with connect(server.path) as sock:
        sock.sendall(b"".join(request("echo", number, n=number) for number in range(20)))
        reader = protocol.LineReader(sock, 1 << 20)
        ids = [json.loads(reader.read_line(time.monotonic() + 5))["id"] for _ in range(20)]
    assert ids == list(range(20))


def test_peer_credentials_reach_dispatcher(make_server):
    server = make_server()
    server.start()
    with Client(server.path) as client:
        result = client.call("ping")
    assert result["uid"] == os.getuid()
    assert result["pid"] == os.getpid()


@pytest.mark.parametrize("payload, fragment", [
    (b"\xc3\x28\n", "not valid UTF-8"),
    (b"{oops\n", "not valid JSON"),
    (b'{"v": 1, "id": 1, "command": 3}\n', "command must be"),
    (b'{"v": 7, "id": 1, "command": "ping"}\n', "unsupported protocol version 7"),
])
def test_bad_request_gets_error_and_connection_stays(make_server, payload, fragment):
    server = make_server()
    server.start()
    with connect(server.path) as sock:
        response = exchange(sock, payload)
        assert response["ok"] is False
        assert response["error"]["code"] == "bad_request"
        assert fragment in response["error"]["message"]
        assert exchange(sock, request("ping", 2))["ok"] is True


def test_handler_exception_becomes_internal_error(make_server):
    server = make_server()
    server.start()
    with Client(server.path) as client:
        with pytest.raises(ControlError) as caught:
            client.call("boom")
        assert caught.value.code == "internal"
        assert "RuntimeError: boom" in caught.value.message
        assert client.call("ping")["pong"] is True


def test_blank_lines_are_ignored(make_server):
    server = make_server()
    server.start()
    with connect(server.path) as sock:
        assert exchange(sock, b"\n\n  \n" + request("ping", 5))["id"] == 5


def test_long_line_gets_error_then_close(make_server):
    server = make_server()
    server.start()
    sock = connect(server.path)
    with sock:
        try:
            sock.sendall(b"x" * (1 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = read_until_closed(sock)
    response = json.loads(data.splitlines()[0])
    assert response["error"]["code"] == "bad_request"
    assert "longer than 65536 bytes" in response["error"]["message"]
    with Client(server.path) as client:
        assert client.call("ping")["pong"] is True


def test_line_of_exactly_limit_is_read(make_server):
    server = make_server()
    server.start()
    prefix = b'{"v":1,"id":1,"command":"echo","args":{"pad":"'
    suffix = b'"}}'
    line = prefix + b"y" * (protocol.MAX_REQUEST_BYTES - len(prefix) - len(suffix)) + suffix
    assert len(line) == protocol.MAX_REQUEST_BYTES
    with connect(server.path) as sock:
        response = exchange(sock, line + b"\n")
    assert response["ok"] is True


def test_half_written_request_then_close(make_server):
    server = make_server()
    server.start()
    with connect(server.path) as sock:
        sock.sendall(b'{"v": 1, "id": 1, "comm')
    with Client(server.path) as client:
        assert client.call("ping")["pong"] is True
    wait_for(lambda: server.connection_count == 0, 5, message="the connection to close")


# -- limits --------------------------------------------------------------------

def test_idle_connection_closed_after_timeout(make_server):
    server = make_server(idle_timeout=0.3)
    server.start()
    with connect(server.path) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started < 3


def test_slow_request_gets_error_after_timeout(make_server):
    server = make_server(idle_timeout=0.5)
    server.start()
    with connect(server.path) as sock:
        started = time.monotonic()
        for piece in (b'{"v": 1, ', b'"id": 1, '):
            sock.sendall(piece)
            time.sleep(0.2)
        data = read_until_closed(sock)
        assert time.monotonic() - started < 3
    response = json.loads(data)
    assert response["error"]["code"] == "bad_request"
    assert "incomplete request" in response["error"]["message"]


def test_connections_past_limit_get_busy(make_server):
    server = make_server(max_connections=3)
    server.start()
    held = [connect(server.path) for _ in range(3)]
    try:
        for sock in held:
            assert exchange(sock, request("ping"))["ok"] is True
        with connect(server.path) as extra:
            data = read_until_closed(extra, timeout=2)
        response = json.loads(data)
        assert response["id"] is None
        assert response["error"]["code"] == "busy"
        assert "max_connections" in response["error"]["message"]
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: server.connection_count == 0, 5, message="connections to close")
    with Client(server.path) as client:
        assert client.call("ping")["pong"] is True


def test_client_raises_busy(make_server):
    server = make_server(max_connections=1)
    server.start()
    with connect(server.path) as held:
        assert exchange(held, request("ping"))["ok"] is True
        with Client(server.path) as client:
            with pytest.raises(ControlError) as caught:
                client.call("ping")
    assert caught.value.code == "busy"


def test_slow_reader_does_not_block_others(make_server):
    server = make_server(idle_timeout=1)
    server.start()
    stuffed = connect(server.path)
    try:
        # Ask for far more than the socket buffers hold and never read it.
        stuffed.sendall(b"".join(request("big", number, size=1 << 20) for number in range(8)))
        started = time.monotonic()
        with Client(server.path) as client:
            for _ in range(20):
                assert client.call("ping")["pong"] is True
        assert time.monotonic() - started < 1.5
        assert read_until_closed(stuffed, timeout=10)
    finally:
        stuffed.close()


# -- streams and stop ----------------------------------------------------------

def test_stream_sends_messages_with_same_id(make_server):
    server = make_server()
    server.start()
    with connect(server.path) as sock:
        sock.sendall(request("stream", 9, count=3))
        reader = protocol.LineReader(sock, 1 << 20)
        messages = [json.loads(reader.read_line(time.monotonic() + 5)) for _ in range(3)]
    assert [message["id"] for message in messages] == [9, 9, 9]
    assert [message["result"]["n"] for message in messages] == [0, 1, 2]
    assert all(message["stream"] is True for message in messages)


def test_stream_ends_when_client_closes(make_server):
    server = make_server()
    server.start()
    sock = connect(server.path)
    sock.sendall(request("stream", 1, count=1))
    assert read_message(sock)["stream"] is True
    sock.close()
    wait_for(lambda: server.connection_count == 0, 5, message="the stream to end")


def test_stop_ends_stream_with_final_message(make_server):
    server = make_server()
    server.start()
    with Client(server.path) as client:
        messages = client.stream("stream", count=1)
        assert next(messages) == {"n": 0}
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        assert next(messages) == {"end": "stopping"}
        assert list(messages) == []
        stopper.join(5)
    assert not stopper.is_alive()


def test_stop_closes_idle_connections_quickly(make_server):
    server = make_server(idle_timeout=60)
    server.start()
    held = [connect(server.path) for _ in range(5)]
    try:
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3
        for sock in held:
            assert read_until_closed(sock, timeout=2) == b""
    finally:
        for sock in held:
            sock.close()


def test_stop_lets_running_command_answer(make_server):
    server = make_server()
    server.start()
    with connect(server.path) as sock:
        sock.sendall(request("sleep", 4, seconds=30))
        wait_for(lambda: server.connection_count == 1, 5, message="the connection")
        time.sleep(0.1)  # let the handler enter its wait
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        response = read_message(sock)
        stopper.join(5)
    assert response["id"] == 4
    assert response["ok"] is True


# -- the client library ----------------------------------------------------------

def test_client_reports_missing_socket(folder):
    with pytest.raises(NotRunningError) as caught:
        Client(str(folder / "none.sock")).call("ping")
    assert caught.value.reason == "missing"
    assert f"no socket at {folder / 'none.sock'}" in caught.value.message


def test_client_reports_refused_connection(folder):
    path = folder / "dead.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()
    with pytest.raises(NotRunningError) as caught:
        Client(str(path)).call("ping")
    assert caught.value.reason == "refused"
    assert "connection refused" in caught.value.message


def test_client_reconnects_after_idle_close(make_server):
    server = make_server(idle_timeout=0.2)
    server.start()
    with Client(server.path) as client:
        assert client.call("ping")["pong"] is True
        wait_for(lambda: server.connection_count == 0, 5, message="the idle close")
        assert client.call("ping")["pong"] is True


def test_client_times_out_on_silent_server(folder):
    path = str(folder / "silent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    try:
        with Client(path, timeout=0.3) as client:
            with pytest.raises(ClientError) as caught:
                client.call("ping")
        assert caught.value.code == "timeout"
    finally:
        listener.close()
