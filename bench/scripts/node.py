#!/usr/bin/env python3
"""`anykv node` serving a database it holds (in-process, after AUTH) vs
`anykv server` serving its default database, same binary, same machine,
in the same rounds (the order alternates every round).

Per round and setup: redis-benchmark -c 50 -t set,get at -P 1 (-n 200000)
and -P 16 (-n 2000000): requests/s, and the serving process's CPU µs per
request (utime+stime from /proc around the run). The node's clients log
in with the database's token (`--user shop -a TOKEN`): the login hands
the connection to the executor that owns the database; from then on it is
served as `anykv server` serves its own (docs/ROUTING.md).

The node is a one-node cluster (its own gossip, catalog and placement,
started as `anykv demo`'s nodes are), the database created through its
admin API (primary region iad, no read regions, durability async). Both
processes run with the same server flags (no persistence).

Reported: the median over the rounds of each figure and of the per-round
node/server ratio, with the min..max of those ratios. The goal (≥ 0.95x)
is met when every round's ratio meets it, not met when none does, and
"within noise" otherwise.

Usage:
    cargo build --release
    python3 bench/scripts/node.py --anykv target/release/anykv [--rounds 5] \\
        [--wait-quiet 10]

Progress goes to stderr as plain lines; the table (markdown) to stdout.
"""
import argparse, csv, io, json, os, shutil, statistics, subprocess, sys, tempfile, time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from compare import QuietGuard, cpu_stat, free_port, verdict, wait_ready  # noqa: E402

TOKEN = "node-bench-token-0123456789abcdef"
ADMIN = "node-bench-admin"
SERVER_FLAGS = ["--save", "", "--appendonly", "no"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def bench(port, auth, pipeline, n):
    """requests/s per test of one redis-benchmark run."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get",
           "-c", "50", "-P", str(pipeline), "-n", str(n), "--csv"]
    if auth:
        cmd += ["--user", "shop", "-a", TOKEN]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    rows = {r["test"]: float(r["rps"]) for r in csv.DictReader(io.StringIO(out))}
    if set(rows) != {"SET", "GET"}:
        raise SystemExit(f"redis-benchmark on {port} gave {out!r}")
    return rows


def start_node(anykv, tmp):
    """A one-node cluster with database `shop`; (process, RESP port)."""
    subprocess.run([anykv, "cluster", "keygen", "--dir", tmp], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(tmp, "gossip.key")) as f:
        key = f.read().strip()
    g = free_port()
    sync, lan, resp, http = free_port(), free_port(), free_port(), free_port()
    d = os.path.join(tmp, "n1")
    os.makedirs(d)
    argv = [anykv, "node", "--machine", "n1", "--region", "iad",
            "--gossip-addr", f"127.0.0.1:{g}", "--sync-port", str(sync),
            "--seeds", f"127.0.0.1:{g}", "--gossip-keys", key, "--gossip-profile", "test",
            "--cluster-size", "1", "--lan-port", str(lan), "--lan-profile", "test",
            "--cluster-ca", os.path.join(tmp, "cluster-ca.pem"),
            "--cluster-ca-key", os.path.join(tmp, "cluster-ca.key"),
            "--", "--bind", "127.0.0.1", "--port", str(resp), "--dir", d,
            "--metrics-addr", f"127.0.0.1:{http}", *SERVER_FLAGS]
    env = dict(os.environ, ANYKV_ADMIN_TOKEN=ADMIN)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(tmp, "n1.log"), "w"))
    import hashlib
    entry = {"id": 1, "name": "shop", "token_sha256": [hashlib.sha256(TOKEN.encode()).hexdigest()],
             "org": "bench", "primary_region": "iad", "read_regions": [], "maxmemory": 0,
             "maxmemory_policy": None, "maxclients": 0, "ops_per_sec": 0,
             "durability": "async", "consistency": "ryw", "version": 1}
    deadline = time.time() + 60
    while True:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{http}/admin/tenants/1", method="PUT",
                                         data=json.dumps(entry).encode(),
                                         headers={"Authorization": f"Bearer {ADMIN}",
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status in (200, 202):
                    break
        except Exception:
            pass
        if time.time() > deadline:
            raise SystemExit(f"the node's admin API never took the database (see {tmp}/n1.log)")
        time.sleep(0.2)
    while True:
        out = subprocess.run(["redis-cli", "-p", str(resp), "--user", "shop", "-a", TOKEN,
                              "--no-auth-warning", "SET", "ready", "1"],
                             capture_output=True, text=True).stdout
        if out.strip() == "OK":
            return proc, resp
        if time.time() > deadline:
            raise SystemExit(f"the node never took a write for the database: {out!r} (see {tmp}/n1.log)")
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anykv", default="target/release/anykv")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--wait-quiet", type=float, default=0)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="anykv-node-bench-")
    sport = free_port()
    procs = {"server": subprocess.Popen([a.anykv, "server", "--bind", "127.0.0.1", "--port", str(sport),
                                         "--dir", tmp, *SERVER_FLAGS],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}
    ports = {"server": sport}
    try:
        wait_ready(sport)
        procs["node"], ports["node"] = start_node(a.anykv, tmp)
        guard = QuietGuard(a.wait_quiet)
        tput, cpu = {}, {}
        setups = ["server", "node"]
        for r in range(a.rounds):
            order = setups if r % 2 == 0 else setups[::-1]
            for s in order:
                for pipeline, n in ((1, 200000), (16, 2000000)):
                    pid = procs[s].pid
                    while True:
                        guard.wait([p.pid for p in procs.values()])
                        c0 = cpu_stat(pid)
                        rows = bench(ports[s], s == "node", pipeline, n)
                        per = (cpu_stat(pid) - c0) * 1e6 / (2 * n)
                        if not guard.disturbed() or guard.give_up():
                            break
                        log("  disturbed; measuring again")
                    for t, v in rows.items():
                        tput.setdefault((s, pipeline, t), []).append(v)
                    cpu.setdefault((s, pipeline), []).append(per)
                    log(f"round {r + 1}/{a.rounds} {s:6} -P {pipeline:2}: "
                        + ", ".join(f"{t} {v:,.0f}/s" for t, v in rows.items())
                        + f"; {per:.2f} µs CPU/request")
        guard.close()
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=5)
            except Exception:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    print("| -P | test | server req/s | node req/s | node/server (median, min..max) | goal ≥ 0.95x | CPU µs/req server | node |")
    print("|---|---|---|---|---|---|---|---|")
    for pipeline in (1, 16):
        for t in ("SET", "GET"):
            sv, nd = tput[("server", pipeline, t)], tput[("node", pipeline, t)]
            ratios = [b / x for x, b in zip(sv, nd)]
            print(f"| {pipeline} | {t} | {med(sv):,.0f} | {med(nd):,.0f} | {med(ratios):.3f} "
                  f"({min(ratios):.3f}..{max(ratios):.3f}) | {verdict(ratios, 0.95)} | "
                  f"{med(cpu[('server', pipeline)]):.2f} | {med(cpu[('node', pipeline)]):.2f} |")


if __name__ == "__main__":
    main()
