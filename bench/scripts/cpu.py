#!/usr/bin/env python3
"""CPU per request beside throughput: anykv vs redis-server, same run.

A server's CPU cost is its process's utime + stime (/proc/PID/stat, read
before and after each workload; clock ticks, usually 10 ms), divided by
the requests served. Workloads, each against an idle server:

  paced   one connection sending GET at a fixed rate (default 2,000/s for
          4 s): a raw-socket client sends GET, reads the reply, sleeps to
          the next slot (0.5 ms apart); p50 is that client's round trip.
  c1      redis-benchmark -c 1 -n 100000 -t get
  c50     redis-benchmark -c 50 -n 100000 -t get

Both servers run with `--save '' --appendonly no` (plus --redis-arg /
--anykv-arg). The order of the two servers alternates per round; the
tables show medians over rounds. Besides the stat figures, the per-thread
run time from /proc/PID/task/*/schedstat (nanoseconds) is read too, as a
cross-check of the tick-rounded stat figures (column "ratio (ns)").

Usage:
    CARGO_TARGET_DIR=/tmp/relbench cargo build --release
    python3 bench/scripts/cpu.py --anykv /tmp/relbench/release/anykv --rounds 5 --wait-quiet 10
    # extra server flags, repeated as needed (note the `=` for values
    # that start with a dash):
    python3 bench/scripts/cpu.py --anykv-arg=--executor-poll-us --anykv-arg=0
    # more anykv servers in the same rounds (another build, other flags):
    python3 bench/scripts/cpu.py --variant old=/tmp/old/anykv \
        --variant nopoll=- --variant-arg nopoll=--executor-poll-us --variant-arg nopoll=0

The table has a row per workload and server, with ratios to redis-server
measured in the same rounds (a server's rounds rotate in order).
"""
import argparse, csv, io, os, socket, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(__file__))
from compare import QuietGuard, cpu_stat, free_port, parse_variants, start, stop_all  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
GET = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n"


def cpu_sched(pid):
    """Run time summed over the process's live threads, in seconds (ns)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def read_reply(sock, buf):
    """Reads one RESP reply to GET (bulk string or null); returns leftover."""
    while True:
        if buf.startswith(b"$-1\r\n"):
            return buf[5:]
        nl = buf.find(b"\r\n")
        if nl >= 0:
            if buf[:1] != b"$":
                raise RuntimeError(f"unexpected reply {buf[:40]!r}")
            n = int(buf[1:nl])
            end = nl + 2 + n + 2
            if len(buf) >= end:
                return buf[end:]
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk


def paced(port, rate, seconds):
    """GET at `rate` per second for `seconds`; returns (requests, p50 ms)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    slot = 1.0 / rate
    n = int(rate * seconds)
    lat = []
    buf = b""
    t0 = time.perf_counter()
    for i in range(n):
        wait = t0 + i * slot - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        t = time.perf_counter()
        s.sendall(GET)
        buf = read_reply(s, buf)
        lat.append(time.perf_counter() - t)
    s.close()
    return n, statistics.median(lat) * 1e3


def benchmark(port, clients, n):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-c", str(clients), "-n", str(n), "-t", "get",
                          "--csv"], capture_output=True, text=True, check=True).stdout
    for r in csv.DictReader(io.StringIO(out)):
        return n, float(r["rps"]), float(r["p50_latency_ms"])
    raise RuntimeError(f"no CSV from redis-benchmark: {out!r}")


def measure(pid, port, workload, a):
    """Runs one workload; returns (requests, rps, p50 ms, cpu s stat, cpu s sched)."""
    c0, s0, t0 = cpu_stat(pid), cpu_sched(pid), time.perf_counter()
    if workload == "paced":
        n, p50 = paced(port, a.rate, a.seconds)
        rps = n / (time.perf_counter() - t0)
    elif workload == "c1":
        n, rps, p50 = benchmark(port, 1, a.requests)
    else:
        n, rps, p50 = benchmark(port, 50, a.requests)
    # Let the server finish what it is doing (replies, a last poll window).
    time.sleep(0.05)
    return n, rps, p50, cpu_stat(pid) - c0, cpu_sched(pid) - s0


