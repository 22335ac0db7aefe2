#!/usr/bin/env python3
"""anykv server vs redis-server, side by side on this machine.

Runs redis-benchmark against both servers, interleaved (the order alternates
per round), N rounds, and prints Markdown tables of medians with
anykv/Redis ratios; then measures memory for the chosen datasets. Usage:

    cargo build --release
    python3 bench/scripts/compare.py [--rounds 5] [--anykv target/release/anykv] \
        [--tests set,get,incr,mset] [--memory strings,hashes,zsets] \
        [--anykv-arg=--executor-poll-us --anykv-arg=0] [--redis-arg=--io-threads --redis-arg=2] \
        [--variant LABEL=BINARY --variant-arg LABEL=ARG ...]

--wait-quiet SECS: on a machine shared with builds, wait before each
(round, configuration) until no compiler has run for SECS seconds and the
rest of the machine is nearly idle, and measure it again if a compiler ran
or other processes used more than 10% of a CPU meanwhile.

--anykv-arg / --redis-arg (repeatable) pass extra flags to the server (write
`--anykv-arg=--flag`, with `=`, when the value starts with a dash).

--variant LABEL=BINARY (repeatable) runs one more anykv server in the same
rounds (BINARY `-` means the --anykv binary), with its own flags from
--variant-arg LABEL=ARG (repeatable). The throughput table then gets, per
variant, its requests per second, its ratio to Redis and anykv's ratio to
it: an A/B of two builds or two configurations measured in one run (e.g.
busy polling off: `--variant nopoll=- --variant-arg nopoll=--executor-poll-us
--variant-arg nopoll=0`). Variants are left out of the memory table.

Beside each throughput figure: the server's CPU per request (utime+stime
from /proc/PID/stat, 10 ms ticks, read around each redis-benchmark run;
each test runs as its own redis-benchmark, and a test that prepares its
data, as LRANGE_* does with LPUSH, shares its CPU over both rows) and the
median of the rounds' anykv/Redis CPU-per-request ratios.

The memory table shows `used_memory` as each server reports it (Redis:
jemalloc's usable sizes; anykv: the bytes it asked its allocator for, see
server/src/alloc.rs) and the process's peak RSS (VmHWM), which is what the
memory goals compare.

Tests that are not redis-benchmark's own: `evalsha` (EVALSHA of SCRIPT_BODY
below, loaded first) and `fcall` (FCALL of the same code registered as a
function), both on `key:__rand_int__` with `-r 100000` (issue 16):
`--tests evalsha,fcall --memory none`; `setbit` (SETBIT of bit 1000 of
`bm:__rand_int__`) and `bitcount` (BITCOUNT of those 126-byte bitmaps)
(issue 17): `--tests setbit,bitcount --memory none`; `pfadd` (PFADD of a
random element to `hll:__rand_int__`) and `pfcount` (PFCOUNT of one of
those keys) (issue 17): `--tests pfadd,pfcount --memory none`; `geoadd`
(GEOADD of random points to one set) and `geosearch` (GEOSEARCH BYRADIUS 5
km ASC around random points) (issue 17): `--tests geoadd,geosearch
--memory none`; `xadd` (XADD of a two-field event to `xs:__rand_int__`)
and `xrange` (XRANGE ... COUNT 100 of a prepared 10,000-entry stream)
(issue 17): `--tests xadd,xrange --memory streams` (the `streams` dataset:
1M entries in 1000 streams); `xreadgroup` (XREADGROUP ... COUNT 1 ... >
by 100 consumers of one group, each read a new pending entry, from a
stream refilled before each run; its request count is capped as LRANGE's)
(issue 17): `--tests xreadgroup --memory none`. The `hlls` memory dataset
is 100k HyperLogLogs of 200 elements each, sparse as PFADD leaves them
(issue 17): `--tests get --memory hlls`.
"""
import argparse, csv, hashlib, io, os, re, signal, socket, statistics, subprocess, sys, threading, time

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_ready(port):
    for _ in range(200):
        try:
            out = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, timeout=2).stdout
            if "PONG" in out:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"server on {port} did not start")

