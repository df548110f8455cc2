"""Unit tests of the control protocol: framing, request validation, arguments and peer checks."""

import grp
import json
import os
import pwd
import socket
import threading
import time
from datetime import datetime, timezone

import pytest

from mitod.control import protocol
from mitod.control.auth import Authorizer, PeerCredentials, read_peer_credentials
from mitod.control.commands import COMMANDS, CommandError, check_args, parse_since


# -- decode_request ------------------------------------------------------------

def test_decode_request_accepts_minimal_request():
    request = protocol.decode_request(b'{"v": 1, "id": 3, "command": "status"}')
    assert request.id == 3
    assert request.command == "status"
    assert request.args == {}


def test_decode_request_keeps_args_and_string_id():
    request = protocol.decode_request(
        b'{"v": 1, "id": "abc", "command": "tasks", "args": {"limit": 2}}')
    assert request.id == "abc"
    assert request.args == {"limit": 2}


@pytest.mark.parametrize("line, fragment", [
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"status"', "must be a JSON object"),
    (b'{"id": 1, "command": "status"}', "missing protocol version"),
    (b'{"v": 2, "id": 1, "command": "status"}', "unsupported protocol version 2"),
    (b'{"v": "1", "id": 1, "command": "status"}', "unsupported protocol version"),
    (b'{"v": true, "id": 1, "command": "status"}', "unsupported protocol version"),
    (b'{"v": 1, "id": 1}', "command must be a non-empty string"),
    (b'{"v": 1, "id": 1, "command": 5}', "command must be a non-empty string"),
    (b'{"v": 1, "id": 1, "command": "status", "args": [1]}', "args must be a JSON object"),
    (b'{"v": 1, "id": [1], "command": "status"}', "id must be a string"),
    (b'{"v": 1, "id": 1.5, "command": "status"}', "id must be a string"),
    (b'{"v": 1, "id": 1, "command": "status", "extra": 1}', "unknown request keys: extra"),
    (b"[" * 100000, "nested too deeply"),
    (b'{"v": 1, "id": ' + b"7" * 5000 + b', "command": "status"}', "not valid JSON"),
])
def test_decode_request_rejects_bad_request(line, fragment):
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.decode_request(line)
    assert caught.value.code == protocol.BAD_REQUEST
    assert fragment in caught.value.message


def test_decode_request_names_supported_versions():
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.decode_request(b'{"v": 9, "id": "x", "command": "status"}')
    assert caught.value.details == {"supported_versions": [1]}
    assert caught.value.request_id == "x"


def test_encode_is_one_ascii_line():
    data = protocol.encode({"message": "line\nbreak", "name": "caf\u00e9"})
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1
    assert json.loads(data) == {"message": "line\nbreak", "name": "caf\u00e9"}


def test_error_response_shape():
    response = protocol.error_response(4, protocol.NOT_FOUND, "no such job", {"jobs": []})
    assert response == {"v": 1, "id": 4, "ok": False,
                        "error": {"code": "not_found", "message": "no such job",
                                  "details": {"jobs": []}}}


def test_decode_response_rejects_other_version():
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_response(b'{"v": 2, "id": 1, "ok": true, "result": {}}')


# -- LineReader on a real socket pair ------------------------------------------

def test_line_reader_splits_pipelined_lines():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"one\ntwo\nthr")
        reader = protocol.LineReader(right, 100)
        assert reader.read_line() == b"one"
        assert reader.read_line() == b"two"
        left.sendall(b"ee\n")
        assert reader.read_line() == b"three"
        left.close()
        assert reader.read_line() is None


def test_line_reader_rejects_long_line():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"x" * 101)
        reader = protocol.LineReader(right, 100)
        with pytest.raises(protocol.LineTooLong):
            reader.read_line()


def test_line_reader_accepts_line_at_limit():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"x" * 100 + b"\n")
        assert protocol.LineReader(right, 100).read_line() == b"x" * 100


def test_line_reader_deadline_covers_slow_sender():
    left, right = socket.socketpair()
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.05):
            try:
                left.send(b"x")
            except OSError:
                return

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        reader = protocol.LineReader(right, 1000)
        deadline = time.monotonic() + 0.3
        with pytest.raises(socket.timeout):
            reader.read_line(deadline)
        assert reader.pending > 0
    finally:
        stop.set()
        sender.join()
        left.close()
        right.close()


# -- arguments -----------------------------------------------------------------

def test_check_args_fills_defaults():
    assert check_args(COMMANDS["tasks"], {}) == {"status": None, "job": None, "limit": 20}
    assert check_args(COMMANDS["stop"], {"wait": True}) == {"wait": True, "timeout": 60.0}


