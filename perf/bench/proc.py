"""What /proc says about processes, CPUs and sockets."""
import os
import random

HZ = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (field 3 on), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            line = f.read()
    except OSError:
        return None
    return line[line.rindex(")") + 2:].split()


def ticks(pids, user_only=False):
    """utime+stime (or utime alone) of the processes, in clock ticks."""
    total = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f:
            total += int(f[11]) + (0 if user_only else int(f[12]))
    return total


def cpu_busy(cpu):
    """Busy ticks of one CPU (everything but idle and iowait) from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            v = line.split()
            if v[0] == f"cpu{cpu}":
                return sum(int(v[i]) for i in (1, 2, 3, 6, 7, 8))
    return 0


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = _stat_fields(d)
            if f and f[1] == str(pid):
                out.append(int(d))
    return out


def _status_kib(pids, key):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def rss_kib(pids):
    return _status_kib(pids, "VmRSS")


def pte_kib(pids):
    return _status_kib(pids, "VmPTE")


def _sockets():
    """(local port, state, local address, remote address) of every TCP socket,
    IPv4 and IPv6."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    v = line.split()
                    yield int(v[1].rsplit(":", 1)[1], 16), v[3], v[1], v[2]
        except OSError:
            continue


def listening(port):
    return any(s[0] == port and s[1] == "0A" for s in _sockets())


def established(port):
    """Established connections whose local port is PORT (the server's side).
    A set: /proc/net/tcp read while sockets come and go can repeat a line."""
    return len({(s[2], s[3]) for s in _sockets() if s[0] == port and s[1] == "01"})


def free_port():
    used = {s[0] for s in _sockets()}
    for _ in range(200):
        p = 20000 + random.randrange(12000)
        if p not in used:
            return p
    raise RuntimeError("no free port")


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def has_cpu_flag(flag):
    with open("/proc/cpuinfo") as f:
        return any(line.startswith("flags") and flag in line.split() for line in f)


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]