def start(kind, anykv, port, extra=()):
    """Starts redis-server (kind "redis") or the anykv binary `anykv`."""
    if kind == "redis":
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--enable-debug-command", "yes", *extra]
    else:
        cmd = [anykv, "server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--enable-debug-command", "yes", *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port)
    return p

# Processes whose presence makes a measurement on a shared machine noisy.
COMPILERS = {"rustc", "cargo", "cc", "cc1", "cc1plus", "ld", "ld.bfd", "ld.gold", "ld.lld", "rust-lld", "collect2", "clippy-driver"}

def compilers_running():
    names = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    name = f.read().strip()
            except OSError:
                continue
            if name in COMPILERS:
                names.append(name)
    return names

TICK = os.sysconf("SC_CLK_TCK")

def machine_busy():
    """CPU seconds the whole machine has been busy (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user, nice, system, idle, iowait, irq, softirq, steal, ...
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / TICK

def own_cpu(pids):
    """CPU seconds of this script, the children it has waited for
    (redis-benchmark, redis-cli, stopped servers) and the running `pids`."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError, ValueError):
            pass
    return total

class QuietGuard:
    """--wait-quiet SECS, for a machine shared with builds and tests.

    wait(pids) starts a unit of measurement: it waits until no compiler
    (COMPILERS) has run for SECS seconds and the rest of the machine has
    used under FOREIGN_MAX of a CPU for a second. disturbed() then says
    whether, during the unit, a compiler ran or processes other than this
    script, its children and the servers `pids` used more than FOREIGN_MAX
    of a CPU on average (machine busy time from /proc/stat minus theirs),
    so the caller can measure the unit again."""

    FOREIGN_MAX = 0.10
    MAX_TRIES = 8

    def __init__(self, settle):
        self.settle = settle
        self.tries = 0
        self.seen = []
        self.pids = ()
        self.start = None
        self.stop = threading.Event()
        if settle:
            threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        while not self.stop.wait(0.5):
            names = compilers_running()
            if names:
                self.seen.extend(names)

    def _snapshot(self):
        return time.monotonic(), machine_busy(), own_cpu(self.pids)

    def _foreign(self, since):
        t0, b0, o0 = since
        t1, b1, o1 = self._snapshot()
        return max(0.0, (b1 - b0) - (o1 - o0)) / max(t1 - t0, 1e-3)

    def wait(self, pids=()):
        if not self.settle:
            return
        self.pids = tuple(pids)
        quiet_since = time.monotonic()
        told = False
        while True:
            probe = self._snapshot()
            time.sleep(1.0)
            busy = self._foreign(probe) > self.FOREIGN_MAX
            if compilers_running() or busy:
                quiet_since = time.monotonic()
                if not told:
                    print("waiting for compilers / other load to finish...", file=sys.stderr)
                    told = True
            elif time.monotonic() - quiet_since >= self.settle:
                break
        self.seen = []
        self.start = self._snapshot()

    def disturbed(self):
        if not self.settle:
            return False
        foreign = self._foreign(self.start)
        if foreign > self.FOREIGN_MAX:
            self.seen.append(f"other processes at {foreign * 100:.0f}% of a CPU")
        if not self.seen:
            self.tries = 0
        return bool(self.seen)

    def give_up(self):
        """After MAX_TRIES disturbed attempts at one unit, keep the last
        (and say so), rather than wait forever."""
        self.tries += 1
        if self.tries < self.MAX_TRIES:
            return False
        print(f"disturbed {self.tries} times in a row ({', '.join(sorted(set(self.seen)))}): "
              "keeping this measurement", file=sys.stderr)
        self.tries = 0
        return True

    def close(self):
        self.stop.set()

