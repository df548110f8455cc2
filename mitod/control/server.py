"""The control socket server: a careful bind, an accept thread, a thread per connection.

Binding never exposes the socket with looser permissions than configured.
The socket is bound under a temporary name in the target folder, given its
mode and group, and made to listen. Only then is it hard-linked to the
configured path, and the temporary name removed. The hard link fails if
something appeared at the path since the stale-socket probe, where ``rename``
would silently replace a socket another daemon had just bound.

Before binding, the server probes whatever is at the path:

- a socket where a process accepts the connection stops the start;
- a socket that refuses the connection (left by a killed daemon) is removed;
- anything else (a regular file, a folder) stops the start and is never removed.

Each connection gets its own thread, so a slow or idle client only ever
blocks itself: reads wait at most ``[control] idle_timeout`` for a complete
request line, and sends time out after the same time. Commands run in the
connection's thread without holding any engine lock while they write to the
socket.
"""

import errno
import logging
import os
import secrets
import select
import selectors
import socket
import stat
import threading
import time

from mitod.config.control import ControlConfig
from mitod.control import protocol
from mitod.control.auth import PeerCredentials, read_peer_credentials

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 512
PROBE_TIMEOUT = 1.0
# Time stop() gives connections to finish (streams send their last message)
# before it shuts down their sockets.
STOP_GRACE = 2.0
BUSY_LOG_INTERVAL = 60.0


class ControlServerError(Exception):
    """The control socket could not be created; the message names the path and the fix."""


