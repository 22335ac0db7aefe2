#!/usr/bin/env python3
"""Replication benchmarks, each comparison measured in one run.

1. lag: two `anykv node` processes, iad and cdg, with the emulated WAN
   (the built-in table: iad-cdg 97.7 ms RTT, so ~49 ms one way), a tenant
   whose primary is in iad and read region cdg. A paced writer sends SETs
   to the primary at --rate per second (pipelines of rate/1000 every
   millisecond) for --seconds; the cdg replica's `master_lag_ms` (measured
   against the primary's time stamps, every 100 ms while streaming, and
   corrected with the link's RTT: server/src/repl/lag.rs) is sampled every
   50 ms. Reported: p50/p99/max against the goal, one way + 5 ms.
2. replica cost: redis-benchmark -t set -c 50 -P 1 / -P 16 against a
   tenant's primary: (a) alone (one node, no replica), (b) with its
   standby attached in the same region (durability async), (c) the same
   with durability region. Rounds rotate the three; ratios are the median
   of per-round ratios (b/a, c/b). The same for redis-server alone and
   with a redis-server replica, as the reference for what a replica on
   the same machine costs. Beside each: the CPU µs per request of all
   the setup's server processes together.
3. full sync of --keys keys (DEBUG POPULATE): anykv server and
   redis-server as primaries, each gets a redis-server replica (REPLICAOF)
   while redis-benchmark writes to the primary; reported: time from
   REPLICAOF until the replica's link is up, the primary's peak RSS
   (VmHWM) before and after, and the writes per second during the sync.

Usage:
    CARGO_TARGET_DIR=/tmp/relbench cargo build --release
    python3 bench/scripts/replication.py --anykv /tmp/relbench/release/anykv \
        [--rounds 3] [--rate 10000] [--seconds 20] [--keys 1000000] [--wait-quiet 10] \
        [--only lag,cost,fullsync]

Progress goes to stderr as plain lines; the tables (markdown) to stdout.
"""
import argparse, csv, hashlib, io, json, os, shutil, signal, socket, statistics, subprocess, sys
import tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from compare import QuietGuard, free_port, peak_rss, with_cpu  # noqa: E402

ADMIN = "bench-admin-token"
TOKEN = "bench-tenant-token-0123456789"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for x in args:
        x = x if isinstance(x, bytes) else str(x).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(x), x))
    return b"".join(out)


