#!/usr/bin/env python3
"""`anykv router` vs twemproxy (Debian's nutcracker), both in front of the
same redis-server, and that redis-server directly, in the same rounds.

Per round (the order of the three setups rotates every round):
  * throughput: redis-benchmark -c 50 -t set,get at -P 1 (-n 200000) and
    -P 16 (-n 2000000): requests/s, and the proxy's CPU µs per request
    (utime+stime of its process from /proc, read around the run);
  * latency: redis-benchmark -c 1 -P 1 -t set,get (-n 50000): p50 and p99,
    and what each proxy adds over the direct connection in that round.

Reported: the median over the rounds of each figure and of the per-round
router/twemproxy ratios, with the min..max of those ratios. A goal is met
when every round's ratio meets it, not met when none does, and "within
noise" otherwise.

twemproxy runs with its defaults (one server connection, 16 KiB mbufs) and
one thread, as deployed; the router twice: with its defaults (one worker
thread per core, each with one shared upstream connection: `router`) and
with one worker thread, as twemproxy (`router-1t`). On a machine whose
cores are shared with redis-server and redis-benchmark, as here, the
second worker competes with them for CPU.

Usage:
    cargo build --release
    python3 bench/scripts/router.py --anykv target/release/anykv [--rounds 5] \
        [--threads 0] [--wait-quiet 10]

Progress goes to stderr as plain lines; the tables (markdown) to stdout.
"""
import argparse, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(__file__))
from compare import QuietGuard, bench, cpu_stat, free_port, verdict, wait_ready  # noqa: E402


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def start_all(anykv, threads, tmp):
    rport, tport, aport, sport, a1port = free_port(), free_port(), free_port(), free_port(), free_port()
    procs = {}
    procs["redis"] = subprocess.Popen(
        ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(rport)
    conf = os.path.join(tmp, "nutcracker.yml")
    with open(conf, "w") as f:
        f.write(f"""bench:
  listen: 127.0.0.1:{tport}
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
   - 127.0.0.1:{rport}:1
""")
    procs["twemproxy"] = subprocess.Popen(
        ["nutcracker", "-c", conf, "-s", str(sport), "-o", os.path.join(tmp, "nutcracker.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(tport)
    procs["router"] = subprocess.Popen(
        [anykv, "router", "--port", str(aport), "--bind", "127.0.0.1",
         "--upstream", f"127.0.0.1:{rport}", "--threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(aport)
    procs["router-1t"] = subprocess.Popen(
        [anykv, "router", "--port", str(a1port), "--bind", "127.0.0.1",
         "--upstream", f"127.0.0.1:{rport}", "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(a1port)
    ports = {"direct": rport, "twemproxy": tport, "router": aport, "router-1t": a1port}
    return procs, ports


def measure(port, pid, clients, pipeline, n):
    """rps per test (SET, GET) and the process `pid`'s CPU µs per request."""
    c0 = cpu_stat(pid)
    rows = bench(port, "set,get", clients, pipeline, n)
    spent = cpu_stat(pid) - c0
    return rows, spent * 1e6 / max(1, 2 * n)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anykv", default="target/release/anykv")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--wait-quiet", type=float, default=0)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="anykv-router-bench-")
    procs, ports = start_all(a.anykv, a.threads, tmp)
    guard = QuietGuard(a.wait_quiet)
    setups = ["direct", "twemproxy", "router", "router-1t"]
    tput = {}  # (setup, P, test) -> [rps]
    cpu = {}   # (setup, P) -> [µs/req of the proxy]
    lat = {}   # (setup, test) -> [(p50, p99)]
    try:
        for r in range(a.rounds):
            order = setups[r % len(setups):] + setups[:r % len(setups)]
            for s in order:
                pid = procs["redis" if s == "direct" else s].pid
                for pipeline, n in ((1, 200000), (16, 2000000)):
                    while True:
                        guard.wait([p.pid for p in procs.values()])
                        rows, per = measure(ports[s], pid, 50, pipeline, n)
                        if not guard.disturbed() or guard.give_up():
                            break
                        log("  disturbed; measuring again")
                    for t, v in rows.items():
                        tput.setdefault((s, pipeline, t), []).append(v[0])
                    cpu.setdefault((s, pipeline), []).append(per)
                    log(f"round {r + 1}/{a.rounds} {s:9} -P {pipeline:2}: "
                        + ", ".join(f"{t} {v[0]:,.0f}/s" for t, v in rows.items())
                        + f"; {per:.2f} µs CPU/request")
                rows = bench(ports[s], "set,get", 1, 1, 50000)
                for t, v in rows.items():
                    lat.setdefault((s, t), []).append((v[1], v[2]))
                log(f"round {r + 1}/{a.rounds} {s:9} -c 1: "
                    + ", ".join(f"{t} p50 {v[1]:.3f} p99 {v[2]:.3f} ms" for t, v in rows.items()))
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=5)
            except Exception:
                p.kill()
        guard.close()

    med = statistics.median
    routers = ("router", "router-1t")
    print(f"### Throughput, redis-benchmark -c 50, median of {a.rounds} rounds\n")
    print("| test | -P | direct rps | twemproxy rps | router rps | router/twemproxy (min..max) | verdict | router-1t rps | router-1t/twemproxy (min..max) | verdict | goal | CPU µs/req twemproxy | router | router-1t |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for pipeline, goal in ((1, 1.0), (16, 1.2)):
        for t in ("SET", "GET"):
            tw = tput[("twemproxy", pipeline, t)]
            cells = []
            for rname in routers:
                ro = tput[(rname, pipeline, t)]
                ratios = [x / y for x, y in zip(ro, tw)]
                cells.append(f"{med(ro):,.0f} | {med(ratios):.2f}x ({min(ratios):.2f}..{max(ratios):.2f}) | {verdict(ratios, goal)}")
            print(f"| {t} | {pipeline} | {med(tput[('direct', pipeline, t)]):,.0f} | {med(tw):,.0f} | {cells[0]} | {cells[1]} | ≥ {goal:.1f}x | "
                  f"{med(cpu[('twemproxy', pipeline)]):.2f} | {med(cpu[('router', pipeline)]):.2f} | {med(cpu[('router-1t', pipeline)]):.2f} |")
    print(f"\n### Latency, redis-benchmark -c 1 -P 1 -n 50000, median of {a.rounds} rounds (ms)\n")
    print("| test | setup | p50 | p50 added over direct | p99 | p50 added ≤ twemproxy's | p99 < twemproxy's |")
    print("|---|---|---|---|---|---|---|")

    def word(oks):
        return "met" if all(oks) else ("not met" if not any(oks) else f"within noise ({sum(oks)}/{len(oks)} rounds)")
    for t in ("SET", "GET"):
        d, tw = lat[("direct", t)], lat[("twemproxy", t)]
        add_tw = [x[0] - y[0] for x, y in zip(tw, d)]
        print(f"| {t} | direct | {med(x[0] for x in d):.3f} | | {med(x[1] for x in d):.3f} | | |")
        print(f"| {t} | twemproxy | {med(x[0] for x in tw):.3f} | +{med(add_tw):.3f} | {med(x[1] for x in tw):.3f} | | |")
        for rname in routers:
            ro = lat[(rname, t)]
            add_ro = [x[0] - y[0] for x, y in zip(ro, d)]
            p50_ok = [r <= w for r, w in zip(add_ro, add_tw)]
            p99_ok = [r[1] < w[1] for r, w in zip(ro, tw)]
            print(f"| {t} | {rname} | {med(x[0] for x in ro):.3f} | +{med(add_ro):.3f} | {med(x[1] for x in ro):.3f} | {word(p50_ok)} | {word(p99_ok)} |")


if __name__ == "__main__":
    main()