def stop_all(servers):
    for p in servers.values():
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except Exception:
            p.kill()

def verdict(ratios, goal):
    """A goal (a minimum ratio) against every round's ratio: met when all
    meet it, not met when none does, within noise otherwise."""
    if min(ratios) >= goal:
        return "met"
    if max(ratios) < goal:
        return "not met"
    return "within noise"

def cpu_stat(pid):
    """utime + stime of the whole process, in seconds (tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / TICK

def with_cpu(pids, run):
    """`run()`'s result and the CPU seconds all of `pids` spent meanwhile."""
    c0 = sum(cpu_stat(p) for p in pids)
    res = run()
    return res, sum(cpu_stat(p) for p in pids) - c0

def bench_cpu(port, pid, test, clients, pipeline, n):
    """One redis-benchmark run of `test`: its rows, each with the server's
    CPU µs per request over the run appended."""
    rows, spent = with_cpu([pid], lambda: bench(port, test, clients, pipeline, n))
    per = spent * 1e6 / max(1, n * len(rows))
    return {t: v + (per,) for t, v in rows.items()}

def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout

# A small read-modify-write script: what EVALSHA and FCALL run.
SCRIPT_BODY = ("local v = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1]) "
               "redis.call('SET', KEYS[1], v) return v")
LIBRARY = ("#!lua name=bench\n"
           f"redis.register_function('rmw', function(KEYS, ARGV) {SCRIPT_BODY} end)")
SCRIPTED = {
    "evalsha": ["EVALSHA", hashlib.sha1(SCRIPT_BODY.encode()).hexdigest(), "1", "key:__rand_int__", "1"],
    "fcall": ["FCALL", "rmw", "1", "key:__rand_int__", "1"],
    # Bitmaps (issue 17): bit 1000 set in random keys (126-byte bitmaps,
    # as a per-user bitmap), and BITCOUNT of those. (Not a random offset:
    # redis-benchmark writes __rand_int__ with leading zeros, which Redis
    # refuses as an integer.)
    "setbit": ["SETBIT", "bm:__rand_int__", "1000", "1"],
    "bitcount": ["BITCOUNT", "bm:__rand_int__"],
    # HyperLogLog (issue 17): random elements into 100k keys (sparse
    # values), and PFCOUNT of one key (its cached estimate, recomputed
    # after each change).
    "pfadd": ["PFADD", "hll:__rand_int__", "el:__rand_int__"],
    "pfcount": ["PFCOUNT", "hll:__rand_int__"],
    # Geo (issue 17): points anywhere in a 10 x 10 degree square (each
    # __rand_int__ is its own random number; "000000054321e-4" is 5.4321),
    # up to 100k members in one set, and searches of 5 km around random
    # points of it (a handful of members each), nearest first.
    "geoadd": ["GEOADD", "geo", "__rand_int__e-4", "__rand_int__e-4", "m:__rand_int__"],
    "geosearch": ["GEOSEARCH", "geo", "FROMLONLAT", "__rand_int__e-4", "__rand_int__e-4",
                  "BYRADIUS", "5", "km", "ASC"],
    # Streams (issue 17): events appended to 100k streams (generated ids,
    # two fields as a typical event), and XRANGE of 100 entries from a
    # prepared 10,000-entry stream (at a random point of it: ids are
    # 1-0 .. 10000-0).
    "xadd": ["XADD", "xs:__rand_int__", "*", "kind", "click", "user", "__rand_int__"],
    "xrange": ["XRANGE", "xr", "__rand_int__", "+", "COUNT", "100"],
    # A consumer group handing out new entries one at a time to 100
    # consumers (each read makes a pending entry: the path of a worker
    # queue), from a stream refilled before each run.
    "xreadgroup": ["XREADGROUP", "GROUP", "g", "c:__rand_int__", "COUNT", "1", "STREAMS", "xg", ">"],
}

