#!/usr/bin/env python3
"""anykv server vs redis-server, side by side on this machine.

Runs redis-benchmark against both servers, interleaved (the order alternates
per round), N rounds, and prints Markdown tables of medians with
anykv/Redis ratios; then measures memory for the chosen datasets. Usage:

    cargo build --release
    python3 bench/scripts/compare.py [--rounds 5] [--anykv target/release/anykv] \
        [--tests set,get,incr,mset] [--memory strings,hashes,zsets]
"""
import argparse, csv, io, os, re, signal, socket, statistics, subprocess, sys, time

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
    if kind == "redis":
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--enable-debug-command", "yes", *extra]
    else:
        cmd = [anykv, "server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--enable-debug-command", "yes", *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port)
    return p

def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout

def bench(port, tests, clients, pipeline, n):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", tests, "-c", str(clients), "-P", str(pipeline),
                          "-n", str(n), "--csv"], capture_output=True, text=True).stdout
    rows = {}
    for r in csv.DictReader(io.StringIO(out)):
        rows[r["test"]] = (float(r["rps"]), float(r["p50_latency_ms"]), float(r["p99_latency_ms"]))
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
    elif ds == "zsets":
        for start_i in range(0, 100000, 2000):
            pipe(port, (["ZADD", f"z:{i}"] + [x for m in range(100) for x in (str(m * 7 + i % 13), f"m{m}")]
                        for i in range(start_i, start_i + 2000)))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--anykv", default="target/release/anykv")
    ap.add_argument("--tests", default="set,get,incr,mset")
    ap.add_argument("--populate", type=int, default=1000000)
    ap.add_argument("--memory", default="strings", help="comma list of strings,hashes,zsets (or none)")
    ap.add_argument("--latency", action="store_true", help="also run -c 1 -P 1 SET/GET")
    ap.add_argument("--lrange-n", type=int, default=200000, help="request count cap for lrange_* tests")
    a = ap.parse_args()
    rp, ap_ = free_port(), free_port()
    servers = {"redis": start("redis", a.anykv, rp), "anykv": start("anykv", a.anykv, ap_)}
    ports = {"redis": rp, "anykv": ap_}
    try:
        configs = [(50, 1, 200000), (50, 16, 2000000)]
        if a.latency:
            configs.append((1, 1, 50000))
        results = {}  # (cfg, kind, test) -> list of tuples
        for rnd in range(a.rounds):
            for cfg in configs:
                for kind in (("redis", "anykv") if rnd % 2 == 0 else ("anykv", "redis")):
                    tests = a.tests if cfg[0] > 1 else "set,get"
                    # LRANGE replies are 100-600 elements: cap their request
                    # count so a pipelined run takes seconds, not minutes.
                    fast = ",".join(t for t in tests.split(",") if not t.startswith("lrange"))
                    slow = ",".join(t for t in tests.split(",") if t.startswith("lrange"))
                    rows = bench(ports[kind], fast, *cfg) if fast else {}
                    if slow:
                        rows.update(bench(ports[kind], slow, cfg[0], cfg[1], min(cfg[2], a.lrange_n)))
                    for t, v in rows.items():
                        results.setdefault((cfg, kind, t), []).append(v)
            print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
        print("| test | clients | pipeline | redis rps | anykv rps | ratio | redis p50/p99 ms | anykv p50/p99 ms |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for cfg in configs:
            names = sorted({t for (c, k, t) in results if c == cfg}, key=lambda s: s.split()[0])
            for t in names:
                r = results[(cfg, "redis", t)]; k = results[(cfg, "anykv", t)]
                med = lambda xs, i: statistics.median(x[i] for x in xs)
                rr, kr = med(r, 0), med(k, 0)
                print(f"| {t} | {cfg[0]} | {cfg[1]} | {rr:,.0f} | {kr:,.0f} | {kr / rr:.2f}x | "
                      f"{med(r, 1):.3f} / {med(r, 2):.3f} | {med(k, 1):.3f} / {med(k, 2):.3f} |")
        print()
        print("| dataset | redis used_memory | anykv used_memory | ratio | redis peak RSS | anykv peak RSS | ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for ds in [d for d in a.memory.split(",") if d and d != "none"]:
            mem = {}
            for kind in ("redis", "anykv"):
                servers[kind].send_signal(signal.SIGTERM); servers[kind].wait()
                servers[kind] = start(kind, a.anykv, ports[kind])
                load(ds, ports[kind], a.populate)
                time.sleep(0.5)
                mem[kind] = (info_mem(ports[kind]), peak_rss(servers[kind].pid))
            (ru, rr), (ku, kr) = mem["redis"], mem["anykv"]
            print(f"| {DATASETS[ds]} | {ru / 1e6:.1f} MB | {ku / 1e6:.1f} MB | {ku / ru:.2f}x | "
                  f"{rr / 1e6:.1f} MB | {kr / 1e6:.1f} MB | {kr / rr:.2f}x |")
    finally:
        for p in servers.values():
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except Exception:
                p.kill()

if __name__ == "__main__":
    main()
