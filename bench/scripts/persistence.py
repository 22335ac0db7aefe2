#!/usr/bin/env python3
"""Persistence benchmarks: anykv vs redis-server with the same settings, same run.

1. SET throughput with appendonly yes and appendfsync everysec / always
   (redis-benchmark -t set -c 50, -P 1 and -P 16), interleaved rounds, medians.
2. Restart time to first command with 1M keys (DEBUG POPULATE 1000000 key 16,
   SAVE, stop, start): time from spawn until PING answers.
3. Memory during a background save under writes: the servers' proportional
   set size (Pss, parent + fork child for Redis) sampled every 10 ms while
   BGSAVE runs and redis-benchmark overwrites random keys; peak vs before.

Usage:
    cargo build --release
    python3 bench/scripts/persistence.py [--rounds 3] [--anykv target/release/anykv] \
        [--anykv-arg=--executor-poll-us --anykv-arg=0] [--redis-arg=...] [--wait-quiet 10]

--anykv-arg / --redis-arg (repeatable) add flags to every server started;
--wait-quiet SECS waits before each throughput round until no compiler has
run for SECS seconds and other processes are idle, and measures the round
again if a compiler ran or other processes used over 10% of a CPU meanwhile.
"""
import argparse, csv, io, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(__file__))
from compare import QuietGuard, cli, free_port, with_cpu  # noqa: E402

# Extra server flags from --anykv-arg / --redis-arg.
EXTRA = {"redis": [], "anykv": []}


def spawn(kind, anykv, port, d, extra=()):
    if kind == "redis":
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
               "--enable-debug-command", "yes", *extra, *EXTRA["redis"]]
    else:
        cmd = [anykv, "server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
               "--enable-debug-command", "yes", *extra, *EXTRA["anykv"]]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ping_ok(port):
    try:
        import socket
        s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
        s.sendall(b"PING\r\n")
        ok = s.recv(64).startswith(b"+PONG")
        s.close()
        return ok
    except Exception:
        return False


def wait_ping(port, limit=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if ping_ok(port):
            return time.monotonic() - t0
        time.sleep(0.002)
    raise SystemExit(f"no PONG on {port}")


def stop(p, port):
    cli(port, "shutdown", "nosave")
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def bench_set(port, pipeline, n):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-c", "50", "-P", str(pipeline),
                          "-n", str(n), "-r", "100000", "--csv"], capture_output=True, text=True).stdout
    for r in csv.DictReader(io.StringIO(out)):
        return float(r["rps"]), float(r["p50_latency_ms"]), float(r["p99_latency_ms"])
    return 0.0, 0.0, 0.0


def aof_throughput(anykv, rounds, guard):
    rows = []
    for fsync in ("everysec", "always"):
        for pipeline, n in ((1, 100000), (16, 1000000)):
            res = {"redis": [], "anykv": []}
            for r in range(rounds):
                order = ("redis", "anykv") if r % 2 == 0 else ("anykv", "redis")
                while True:
                    guard.wait()
                    unit = {}
                    for kind in order:
                        d = tempfile.mkdtemp(prefix=f"akvbench-{kind}-")
                        port = free_port()
                        p = spawn(kind, anykv, port, d,
                                  ["--save", "", "--appendonly", "yes", "--appendfsync", fsync])
                        wait_ping(port)
                        got, spent = with_cpu([p.pid], lambda: bench_set(port, pipeline, n))
                        # The server's CPU per request (its fsync thread's too).
                        unit[kind] = got + (spent * 1e6 / n,)
                        stop(p, port)
                        shutil.rmtree(d, ignore_errors=True)
                    if not guard.disturbed() or guard.give_up():
                        break
                    print(f"{fsync} -P {pipeline} round {r + 1}: disturbed, measuring again", file=sys.stderr)
                for kind, v in unit.items():
                    res[kind].append(v)
            med = {k: tuple(statistics.median(x[i] for x in v) for i in range(4)) for k, v in res.items()}
            rows.append((fsync, pipeline, med["redis"], med["anykv"]))
    print("| appendfsync | -P | Redis SET/s | anykv SET/s | ratio | Redis p50/p99 ms | anykv p50/p99 ms | "
          "CPU µs/req Redis / anykv |")
    print("|---|---|---|---|---|---|---|---|")
    for fsync, pl, rd, ak in rows:
        print(f"| {fsync} | {pl} | {rd[0]:,.0f} | {ak[0]:,.0f} | **{ak[0] / rd[0]:.2f}x** | "
              f"{rd[1]:.3f} / {rd[2]:.3f} | {ak[1]:.3f} / {ak[2]:.3f} | {rd[3]:.1f} / {ak[3]:.1f} |")