# The stream XRANGE reads: ids 1-0 .. 10000-0, the XADD test's shape.
XRANGE_STREAM = [["XADD", "xr", f"{i}-0", "kind", "click", "user", str(i % 977)]
                 for i in range(1, 10001)]


def prepare_scripts(port):
    """Loads what the scripted tests call (once per server start)."""
    for args in (["SCRIPT", "LOAD", SCRIPT_BODY], ["FUNCTION", "LOAD", "REPLACE", LIBRARY]):
        out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout
        if "ERR" in out:
            sys.exit(f"preparing the scripted tests on port {port}: {out.strip()}")

def prepare_streams(port):
    """The stream the xrange test reads (once per server start)."""
    pipe(port, XRANGE_STREAM)

def prepare_group(port, n):
    """The xreadgroup test's stream, made again before each run: n + 1000
    entries (every read delivers one) and its group at the start."""
    cli(port, "del", "xg")
    for start_i in range(1, n + 1001, 100000):
        pipe(port, (["XADD", "xg", f"{i}-0", "kind", "click", "user", str(i % 977)]
                    for i in range(start_i, min(start_i + 100000, n + 1001))))
    cli(port, "xgroup", "create", "xg", "g", "0")

def bench(port, tests, clients, pipeline, n):
    # (xrange: start ids up to 9901, so each reply is 100 entries;
    # xreadgroup: 100 consumers.)
    rand = {"xrange": "9900", "xreadgroup": "100"}.get(tests, "100000")
    what = ["-r", rand, *SCRIPTED[tests]] if tests in SCRIPTED else ["-t", tests]
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-c", str(clients), "-P", str(pipeline),
                          "-n", str(n), "--csv", *what], capture_output=True, text=True).stdout
    rows = {}
    for r in csv.DictReader(io.StringIO(out)):
        name = tests if tests in SCRIPTED else r["test"]
        rows[name] = (float(r["rps"]), float(r["p50_latency_ms"]), float(r["p99_latency_ms"]))
    return rows

def info_mem(port):
    txt = cli(port, "info", "memory")
    used = int(re.search(r"used_memory:(\d+)", txt).group(1))
    return used

def peak_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0

DATASETS = {
    "strings": "DEBUG POPULATE 1000000 key 16",
    "hashes": "100k hashes x 10 fields (f0..f9 = 8-byte values)",
    "zsets": "100k zsets x 100 members (m0..m99, integer scores)",
    "streams": "1M stream entries: 1000 streams x 1000 entries (two fields, generated ids)",
    "hlls": "100k HyperLogLogs x 200 elements each (sparse, as PFADD leaves them)",
}

def pipe(port, lines):
    """Feeds RESP commands through redis-cli --pipe."""
    def enc(args):
        out = [b"*%d\r\n" % len(args)]
        for x in args:
            x = x if isinstance(x, bytes) else str(x).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(x), x))
        return b"".join(out)
    data = b"".join(enc(l) for l in lines)
    subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=data, capture_output=True, check=True)

def load(ds, port, populate):
    if ds == "strings":
        cli(port, "debug", "populate", str(populate), "key", "16")
    elif ds == "hashes":
        for start_i in range(0, 100000, 10000):
            pipe(port, (["HSET", f"h:{i}"] + [x for f in range(10) for x in (f"f{f}", f"v{i % 1000:07d}")]
                        for i in range(start_i, start_i + 10000)))
    elif ds == "streams":
        for start_i in range(0, 1000, 50):
            pipe(port, (["XADD", f"x:{k}", "*", "kind", "click", "user", str((k * 1000 + e) % 977)]
                        for k in range(start_i, start_i + 50) for e in range(1000)))
    elif ds == "hlls":
        for start_i in range(0, 100000, 5000):
            pipe(port, (["PFADD", f"hll:{i}"] + [f"el:{(i * 7919 + e * 104729) % 1000003}" for e in range(200)]
                        for i in range(start_i, start_i + 5000)))
    elif ds == "zsets":
        for start_i in range(0, 100000, 2000):
            pipe(port, (["ZADD", f"z:{i}"] + [x for m in range(100) for x in (str(m * 7 + i % 13), f"m{m}")]
                        for i in range(start_i, start_i + 2000)))

