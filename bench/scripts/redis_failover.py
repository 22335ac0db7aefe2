#!/usr/bin/env python3
"""The reference for the planned-handoff figure (docs/BENCHMARKS.md,
"Failover"): redis-server 7.0's own coordinated `FAILOVER`, measured the
way `bench/examples/failover.rs` measures anykv's.

Two redis-server processes on loopback, a primary and its replica. A
client sends `INCR counter` as fast as acknowledgements come, to the
primary; after any error or closed connection it retries on the other
server every 2 ms (as the anykv client does). 400 ms in, the primary gets
`FAILOVER` (no TIMEOUT: it waits for the replica's offset, promotes it and
demotes itself); the run ends once the new primary took 20 writes. Per
run: the longest gap between two acknowledgements, the errors by kind, and
acknowledged writes lost (an answer not above the last acknowledged one).
The next run fails the new primary over again.

Usage:
    python3 bench/scripts/redis_failover.py [--runs 30] [--redis-server redis-server]

Progress goes to stderr as plain lines; the table (markdown) to stdout.
"""
import argparse, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(__file__))
from compare import free_port  # noqa: E402
from replication import enc, log  # noqa: E402


class Conn:
    """A minimal RESP client: simple strings, errors, integers and bulk
    strings (enough for INCR, INFO and FAILOVER)."""

    def __init__(self, port, timeout=10.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.s.makefile("rb")

    def call(self, *args):
        self.s.sendall(enc(*args))
        line = self.f.readline()
        if not line:
            raise ConnectionError("closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2].decode(errors="replace")
        raise ConnectionError("unexpected reply %r" % line)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def info(port, section, field):
    try:
        c = Conn(port, timeout=2)
        text = c.call("INFO", section)
        c.close()
    except OSError:
        return None
    if not isinstance(text, str):
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return None


def wait(what, cond, limit=30.0):
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise SystemExit("timed out waiting for " + what)
        time.sleep(0.02)


def writer(ports, first, start, stop, mark, seen):
    """INCRs on ports[first], switching servers after any error."""
    on = first
    conn = None
    last = time.monotonic()
    acked = start
    while not stop.is_set():
        try:
            if conn is None:
                conn = Conn(ports[on], timeout=5)
            r = conn.call("INCR", "counter")
        except (OSError, ConnectionError):
            r = ConnectionError("cut")
        if isinstance(r, int):
            now = time.monotonic()
            if r <= acked:
                seen["lost"] += 1
            acked = r
            seen["gap"] = max(seen["gap"], now - last)
            last = now
            if mark.is_set() and seen["errors"] and seen["first_after"] is None:
                seen["first_after"] = now
            if mark.is_set() and on != first:
                seen["on_new"] += 1
            continue
        kind = str(r).split()[0] if str(r) else "ERR"
        if isinstance(r, ConnectionError):
            kind = "cut"
        seen["kinds"][kind] = seen["kinds"].get(kind, 0) + 1
        seen["errors"] += 1
        if conn is not None:
            conn.close()
        conn = None
        on = 1 - on
        time.sleep(0.002)
    seen["acked"] = acked


def pct(v, p):
    v = sorted(v)
    if not v:
        return 0
    rank = max(1, min(len(v), int(-(-p / 100.0 * len(v) // 1))))
    return v[rank - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--redis-server", default="redis-server")
    a = ap.parse_args()
    version = subprocess.run([a.redis_server, "--version"], capture_output=True, text=True).stdout.strip()
    d = tempfile.mkdtemp(prefix="redis-failover-")
    ports = [free_port(), free_port()]
    procs = []
    try:
        for i, port in enumerate(ports):
            dd = os.path.join(d, str(i))
            os.makedirs(dd)
            procs.append(subprocess.Popen(
                [a.redis_server, "--port", str(port), "--dir", dd, "--save", "", "--appendonly", "no",
                 "--bind", "127.0.0.1", "--logfile", os.path.join(dd, "log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait("redis-server on %d" % port, lambda p=port: info(p, "server", "redis_version") is not None)
        Conn(ports[1]).call("REPLICAOF", "127.0.0.1", ports[0])
        primary = 0
        rows = []
        for run in range(a.runs):
            replica = 1 - primary
            wait("the replica's link", lambda: info(ports[replica], "replication", "master_link_status") == "up")
            wait("the primary sees its replica online",
                 lambda: "state=online" in (info(ports[primary], "replication", "slave0") or ""))
            start = Conn(ports[primary]).call("INCR", "counter") or 0
            seen = {"lost": 0, "gap": 0.0, "errors": 0, "kinds": {}, "first_after": None, "on_new": 0}
            stop, mark = threading.Event(), threading.Event()
            t = threading.Thread(target=writer, args=(ports, primary, start, stop, mark, seen))
            t.start()
            time.sleep(0.4)
            mark.set()
            sent = time.monotonic()
            r = Conn(ports[primary], timeout=30).call("FAILOVER")
            if isinstance(r, Exception):
                stop.set()
                t.join()
                raise SystemExit("FAILOVER refused: %s" % r)
            wait("writes on the new primary", lambda: seen["on_new"] >= 20 or seen["errors"] > 100000)
            time.sleep(0.2)
            stop.set()
            t.join()
            took = (seen["first_after"] - sent) if seen["first_after"] else None
            rows.append(seen)
            log("run %2d/%d: longest gap %.0f ms, first write after the error %s ms, errors: %s; %d lost"
                % (run + 1, a.runs, seen["gap"] * 1000,
                   "-" if took is None else "%.0f" % (took * 1000),
                   ", ".join("%d %s" % (n, k) for k, n in sorted(seen["kinds"].items())) or "none",
                   seen["lost"]))
            primary = replica
        gaps = [r["gap"] * 1000 for r in rows]
        errs = [r["errors"] for r in rows]
        kinds = {}
        for r in rows:
            for k, n in r["kinds"].items():
                kinds[k] = kinds.get(k, 0) + n
        print("%s, %d FAILOVER runs (the client retries on the other server every 2 ms)" % (version, len(rows)))
        print()
        print("| measure | runs | p50 ms | p90 ms | p99 ms | max ms |")
        print("| --- | --- | --- | --- | --- | --- |")
        print("| FAILOVER: longest gap between acknowledgements | %d | %.0f | %.0f | %.0f | %.0f |"
              % (len(gaps), pct(gaps, 50), pct(gaps, 90), pct(gaps, 99), max(gaps)))
        print()
        print("errors per run: p50 %d, max %d, total %d (%s); acknowledged writes lost: %d"
              % (statistics.median_low(errs), max(errs), sum(errs),
                 ", ".join("%d %s" % (n, k) for k, n in sorted(kinds.items())) or "none",
                 sum(r["lost"] for r in rows)))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
