"""Authorization of control commands: peer credentials from SO_PEERCRED and the group check.

Anyone who can open the socket (its mode and group decide that) may run the
read-only commands. The mutating ones (start, stop, run, reload) also need
the peer to be root, the daemon's own user, or a member of ``[control]
group``. Membership is read from the system's group database at each check,
so ``usermod -aG`` takes effect without a restart. A user whose primary group
is the group counts as a member, and so does a peer whose SO_PEERCRED gid is
the group's.

SO_PEERCRED reports the credentials the peer had when it called
``connect()``. A process that changes its uid afterwards keeps the old
credentials on that connection (socket(7)).
"""

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass

# struct ucred from <sys/socket.h>: pid_t pid; uid_t uid; gid_t gid.
_UCRED = struct.Struct("iII")


@dataclass(frozen=True)
class PeerCredentials:
    """The process at the other end of a Unix socket connection."""

    pid: int
    uid: int
    gid: int

    def actor(self) -> dict:
        """Describe the peer for audit rows and log lines."""
        return {"uid": self.uid, "gid": self.gid, "pid": self.pid, "user": user_name(self.uid),
                "via": "control socket"}


def read_peer_credentials(sock: socket.socket) -> PeerCredentials:
    """Read SO_PEERCRED from a connected AF_UNIX stream socket (Linux only)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid)


def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


class Authorizer:
    """Decide whether a peer may run mutating commands.

    ``group`` is the ``[control] group`` the socket was created with; "" means
    no group, so only root and the daemon's own user may mutate.
    """

    def __init__(self, group: str, daemon_uid: int | None = None):
        self.group = group
        self.daemon_uid = os.getuid() if daemon_uid is None else daemon_uid

    def may_mutate(self, peer: PeerCredentials) -> bool:
        if peer.uid in (0, self.daemon_uid):
            return True
        if not self.group:
            return False
        return self.is_member(peer)

    def is_member(self, peer: PeerCredentials) -> bool:
        """Return True if the peer belongs to the group by the group database or its gid."""
        try:
            entry = grp.getgrnam(self.group)
        except KeyError:
            return False
        if peer.gid == entry.gr_gid:
            return True
        try:
            account = pwd.getpwuid(peer.uid)
        except KeyError:
            return False
        return account.pw_gid == entry.gr_gid or account.pw_name in entry.gr_mem

    def denial_message(self, command: str, peer: PeerCredentials) -> str:
        """Explain a denied mutating command and how to get the permission."""
        who = user_name(peer.uid) or f"uid {peer.uid}"
        if not self.group:
            return (f"{command} needs root or the daemon's own user (uid {self.daemon_uid}); "
                    f"{who} is neither, and [control] group is empty, so no group grants it")
        return (f"{command} needs membership in group {self.group} (or root); {who} is not a "
                f"member. Add the user with: usermod -aG {self.group} {who}, then log in again")