def parse_variants(a):
    """{label: (binary, [args])} from --variant / --variant-arg."""
    variants = {}
    for v in a.variant:
        label, _, binary = v.partition("=")
        if not label or not binary or label in ("redis", "anykv") or label in variants:
            raise SystemExit(f"--variant {v!r}: want a new LABEL=BINARY")
        variants[label] = (a.anykv if binary == "-" else binary, [])
    for v in a.variant_arg:
        label, _, arg = v.partition("=")
        if label not in variants:
            raise SystemExit(f"--variant-arg {v!r}: no --variant {label}")
        variants[label][1].append(arg)
    return variants

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--anykv", default="target/release/anykv")
    ap.add_argument("--anykv-arg", action="append", default=[], help="extra anykv server flag (repeat)")
    ap.add_argument("--redis-arg", action="append", default=[], help="extra redis-server flag (repeat)")
    ap.add_argument("--variant", action="append", default=[], help="LABEL=BINARY: another anykv server (repeat)")
    ap.add_argument("--variant-arg", action="append", default=[], help="LABEL=ARG: a flag for that variant (repeat)")
    ap.add_argument("--tests", default="set,get,incr,mset")
    ap.add_argument("--populate", type=int, default=1000000)
    ap.add_argument("--memory", default="strings", help="comma list of strings,hashes,zsets,streams,hlls (or none)")
    ap.add_argument("--latency", action="store_true", help="also run -c 1 -P 1 SET/GET")
    ap.add_argument("--no-pipelined", action="store_true", help="skip the -P 16 runs")
    ap.add_argument("--lrange-n", type=int, default=200000,
                    help="request count cap for lrange_* and xreadgroup tests")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECS",
                    help="before each (round, configuration), wait until no compiler (rustc, cargo, cc, ld) has "
                         "run for SECS seconds and other processes are idle; measure it again if a compiler ran "
                         "or other processes used over 10%% of a CPU meanwhile")
    a = ap.parse_args()
    variants = parse_variants(a)
    # name -> (kind for start(), binary, flags)
    specs = {"redis": ("redis", None, a.redis_arg), "anykv": ("anykv", a.anykv, a.anykv_arg)}
    for label, (binary, args) in variants.items():
        specs[label] = ("anykv", binary, args)
    ports = {name: free_port() for name in specs}
    servers = {}
    guard = QuietGuard(a.wait_quiet)
    try:
        for name, (kind, binary, extra) in specs.items():
            servers[name] = start(kind, binary, ports[name], extra)
            if any(t in ("evalsha", "fcall") for t in a.tests.split(",")):
                prepare_scripts(ports[name])
            if "xrange" in a.tests.split(","):
                prepare_streams(ports[name])
        configs = [(50, 1, 200000)] + ([] if a.no_pipelined else [(50, 16, 2000000)])
        if a.latency:
            configs.append((1, 1, 50000))
        results = {}  # (cfg, name, test) -> list of tuples
        names = list(specs)
        for rnd in range(a.rounds):
            # Rotate the order every round (plain alternation for two servers).
            k = rnd % len(names)
            order = names[k:] + names[:k]
            for cfg in configs:
                while True:
                    guard.wait(p.pid for p in servers.values())
                    unit = {}
                    for name in order:
                        tests = a.tests if cfg[0] > 1 else "set,get"
                        # LRANGE replies are 100-600 elements: cap their request
                        # count so a pipelined run takes seconds, not minutes.
                        pid = servers[name].pid
                        rows = {}
                        for t in tests.split(","):
                            n = min(cfg[2], a.lrange_n) if t.startswith("lrange") else cfg[2]
                            if t == "xreadgroup":
                                n = min(n, a.lrange_n)
                                prepare_group(ports[name], n)
                            rows.update(bench_cpu(ports[name], pid, t, cfg[0], cfg[1], n))
                        for t, v in rows.items():
                            unit[(cfg, name, t)] = v
                    if not guard.disturbed() or guard.give_up():
                        break
                    print(f"round {rnd + 1}, -c {cfg[0]} -P {cfg[1]}: disturbed ({', '.join(sorted(set(guard.seen)))}),"
                          " measuring again", file=sys.stderr)
                for key, v in unit.items():
                    results.setdefault(key, []).append(v)
            print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
        med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
        # "ratio" compares the two medians; "per round" is the median of the
        # rounds' own ratios (each round measures both back to back), with
        # their range: how far one round's ratio can be from another's.
        head = ("| test | clients | pipeline | redis rps | anykv rps | ratio | per round (min–max) | "
                "redis p50/p99 ms | anykv p50/p99 ms | CPU µs/req redis / anykv | CPU/req ratio (per round) |")
        sep = "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        for label in variants:
            head += f" {label} rps | {label} ratio | {label} p50/p99 ms | anykv / {label} |"
            sep += " --- | --- | --- | --- |"
        print(head)
        print(sep)
        for cfg in configs:
            tests = sorted({t for (c, n, t) in results if c == cfg}, key=lambda s: s.split()[0])
            for t in tests:
                r = results[(cfg, "redis", t)]; k = results[(cfg, "anykv", t)]
                rr, kr = med(r, 0), med(k, 0)
                per = [x[0] / y[0] for x, y in zip(k, r)]
                cpu = [x[3] / y[3] for x, y in zip(k, r) if y[3] > 0]
                cpu_ratio = f"{statistics.median(cpu):.2f}x ({min(cpu):.2f}–{max(cpu):.2f})" if cpu else "–"
                line = (f"| {t} | {cfg[0]} | {cfg[1]} | {rr:,.0f} | {kr:,.0f} | {kr / rr:.2f}x | "
                        f"{statistics.median(per):.2f}x ({min(per):.2f}–{max(per):.2f}) | "
                        f"{med(r, 1):.3f} / {med(r, 2):.3f} | {med(k, 1):.3f} / {med(k, 2):.3f} | "
                        f"{med(r, 3):.1f} / {med(k, 3):.1f} | {cpu_ratio} |")
                for label in variants:
                    v = results[(cfg, label, t)]
                    vr = med(v, 0)
                    line += f" {vr:,.0f} | {vr / rr:.2f}x | {med(v, 1):.3f} / {med(v, 2):.3f} | {kr / vr:.2f}x |"
                print(line)
        print()
        datasets = [d for d in a.memory.split(",") if d and d != "none"]
        if datasets:
            print("| dataset | redis used_memory | anykv used_memory | ratio | redis peak RSS | anykv peak RSS | "
                  "ratio (goal metric) |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
        for ds in datasets:
            mem = {}
            for name in ("redis", "anykv"):
                kind, binary, extra = specs[name]
                servers[name].send_signal(signal.SIGTERM); servers[name].wait()
                servers[name] = start(kind, binary, ports[name], extra)
                load(ds, ports[name], a.populate)
                time.sleep(0.5)
                mem[name] = (info_mem(ports[name]), peak_rss(servers[name].pid))
                # (Memory figures do not depend on other processes' load.)
            (ru, rr), (ku, kr) = mem["redis"], mem["anykv"]
            print(f"| {DATASETS[ds]} | {ru / 1e6:.1f} MB | {ku / 1e6:.1f} MB | {ku / ru:.2f}x | "
                  f"{rr / 1e6:.1f} MB | {kr / 1e6:.1f} MB | {kr / rr:.2f}x |")
    finally:
        guard.close()
        stop_all(servers)

if __name__ == "__main__":
    main()