class Conn:
    """A minimal RESP client (replies read as lines; enough for OK, errors,
    integers and INFO)."""

    def __init__(self, host, port, auth=True):
        self.s = socket.create_connection((host, port), timeout=10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        if auth:
            r = self.call("AUTH", "shop", TOKEN)
            if not r.startswith("+OK"):
                raise RuntimeError(f"AUTH: {r}")

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise RuntimeError("connection closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        if line[:1] == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                d = self.s.recv(65536)
                if not d:
                    raise RuntimeError("connection closed")
                self.buf += d
            body, self.buf = self.buf[:n], self.buf[n + 2:]
            return body.decode(errors="replace")
        return line.decode(errors="replace")

    def call(self, *args):
        self.s.sendall(enc(*args))
        return self.reply()

    def info(self, section, field):
        txt = self.call("INFO", section) or ""
        for l in txt.splitlines():
            if l.startswith(field + ":"):
                return l.split(":", 1)[1].strip()
        return None

    def close(self):
        self.s.close()


class Cluster:
    """anykv node processes on 127.0.<net>.n, with an admin API to create
    the one tenant `shop`."""

    def __init__(self, anykv, regions, net, wan):
        self.anykv = anykv
        self.dir = tempfile.mkdtemp(prefix="anykv-replbench-")
        subprocess.run([anykv, "cluster", "keygen", "--dir", self.dir], check=True,
                       capture_output=True)
        self.key = open(os.path.join(self.dir, "gossip.key")).read().strip()
        self.regions = regions
        self.net = net
        self.port = free_port()
        # The ports after the gossip port must be free too: pick a block.
        self.port = 20000 + (self.port % 20000) // 8 * 8
        hosts = ",".join(f"{self.ip(i + 1)}={r}" for i, r in enumerate(regions))
        self.wan = ["--emulate-wan", "builtin", "--emulate-host", hosts] if wan else []
        self.procs = [self.start(i + 1, r) for i, r in enumerate(regions)]
        self.wait_alive()

    def ip(self, n):
        return f"127.0.{self.net}.{n}"

    def start(self, n, region):
        p = self.port
        d = os.path.join(self.dir, f"n{n}")
        os.makedirs(d, exist_ok=True)
        cmd = [self.anykv, "node", "--machine", f"n{n}", "--region", region,
               "--gossip-addr", f"{self.ip(n)}:{p}", "--sync-port", str(p + 1),
               "--seeds", f"{self.ip(1)}:{p}", "--gossip-keys", self.key,
               "--gossip-profile", "test", "--cluster-size", "4",
               "--lan-port", str(p + 2), "--lan-profile", "test", *self.wan,
               "--cluster-ca", os.path.join(self.dir, "cluster-ca.pem"),
               "--cluster-ca-key", os.path.join(self.dir, "cluster-ca.key"),
               "--", "--bind", self.ip(n), "--port", str(p + 4), "--save", "",
               "--appendonly", "no", "--dir", d, "--metrics-addr", f"{self.ip(n)}:{p + 5}"]
        env = dict(os.environ, ANYKV_ADMIN_TOKEN=ADMIN)
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def http(self, n, method, path, body=None):
        req = urllib.request.Request(f"http://{self.ip(n)}:{self.port + 5}{path}", method=method,
                                     data=body.encode() if body else None,
                                     headers={"Authorization": f"Bearer {ADMIN}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_alive(self):
        want = len(self.regions)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            try:
                views = [json.loads(self.http(n, "GET", "/cluster")[1]) for n in range(1, want + 1)]
                if all(sum(m["state"] == "alive" for m in v["members"]) == want for v in views):
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise SystemExit("the nodes did not see each other within 60 s")

    def create(self, primary_region, read_regions, durability):
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        body = json.dumps({"id": 7, "name": "shop", "token_sha256": [digest], "org": "bench",
                           "primary_region": primary_region, "read_regions": read_regions,
                           "maxmemory": 0, "maxmemory_policy": None, "maxclients": 0,
                           "ops_per_sec": 0, "durability": durability,
                           "consistency": "nearest", "version": 1})
        code, text = self.http(1, "PUT", "/admin/tenants/7", body)
        if code != 200:
            raise SystemExit(f"creating the tenant: {code} {text}")
        t = json.loads(self.http(1, "GET", "/cluster")[1])["tenants"][0]
        n = lambda m: int(m[1:])
        self.primary = n(t["primary"])
        self.replicas = [n(r["node"]) for r in t["replicas"]]
        c = Conn(self.ip(self.primary), self.port + 4)
        t0 = time.monotonic()
        while int(c.info("replication", "connected_slaves") or 0) < len(self.replicas):
            if time.monotonic() - t0 > 30:
                raise SystemExit("replicas did not attach within 30 s")
            time.sleep(0.1)
        c.close()

    def redis_port(self):
        return self.port + 4

    def pids(self):
        return [p.pid for p in self.procs]

    def close(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def bench_lag(anykv, rate, seconds, guard):
    log("lag: starting iad + cdg nodes with the emulated WAN")
    c = Cluster(anykv, ["iad", "cdg"], 41, wan=True)
    try:
        c.create("iad", ["cdg"], "async")
        p = Conn(c.ip(c.primary), c.redis_port())
        r = Conn(c.ip(c.replicas[0]), c.redis_port())
        guard.wait(c.pids())
        samples, stop = [], threading.Event()

        def sample():
            # Every 50 ms: the lag its last stamp (every 100 ms) measured.
            while not stop.is_set():
                v = r.info("replication", "master_lag_ms")
                if v is not None:
                    samples.append(int(v))
                time.sleep(0.05)

        th = threading.Thread(target=sample)
        th.start()
        per_ms = max(1, rate // 1000)
        batch = b"".join(enc("SET", f"k{i}", "x" * 16) for i in range(per_ms))
        sent, t0 = 0, time.monotonic()
        next_t = t0
        while time.monotonic() - t0 < seconds:
            p.s.sendall(batch)
            for _ in range(per_ms):
                p.reply()
            sent += per_ms
            next_t += 0.001
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        elapsed = time.monotonic() - t0
        stop.set()
        th.join()
        achieved = sent / elapsed
        disturbed = guard.disturbed()
        if disturbed:
            log(f"lag: disturbed by {', '.join(sorted(set(guard.seen)))}")
        one_way = 97.7 / 2
        return {"rate": achieved, "samples": samples, "one_way": one_way, "disturbed": disturbed}
    finally:
        c.close()


def redis_benchmark(host, port, pipeline, n, auth=True):
    cmd = ["redis-benchmark", "-h", host, "-p", str(port), "-t", "set", "-c", "50",
           "-P", str(pipeline), "-n", str(n), "-r", "100000", "--csv"]
    if auth:
        cmd += ["--user", "shop", "-a", TOKEN]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    for row in csv.DictReader(io.StringIO(out)):
        return float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"])
    raise SystemExit(f"redis-benchmark printed nothing: {cmd}")


def cpu_per_request(pids, n, run):
    """`run()`'s (rps, p50, p99) and the CPU µs per request all of `pids`
    (the primary and its replica: what a request costs the machine) spent
    meanwhile."""
    res, spent = with_cpu(pids, run)
    return res + (spent * 1e6 / n,)


def bench_cost(anykv, rounds, guard):
    setups = [("alone", ["iad"], "async"), ("with standby", ["iad", "iad"], "async"),
              ("durability region", ["iad", "iad"], "region")]
    results = {(s, pl): [] for s, _, _ in setups for pl in (1, 16)}
    for rnd in range(rounds):
        order = setups[rnd % 3:] + setups[:rnd % 3]
        for name, regions, durability in order:
            log(f"cost: round {rnd + 1}/{rounds}, {name}")
            c = Cluster(anykv, regions, 42, wan=False)
            try:
                c.create("iad", [], durability)
                for pl, n in ((1, 100000), (16, 1000000)):
                    while True:
                        guard.wait(c.pids())
                        res = cpu_per_request(list(c.pids()), n,
                                       lambda: redis_benchmark(c.ip(c.primary), c.redis_port(), pl, n))
                        if not guard.disturbed() or guard.give_up():
                            break
                        log("  disturbed, measuring again")
                    results[(name, pl)].append(res)
                    log(f"  -P {pl}: {res[0]:,.0f}/s p50 {res[1]} p99 {res[2]}")
            finally:
                c.close()
    # The same on redis-server (a primary alone, then with a redis-server
    # replica on this machine): what a replica costs here for Redis.
    for rnd in range(rounds):
        for name in ("redis alone", "redis with replica"):
            log(f"cost: round {rnd + 1}/{rounds}, {name}")
            d = tempfile.mkdtemp(prefix="anykv-cost-")
            port, rport = free_port(), free_port()
            procs = [subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                       "--dir", d, "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
            try:
                wait_port(port)
                if name == "redis with replica":
                    procs.append(subprocess.Popen(
                        ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--dir", d,
                         "--dbfilename", "r.rdb", "--save", "", "--appendonly", "no",
                         "--replicaof", "127.0.0.1", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    wait_port(rport)
                    rc = Conn("127.0.0.1", rport, auth=False)
                    while rc.info("replication", "master_link_status") != "up":
                        time.sleep(0.05)
                    rc.close()
                for pl, n in ((1, 100000), (16, 1000000)):
                    while True:
                        guard.wait([p.pid for p in procs])
                        res = cpu_per_request([p.pid for p in procs], n,
                                       lambda: redis_benchmark("127.0.0.1", port, pl, n, auth=False))
                        if not guard.disturbed() or guard.give_up():
                            break
                        log("  disturbed, measuring again")
                    results.setdefault((name, pl), []).append(res)
                    log(f"  -P {pl}: {res[0]:,.0f}/s p50 {res[1]} p99 {res[2]}")
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
                shutil.rmtree(d, ignore_errors=True)
    return results


def wait_port(port):
    t0 = time.monotonic()
    while True:
        try:
            Conn("127.0.0.1", port, auth=False).close()
            return
        except OSError:
            if time.monotonic() - t0 > 20:
                raise SystemExit(f"no server on {port}")
            time.sleep(0.05)


def bench_fullsync(anykv, keys, guard):
    out = {}
    for kind in ("redis", "anykv"):
        d = tempfile.mkdtemp(prefix="anykv-fullsync-")
        port, rport = free_port(), free_port()
        base = ["--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
                "--appendonly", "no", "--enable-debug-command", "yes"]
        # Redis waits repl-diskless-sync-delay (5 s) for more replicas
        # before a diskless sync; anykv starts at once: compare the syncs.
        cmd = (["redis-server", "--repl-diskless-sync-delay", "0"] + base) if kind == "redis" \
            else ([anykv, "server"] + base)
        prim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rd = tempfile.mkdtemp(prefix="anykv-fullsync-r-")
        repl = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                 "--dir", rd, "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for pt in (port, rport):
                wait_port(pt)
            pc = Conn("127.0.0.1", port, auth=False)
            pc.s.settimeout(300)
            pc.call("DEBUG", "POPULATE", str(keys), "key", "16")
            before = peak_rss(prim.pid)
            guard.wait([prim.pid, repl.pid])
            log(f"fullsync: {kind} primary with {keys:,} keys, replica attaching")
            writes = {"n": 0}
            stop = threading.Event()

            def writer():
                w = Conn("127.0.0.1", port, auth=False)
                batch = b"".join(enc("SET", f"w{i}", "x" * 16) for i in range(16))
                while not stop.is_set():
                    w.s.sendall(batch)
                    for _ in range(16):
                        w.reply()
                    writes["n"] += 16
                w.close()

            th = threading.Thread(target=writer)
            th.start()
            rc = Conn("127.0.0.1", rport, auth=False)
            t0 = time.monotonic()
            w0 = writes["n"]
            rc.call("REPLICAOF", "127.0.0.1", str(port))
            while rc.info("replication", "master_link_status") != "up":
                if time.monotonic() - t0 > 300:
                    raise SystemExit(f"{kind}: the replica did not sync within 300 s")
                time.sleep(0.005)
            took = time.monotonic() - t0
            during = (writes["n"] - w0) / took
            stop.set()
            th.join()
            after = peak_rss(prim.pid)
            out[kind] = {"secs": took, "rss_before": before, "rss_peak": after,
                         "writes_per_s": during, "disturbed": guard.disturbed()}
            log(f"  {took:.2f} s, peak RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MB, "
                f"{during:,.0f} writes/s during the sync")
        finally:
            for pr in (prim, repl):
                pr.kill()
                pr.wait()
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(rd, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anykv", default="target/release/anykv")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--keys", type=int, default=1000000)
    ap.add_argument("--wait-quiet", type=float, default=0)
    ap.add_argument("--only", default="lag,cost,fullsync")
    a = ap.parse_args()
    guard = QuietGuard(a.wait_quiet)
    only = set(a.only.split(","))
    print(f"Machine: {os.cpu_count()} CPUs; redis-server "
          f"{subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.split()[2]}\n")
    if "lag" in only:
        r = bench_lag(a.anykv, a.rate, a.seconds, guard)
        s = r["samples"]
        goal = r["one_way"] + 5
        print("### Replication lag, iad -> cdg (emulated, 97.7 ms RTT)\n")
        print("| writes/s (achieved) | samples | p50 ms | p99 ms | max ms | goal (one way + 5 ms) |")
        print("| --- | --- | --- | --- | --- | --- |")
        print(f"| {r['rate']:,.0f} | {len(s)} | {pct(s, 50)} | {pct(s, 99)} | {max(s) if s else 'n/a'} | "
              f"≤ {goal:.1f} ms{' (disturbed run)' if r['disturbed'] else ''} |\n")
    if "cost" in only:
        res = bench_cost(a.anykv, a.rounds, guard)
        print("### A primary's write throughput: alone, with its standby, with durability region\n")
        print("| setup | pipeline | rps (median) | p50 ms | p99 ms | ratio | per round | CPU µs/req (all its servers) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for pl in (1, 16):
            base = res[("alone", pl)]
            sb = res[("with standby", pl)]
            ralone = res[("redis alone", pl)]
            for name, ref in (("alone", None), ("with standby", base), ("durability region", sb),
                              ("redis alone", None), ("redis with replica", ralone)):
                rows = res[(name, pl)]
                med = statistics.median(x[0] for x in rows)
                p50 = statistics.median(x[1] for x in rows)
                p99 = statistics.median(x[2] for x in rows)
                cpu = statistics.median(x[3] for x in rows)
                if ref is None:
                    ratio, per = "1.00x", ""
                else:
                    rs = [x[0] / y[0] for x, y in zip(rows, ref)]
                    vs = {id(base): "alone", id(sb): "with standby", id(ralone): "redis alone"}[id(ref)]
                    ratio = f"{statistics.median(rs):.2f}x vs {vs}"
                    per = f"{min(rs):.2f}–{max(rs):.2f}"
                print(f"| {name} | {pl} | {med:,.0f} | {p50} | {p99} | {ratio} | {per} | {cpu:.1f} |")
        print()
    if "fullsync" in only:
        r = bench_fullsync(a.anykv, a.keys, guard)
        print(f"### Full sync of {a.keys:,} keys to a redis-server replica, writes going on\n")
        print("| primary | sync s | peak RSS before MB | peak RSS after MB | growth | writes/s during |")
        print("| --- | --- | --- | --- | --- | --- |")
        for kind in ("redis", "anykv"):
            x = r[kind]
            print(f"| {kind} | {x['secs']:.2f} | {x['rss_before'] / 2**20:.0f} | {x['rss_peak'] / 2**20:.0f} | "
                  f"{x['rss_peak'] / max(x['rss_before'], 1):.2f}x | {x['writes_per_s']:,.0f} |")
        print()
    guard.close()


if __name__ == "__main__":
    main()