@pytest.mark.parametrize("command, args, fragment", [
    ("tasks", {"limit": 0}, "between 1 and 1000"),
    ("tasks", {"limit": "5"}, "must be an integer"),
    ("tasks", {"limit": True}, "must be an integer"),
    ("tasks", {"status": "sleeping"}, "must be one of"),
    ("tasks", {"colour": "red"}, "unknown argument 'colour'"),
    ("status", {"verbose": True}, "accepted arguments: none"),
    ("logs", {"follow": 1}, "must be a boolean"),
    ("logs", {"event_type": ""}, "must not be empty"),
    ("run", {}, "needs the argument 'job'"),
    ("run", {"job": "x", "timeout": -1}, "between 0 and"),
    ("run", {"job": "x", "timeout": float("nan")}, "finite"),
    ("stop", {"timeout": float("inf")}, "finite"),
])
def test_check_args_rejects(command, args, fragment):
    with pytest.raises(CommandError) as caught:
        check_args(COMMANDS[command], args)
    assert caught.value.code == protocol.BAD_REQUEST
    assert fragment in caught.value.message


def test_parse_since_accepts_duration():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_since("10m", now) == "2024-05-01T11:50:00.000000+00:00"


def test_parse_since_accepts_iso_time_with_offset():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2024-05-01T14:00:00+02:00", now) == "2024-05-01T12:00:00.000000+00:00"


def test_parse_since_reads_naive_time_as_utc():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2024-05-01T09:30:00", now) == "2024-05-01T09:30:00.000000+00:00"


def test_parse_since_rejects_other_text():
    with pytest.raises(CommandError) as caught:
        parse_since("yesterday", datetime.now(timezone.utc))
    assert caught.value.code == protocol.BAD_REQUEST


# -- peer credentials and the group check --------------------------------------

def test_read_peer_credentials_of_socket_pair():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        peer = read_peer_credentials(right)
    assert peer == PeerCredentials(os.getpid(), os.getuid(), os.getgid())


def test_authorizer_allows_root_and_daemon_user():
    authorizer = Authorizer("", daemon_uid=1234)
    assert authorizer.may_mutate(PeerCredentials(1, 0, 0))
    assert authorizer.may_mutate(PeerCredentials(1, 1234, 99))
    assert not authorizer.may_mutate(PeerCredentials(1, 65534, 65534))


def test_authorizer_empty_group_message_names_alternatives():
    message = Authorizer("", daemon_uid=1234).denial_message("stop", PeerCredentials(1, 65534,
                                                                                      65534))
    assert "root" in message
    assert "uid 1234" in message


def test_authorizer_accepts_peer_gid_of_group():
    group = grp.getgrgid(os.getgid()).gr_name
    authorizer = Authorizer(group, daemon_uid=0)
    assert authorizer.may_mutate(PeerCredentials(1, 65534, os.getgid()))


def test_authorizer_accepts_primary_group_from_passwd():
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    authorizer = Authorizer(group, daemon_uid=0)
    assert authorizer.may_mutate(PeerCredentials(1, nobody.pw_uid, 12345))


def test_authorizer_rejects_non_member_and_names_group():
    nobody = pwd.getpwnam("nobody")
    root_group = grp.getgrgid(0).gr_name
    authorizer = Authorizer(root_group, daemon_uid=0)
    peer = PeerCredentials(1, nobody.pw_uid, nobody.pw_gid)
    assert not authorizer.may_mutate(peer)
    message = authorizer.denial_message("stop", peer)
    assert f"stop needs membership in group {root_group} (or root)" in message
    assert f"usermod -aG {root_group} nobody" in message


def test_authorizer_rejects_when_group_is_missing():
    authorizer = Authorizer("mitod-no-such-group", daemon_uid=0)
    assert not authorizer.may_mutate(PeerCredentials(1, 65534, 65534))


# -- following the operation log -----------------------------------------------

def test_events_after_returns_burst_in_order(tmp_path):
    from mitod.clock import SYSTEM_CLOCK
    from mitod.control.commands import events_after
    from mitod.store.database import Database
    from mitod.store.oplog import add_event

    db = Database(str(tmp_path / "mitod.db")).open()
    try:
        with db.write() as conn:
            for number in range(1200):
                add_event(conn, SYSTEM_CLOCK, "task.enqueued" if number % 2 else "site.down",
                          f"row {number}")
        conn = db.read()
        first = events_after(conn, None, 0, 500)
        assert [event["message"] for event in first[:2]] == ["row 0", "row 1"]
        assert len(first) == 500
        rest = events_after(conn, None, first[-1]["id"], 1000)
        assert [event["id"] for event in first + rest] == list(range(1, 1201))
        prefixed = events_after(conn, "task.*", 0, 1000)
        assert len(prefixed) == 600
        assert {event["event_type"] for event in prefixed} == {"task.enqueued"}
        assert len(events_after(conn, "site.down", 1100, 1000)) == 50
        assert events_after(conn, "task_*", 0, 10) == []
    finally:
        db.close()