LABELS = {
    "paced": "(a) 1 conn, {rate:,} GET/s for {seconds:g} s",
    "c1": "(b) redis-benchmark -c 1 -n {requests} -t get",
    "c50": "(c) redis-benchmark -c 50 -n {requests} -t get",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--anykv", default="target/release/anykv")
    ap.add_argument("--anykv-arg", action="append", default=[], help="extra anykv server flag (repeat)")
    ap.add_argument("--redis-arg", action="append", default=[], help="extra redis-server flag (repeat)")
    ap.add_argument("--variant", action="append", default=[], help="LABEL=BINARY: another anykv server (repeat)")
    ap.add_argument("--variant-arg", action="append", default=[], help="LABEL=ARG: a flag for that variant (repeat)")
    ap.add_argument("--workloads", default="paced,c1,c50")
    ap.add_argument("--rate", type=int, default=2000, help="paced GETs per second")
    ap.add_argument("--seconds", type=float, default=4.0, help="paced duration")
    ap.add_argument("--requests", type=int, default=100000, help="redis-benchmark -n")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECS",
                    help="before each (round, workload), wait until no compiler (rustc, cargo, cc, ld) has run "
                         "for SECS seconds and other processes are idle; measure it again if a compiler ran or "
                         "other processes used over 10%% of a CPU meanwhile")
    a = ap.parse_args()
    workloads = a.workloads.split(",")
    # name -> (kind for start(), binary, flags)
    specs = {"redis": ("redis", None, a.redis_arg), "anykv": ("anykv", a.anykv, a.anykv_arg)}
    for label, (binary, args) in parse_variants(a).items():
        specs[label] = ("anykv", binary, args)
    names = list(specs)
    ports = {name: free_port() for name in names}
    servers = {}
    guard = QuietGuard(a.wait_quiet)
    try:
        for name, (kind, binary, extra) in specs.items():
            servers[name] = start(kind, binary, ports[name], extra)
            subprocess.run(["redis-cli", "-p", str(ports[name]), "set", "key:__rand_int__", "xxx"],
                           capture_output=True, check=True)
        time.sleep(0.5)
        res = {}  # (workload, name) -> [tuple]
        for rnd in range(a.rounds):
            # Rotate the order every round (plain alternation for two servers).
            k = rnd % len(names)
            order = names[k:] + names[:k]
            for w in workloads:
                # One unit: this workload against every server, in this
                # round's order (measured again if a compiler ran).
                while True:
                    guard.wait(p.pid for p in servers.values())
                    unit = {}
                    for name in order:
                        unit[(w, name)] = measure(servers[name].pid, ports[name], w, a)
                    if not guard.disturbed() or guard.give_up():
                        break
                    print(f"round {rnd + 1}, {w}: disturbed ({', '.join(sorted(set(guard.seen)))}), "
                          "measuring again", file=sys.stderr)
                for key, v in unit.items():
                    res.setdefault(key, []).append(v)
            print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
            for w in workloads:
                print(f"  {w}: " + " | ".join(
                    f"{n} {res[(w, n)][-1][3]:.2f} s ({res[(w, n)][-1][4]:.3f}) {res[(w, n)][-1][1]:,.0f}/s "
                    f"p50 {res[(w, n)][-1][2]:.3f}" for n in names), file=sys.stderr)
        med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
        print(f"Medians of {a.rounds} rounds. CPU: the server's utime+stime from /proc/PID/stat "
              f"({1000 // TICK} ms ticks); \"(ns)\": the CPU ratio from schedstat run times instead. "
              "Ratios are to redis-server: each the median of the per-round ratios (a round measures "
              "every server back to back).")
        print()
        print("| workload | server | CPU s | CPU µs/req | CPU/req ratio | per round (min–max) | (ns) | req/s | "
              "throughput ratio | p50 ms | p50 ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

        def paired(w, name, f):
            return statistics.median(f(k, r) for k, r in zip(res[(w, name)], res[(w, "redis")]))

        def spread(w, name, f):
            xs = [f(k, r) for k, r in zip(res[(w, name)], res[(w, "redis")])]
            return f"{min(xs):.2f}–{max(xs):.2f}"

        for w in workloads:
            label = LABELS[w].format(rate=a.rate, seconds=a.seconds, requests=a.requests)
            for name in names:
                k = res[(w, name)]
                kn, kc, kr, kp = med(k, 0), med(k, 3), med(k, 1), med(k, 2)
                # (requests, rps, p50, cpu stat, cpu sched) per round
                per_req = lambda k, r: (k[3] / k[0]) / (r[3] / r[0]) if r[3] else float("nan")  # noqa: E731
                cpu_ratio = paired(w, name, per_req)
                cpu_spread = spread(w, name, per_req)
                ns_ratio = paired(w, name, lambda k, r: (k[4] / k[0]) / (r[4] / r[0]) if r[4] else float("nan"))
                rps_ratio = paired(w, name, lambda k, r: k[1] / r[1])
                p50_ratio = paired(w, name, lambda k, r: k[2] / r[2])
                print(f"| {label} | {name} | {kc:.2f} | {kc / kn * 1e6:.1f} | {cpu_ratio:.2f}x | {cpu_spread} | "
                      f"{ns_ratio:.2f}x | "
                      f"{kr:,.0f} | {rps_ratio:.2f}x | {kp:.3f} | {p50_ratio:.2f}x |")
    finally:
        guard.close()
        stop_all(servers)


if __name__ == "__main__":
    main()