class ControlServer:
    """Serves the control protocol on a Unix socket; ``dispatcher`` runs the commands.

    The dispatcher needs ``dispatch(request, session) -> dict | None``. If it
    also has ``control_config()``, the server reads ``max_connections`` and
    ``idle_timeout`` from it for each new connection, so a reload changes them.
    """

    def __init__(self, path: str, config: ControlConfig, dispatcher):
        self.path = path
        self.config = config
        self.dispatcher = dispatcher
        self.stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._wake_read, self._wake_write = -1, -1
        self._sessions: set["Session"] = set()
        self._sessions_lock = threading.Lock()
        self._busy_rejections = 0
        self._busy_logged_at = -BUSY_LOG_INTERVAL

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        """Bind the socket and start accepting; raise ControlServerError on failure."""
        gid = resolve_group(self.config.group)
        remove_stale_socket(self.path)
        self._wake_read, self._wake_write = os.pipe()
        try:
            self._listener, self._identity = bind_socket(self.path, self.config.socket_mode,
                                                         gid, self.config.group)
        except ControlServerError:
            os.close(self._wake_read)
            os.close(self._wake_write)
            raise
        self._thread = threading.Thread(target=self._accept_loop, name="control", daemon=True)
        self._thread.start()
        log.info("Control socket listening on %s (mode %04o, group %s)", self.path,
                 self.config.socket_mode, self.config.group or "unchanged")

    def stop(self) -> None:
        """Close the listener and every connection; remove the socket file if it is still ours."""
        if self._listener is None:
            return
        self.stopping.set()
        os.write(self._wake_write, b"x")
        if self._thread is not None:
            self._thread.join(5.0)
        self._listener.close()
        self._remove_socket_file()
        self._close_sessions()
        os.close(self._wake_read)
        os.close(self._wake_write)
        self._listener = None
        log.info("Control socket %s closed", self.path)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def connection_count(self) -> int:
        with self._sessions_lock:
            return len(self._sessions)

    def _remove_socket_file(self) -> None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) != self._identity:
            log.warning("Left %s in place: it is no longer the socket this daemon created",
                        self.path)
            return
        try:
            os.unlink(self.path)
        except OSError as error:
            log.warning("Could not remove control socket %s: %s", self.path, error.strerror)

    def _close_sessions(self) -> None:
        with self._sessions_lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.interrupt_read()
        deadline = time.monotonic() + STOP_GRACE
        for session in sessions:
            session.thread.join(max(0.0, deadline - time.monotonic()))
        for session in sessions:
            if session.thread.is_alive():
                session.abort()

    # -- accepting -------------------------------------------------------

    def _limits(self) -> ControlConfig:
        current = getattr(self.dispatcher, "control_config", None)
        return current() if current is not None else self.config

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self.stopping.is_set():
                ready = selector.select()
                if self.stopping.is_set():
                    return
                if any(key.fileobj == self._wake_read for key, _ in ready):
                    os.read(self._wake_read, 64)
                    continue
                try:
                    self._accept_one()
                except Exception:  # the accept thread must outlive any one connection
                    log.exception("Accepting a control connection failed")

    def _accept_one(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        except OSError as error:
            # EMFILE/ENFILE: out of file descriptors. Pause briefly instead of spinning.
            log.error("Accepting a control connection failed: %s", error)
            time.sleep(0.1)
            return
        limits = self._limits()
        with self._sessions_lock:
            full = len(self._sessions) >= limits.max_connections
            if not full:
                session = Session(self, conn, limits.idle_timeout)
                self._sessions.add(session)
        if full:
            self._reject_busy(conn, limits.max_connections)
            return
        try:
            session.thread.start()
        except RuntimeError as error:
            log.error("Could not start a thread for a control connection: %s", error)
            self._forget(session)
            conn.close()

    def _reject_busy(self, conn: socket.socket, limit: int) -> None:
        """Send a ``busy`` error without blocking the accept thread, then close."""
        message = protocol.encode(protocol.error_response(
            None, protocol.BUSY, f"mitod already serves {limit} control connections "
            "([control] max_connections); try again shortly"))
        try:
            conn.setblocking(False)
            conn.send(message)
        except OSError:
            pass
        finally:
            conn.close()
        self._busy_rejections += 1
        now = time.monotonic()
        if now - self._busy_logged_at >= BUSY_LOG_INTERVAL:
            log.warning("Rejected %d control connections as busy since the last report: "
                        "%d connections are open ([control] max_connections)",
                        self._busy_rejections, limit)
            self._busy_rejections = 0
            self._busy_logged_at = now

    def _forget(self, session: "Session") -> None:
        with self._sessions_lock:
            self._sessions.discard(session)


class Session:
    """One client connection, served in its own thread.

    Commands receive the session: ``peer`` names the client, :meth:`send`
    writes a message, and :meth:`wait` sleeps while watching for the client
    closing the connection or the server stopping.
    """

    def __init__(self, server: ControlServer, sock: socket.socket, idle_timeout: float):
        self.server = server
        self.sock = sock
        self.idle_timeout = idle_timeout
        self.peer: PeerCredentials | None = None
        self.thread = threading.Thread(target=self._serve, name="control-conn", daemon=True)
        self._reader = protocol.LineReader(sock, protocol.MAX_REQUEST_BYTES)
        self._closed = False
        self._invalid_requests = 0

    @property
    def stopping(self) -> threading.Event:
        return self.server.stopping

    # -- used by commands ------------------------------------------------

    def send(self, message: dict) -> bool:
        """Write one message; return False if the client is gone or too slow to read it."""
        data = protocol.encode(message)
        try:
            self.sock.settimeout(self.idle_timeout)
            self.sock.sendall(data)
            return True
        except socket.timeout:
            log.warning("Closing control connection of uid %s (pid %s): it did not read a "
                        "%d-byte response within %.1f s", self._uid(), self._pid(), len(data),
                        self.idle_timeout)
        except OSError as error:
            log.debug("Control client uid %s (pid %s) went away while we sent: %s",
                      self._uid(), self._pid(), error)
        self._closed = True
        return False

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return False early if the client left or the server stops.

        Only a full close counts as leaving: poll reports POLLHUP once both
        directions are shut. A client that only shut its sending side still
        reads, and requests it pipelined stay unread until the command ends.
        """
        if self._closed or self.stopping.is_set():
            return False
        deadline = time.monotonic() + seconds
        poller = select.poll()
        poller.register(self.sock, 0)  # POLLHUP and POLLERR are always reported
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return not self.stopping.is_set()
            # Wake at least every 100 ms to notice the server stopping.
            events = poller.poll(min(remaining, 0.1) * 1000)
            if self.stopping.is_set():
                return False
            if events:
                self._closed = True
                return False

    # -- used by the server ----------------------------------------------

    def interrupt_read(self) -> None:
        """Make a blocked read return end-of-file, so the thread ends after its current command."""
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def abort(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- the connection's thread -----------------------------------------

    def _serve(self) -> None:
        try:
            self.peer = read_peer_credentials(self.sock)
            log.debug("Control connection from uid %d (pid %d)", self.peer.uid, self.peer.pid)
            while not self._closed and not self.stopping.is_set():
                if not self._serve_one():
                    break
        except Exception:  # a fault in one connection must never reach the accept thread
            log.exception("Control connection of uid %s (pid %s) failed", self._uid(),
                          self._pid())
        finally:
            self.sock.close()
            self.server._forget(self)

    def _serve_one(self) -> bool:
        """Read one request and send its response; return False to close the connection."""
        deadline = time.monotonic() + self.idle_timeout
        try:
            line = self._reader.read_line(deadline)
        except socket.timeout:
            return self._timed_out()
        except protocol.LineTooLong as error:
            log.warning("Closing control connection of uid %s (pid %s): %s", self._uid(),
                        self._pid(), error.message)
            self.send(protocol.error_response(None, error.code, error.message))
            return False
        except OSError as error:
            log.debug("Control connection of uid %s (pid %s) ended: %s", self._uid(),
                      self._pid(), error)
            return False
        if line is None:
            return False
        if not line.strip():
            return True
        response = self._answer(line)
        if response is None:
            return False
        return self.send(response)

    def _timed_out(self) -> bool:
        if self._reader.pending:
            message = (f"incomplete request: no newline within {self.idle_timeout:g} s "
                       "([control] idle_timeout); the connection is closed")
            log.info("Closing control connection of uid %s (pid %s): %s", self._uid(),
                     self._pid(), message)
            self.send(protocol.error_response(None, protocol.BAD_REQUEST, message))
        else:
            log.debug("Closing control connection of uid %s (pid %s): idle for %g s",
                      self._uid(), self._pid(), self.idle_timeout)
        return False

    def _answer(self, line: bytes) -> dict | None:
        try:
            request = protocol.decode_request(line)
        except protocol.ProtocolError as error:
            self._invalid_requests += 1
            # Log the first invalid request of a connection; a stream of garbage adds nothing.
            level = logging.INFO if self._invalid_requests == 1 else logging.DEBUG
            log.log(level, "Rejected an invalid request from uid %s (pid %s): %s", self._uid(),
                    self._pid(), error.message)
            return protocol.error_response(error.request_id, error.code, error.message,
                                           error.details)
        try:
            return self.server.dispatcher.dispatch(request, self)
        except Exception as error:  # report, keep the connection and the server alive
            log.exception("Control command %s (request %r) from uid %s failed",
                          request.command, request.id, self._uid())
            return protocol.error_response(request.id, protocol.INTERNAL,
                                           f"{request.command} failed inside mitod: "
                                           f"{type(error).__name__}: {error}; see the daemon log")

    def _uid(self):
        return self.peer.uid if self.peer else "?"

    def _pid(self):
        return self.peer.pid if self.peer else "?"


# -- binding -----------------------------------------------------------------

def resolve_group(group: str) -> int | None:
    """Return the gid of ``group``, None for "", or raise ControlServerError."""
    if not group:
        return None
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlServerError(
            f"[control] group {group!r} does not exist; create it (groupadd {group}) or set "
            "[control] group = \"\" to leave the socket's group as is") from None


def remove_stale_socket(path: str) -> None:
    """Clear the way for binding ``path``, or raise ControlServerError if it is taken."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as error:
        raise ControlServerError(f"cannot inspect control socket path {path}: "
                                 f"{error.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlServerError(
            f"{path} exists and is not a socket; mitod never removes it. Move it away or set "
            "[daemon] socket to another path")
    if probe_socket(path):
        raise ControlServerError(
            f"another mitod is answering on {path}; stop it first (mitoctl --socket {path} "
            "status shows its pid) or set [daemon] socket to another path")
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as error:
        raise ControlServerError(f"cannot remove stale control socket {path}: "
                                 f"{error.strerror}") from None
    log.warning("Removed stale control socket %s: nothing accepted connections on it", path)


def probe_socket(path: str) -> bool:
    """Return True if a process accepts connections on the socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except socket.timeout:
        # The backlog of a live but overloaded listener is full.
        return True
    except OSError as error:
        raise ControlServerError(f"cannot probe existing control socket {path}: "
                                 f"{error.strerror}; remove it if no mitod runs") from None
    finally:
        probe.close()


def bind_socket(path: str, mode: int, gid: int | None,
                group: str = "") -> tuple[socket.socket, tuple[int, int]]:
    """Create the listening socket at ``path``; return it and the file's (st_dev, st_ino)."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{secrets.token_hex(4)}.tmp")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _bind(listener, temporary, path, folder)
        try:
            os.chmod(temporary, mode)
            if gid is not None:
                _change_group(temporary, path, gid, group)
            listener.listen(LISTEN_BACKLOG)
            _link_into_place(temporary, path)
        finally:
            _unlink_quietly(temporary)
        info = os.lstat(path)
    except ControlServerError:
        listener.close()
        raise
    except OSError as error:
        listener.close()
        raise ControlServerError(f"cannot create control socket {path}: "
                                 f"{error.strerror or error}") from None
    return listener, (info.st_dev, info.st_ino)


def _bind(listener: socket.socket, temporary: str, path: str, folder: str) -> None:
    if len(os.fsencode(temporary)) > 107:
        raise ControlServerError(
            f"cannot create control socket {path}: the temporary name {temporary} used while "
            "binding exceeds the 107-byte limit of socket paths; use a shorter folder")
    try:
        listener.bind(temporary)
    except FileNotFoundError:
        raise ControlServerError(
            f"cannot create control socket {path}: folder {folder} does not exist; create it "
            "(systemd: RuntimeDirectory=mitod) or set [daemon] socket") from None
    except PermissionError:
        raise ControlServerError(
            f"cannot create control socket {path}: folder {folder} is not writable by uid "
            f"{os.getuid()}; fix its permissions or set [daemon] socket") from None


def _change_group(temporary: str, path: str, gid: int, group: str) -> None:
    try:
        os.chown(temporary, -1, gid)
    except PermissionError:
        raise ControlServerError(
            f"cannot give control socket {path} the group {group or gid}: uid {os.getuid()} is "
            "neither root nor a member of it; add the daemon's user to the group or set "
            "[control] group") from None


def _link_into_place(temporary: str, path: str) -> None:
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise ControlServerError(
            f"{path} appeared while mitod was binding its control socket; another mitod may "
            "be starting with the same [daemon] socket") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP):
            raise
        # NOTE: this file system has no hard links, so fall back to rename, which
        # would replace a socket bound at ``path`` since the probe a moment ago.
        os.rename(temporary, path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
