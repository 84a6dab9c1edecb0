"""The kernel's TCP counters (/proc/net/netstat, /proc/net/snmp) around a load phase.

They tell a server stall from a network hiccup when a few requests come back a second late:
a SYN answered only after its retransmission (TCPSynRetrans: the client's SYN was not
accepted, e.g. it met a TIME_WAIT socket or a full listen queue) costs exactly one second;
ListenOverflows / ListenDrops count connections the listen queue refused. The counters are
machine-wide: another program's connections count too (nothing else runs during a bench).
"""

from pathlib import Path

WATCHED = {
    "TcpExt": ("ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPTimeWaitOverflow"),
    "Tcp": ("RetransSegs", "AttemptFails"),
}
FILES = (Path("/proc/net/netstat"), Path("/proc/net/snmp"))


def snapshot() -> dict[str, int]:
    """{"TcpExt.ListenOverflows": n, ...}; empty where /proc/net is not readable."""
    counters: dict[str, int] = {}
    for path in FILES:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        # Each group is two lines: "Group: Name1 Name2 ..." then "Group: 1 2 ...".
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            group, *fields = names.split()
            group = group.rstrip(":")
            for name, value in zip(fields, values.split()[1:], strict=False):
                if name in WATCHED.get(group, ()):
                    counters[f"{group}.{name}"] = int(value)
    return counters


def delta(before: dict[str, int], after: dict[str, int]) -> str:
    """'TcpExt.TCPSynRetrans 3, ...' for the watched counters that moved, or 'none moved'."""
    moved = [
        f"{name} {after[name] - before[name]}"
        for name in after
        if after[name] != before.get(name, after[name])
    ]
    return ", ".join(moved) or "none moved"