def restart_time(anykv, rounds, keys):
    res = {"redis": [], "anykv": []}
    sizes = {}
    for r in range(rounds):
        for kind in (("redis", "anykv") if r % 2 == 0 else ("anykv", "redis")):
            d = tempfile.mkdtemp(prefix=f"akvrestart-{kind}-")
            port = free_port()
            p = spawn(kind, anykv, port, d, ["--save", "", "--appendonly", "no"])
            wait_ping(port)
            cli(port, "debug", "populate", str(keys), "key", "16")
            cli(port, "save")
            # (anykv's snapshot is dump.akv: its own format, named so.)
            sizes[kind] = os.path.getsize(os.path.join(d, "dump.rdb" if kind == "redis" else "dump.akv"))
            stop(p, port)
            p = spawn(kind, anykv, port, d, ["--save", "", "--appendonly", "no"])
            res[kind].append(wait_ping(port))
            n = int(cli(port, "dbsize").strip() or 0)
            assert n == keys, f"{kind} loaded {n} keys"
            stop(p, port)
            shutil.rmtree(d, ignore_errors=True)
    rd, ak = statistics.median(res["redis"]), statistics.median(res["anykv"])
    print(f"| restart to first PONG, {keys:,} keys | Redis {rd * 1000:.0f} ms (file {sizes['redis'] / 1e6:.1f} MB) | "
          f"anykv {ak * 1000:.0f} ms (file {sizes['anykv'] / 1e6:.1f} MB) | **{ak / rd:.2f}x** |")


def pss(pid):
    """Pss of a process and its children (Redis's fork child), bytes."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for q in pids:
        try:
            with open(f"/proc/{q}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def bgsave_memory(anykv, keys):
    print("| server | Pss before | peak Pss during BGSAVE under writes | ratio | BGSAVE time |")
    print("|---|---|---|---|---|")
    for kind in ("redis", "anykv"):
        d = tempfile.mkdtemp(prefix=f"akvmem-{kind}-")
        port = free_port()
        p = spawn(kind, anykv, port, d, ["--save", "", "--appendonly", "no"])
        wait_ping(port)
        cli(port, "debug", "populate", str(keys), "key", "16")
        time.sleep(0.5)
        before = pss(p.pid)
        load = subprocess.Popen(["redis-benchmark", "-p", str(port), "-t", "set", "-c", "20", "-n", "100000000",
                                 "-r", str(keys), "-d", "16", "-q"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        t0 = time.monotonic()
        cli(port, "bgsave")
        peak = before
        while True:
            peak = max(peak, pss(p.pid))
            info = cli(port, "info", "persistence")
            if "rdb_bgsave_in_progress:0" in info and time.monotonic() - t0 > 0.05:
                break
            time.sleep(0.01)
        dt = time.monotonic() - t0
        load.kill()
        load.wait()
        stop(p, port)
        shutil.rmtree(d, ignore_errors=True)
        print(f"| {kind} | {before / 1e6:.0f} MB | {peak / 1e6:.0f} MB | **{peak / before:.2f}x** | {dt:.2f} s |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--anykv", default="target/release/anykv")
    ap.add_argument("--keys", type=int, default=1000000)
    ap.add_argument("--skip", default="", help="comma list of aof,restart,memory to skip")
    ap.add_argument("--anykv-arg", action="append", default=[], help="extra anykv server flag (repeat)")
    ap.add_argument("--redis-arg", action="append", default=[], help="extra redis-server flag (repeat)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECS",
                    help="before each throughput round, wait until no compiler has run for SECS seconds and "
                         "other processes are idle")
    a = ap.parse_args()
    EXTRA["anykv"][:] = a.anykv_arg
    EXTRA["redis"][:] = a.redis_arg
    skip = set(a.skip.split(","))
    if "aof" not in skip:
        guard = QuietGuard(a.wait_quiet)
        aof_throughput(a.anykv, a.rounds, guard)
        guard.close()
        print()
    if "restart" not in skip:
        restart_time(a.anykv, a.rounds, a.keys)
        print()
    if "memory" not in skip:
        bgsave_memory(a.anykv, a.keys)


if __name__ == "__main__":
    main()
