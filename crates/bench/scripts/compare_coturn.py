#!/usr/bin/env python3
"""cloudproxy vs coturn 4.6.1 under `cloudproxy bench --rate max`, alternating servers over
rounds, a fresh server per run, recording other processes' CPU use (a run is "quiet" when they
used under 0.1 core). Prints each run, then medians and the ratio. See BENCHMARKS.md.

Usage: CLOUDPROXY=target/release/cloudproxy python3 compare_coturn.py ROUNDS ALLOCS[,ALLOCS...]
       [extra bench args...]   (raw reports are appended to $BENCH_RUNS, default bench-runs.jsonl)"""
import json, os, signal, socket, struct, subprocess, sys, time, statistics

BIN = os.environ.get("CLOUDPROXY", "target/release/cloudproxy")
RUNS = os.environ.get("BENCH_RUNS", "bench-runs.jsonl")
SECRET = "bench-secret"
rounds = int(sys.argv[1]); allocs = [int(a) for a in sys.argv[2].split(",")]
extra = sys.argv[3:]

def ours(port, lo, hi):
    return [BIN, "relay", "--udp", f"127.0.0.1:{port}", "--static-secret", SECRET, "--realm", "r",
            "--allow-peer", "127.0.0.1/32", "--no-metrics", "--relay-ports", f"{lo}-{hi}",
            "--shards", "2", "--log-level", "warn"]

def coturn(port, lo, hi):
    return ["turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
            f"--listening-port={port}", "--use-auth-secret", f"--static-auth-secret={SECRET}",
            "--realm=r", "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls",
            "--no-tcp-relay", f"--min-port={lo}", f"--max-port={hi}", "--relay-threads=2",
            "--no-software-attribute", "--log-file=/dev/null", "--no-stdout-log", "--simple-log"]

SERVERS = {"cloudproxy": (ours, 29478, 29500, 29999), "coturn": (coturn, 28478, 28500, 28999)}

def ready(port, deadline=20):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
    req = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, os.urandom(12))
    end = time.time() + deadline
    while time.time() < end:
        try:
            s.sendto(req, ("127.0.0.1", port)); s.recvfrom(2048); return True
        except OSError:
            time.sleep(0.1)
    return False

def cpu_by_pid():
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
                comm = open(f"/proc/{p}/comm").read().strip()
                out[int(p)] = (comm, int(f[11]) + int(f[12]))
            except OSError:
                pass
    return out

def run(server, n):
    mk, port, lo, hi = SERVERS[server]
    proc = subprocess.Popen(mk(port, lo, hi), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert ready(port), f"{server} did not answer"
        before = cpu_by_pid(); t0 = time.time()
        b = subprocess.run([BIN, "bench", "--server", f"127.0.0.1:{port}", "--secret", SECRET,
                            "--allocations", str(n), "--rate", "max", "--size", "200",
                            "--json", "--quiet", *extra], capture_output=True, text=True, timeout=600)
        wall = time.time() - t0; after = cpu_by_pid()
        srv = (after.get(proc.pid, ("", 0))[1] - before.get(proc.pid, ("", 0))[1]) / 100 / wall
        foreign = {}
        for pid, (comm, t) in after.items():
            if pid == proc.pid or comm in ("cloudproxy",):
                continue
            d = (t - before.get(pid, (comm, 0))[1]) / 100 / wall
            if d > 0.03:
                foreign[f"{comm}({pid})"] = round(d, 2)
        if b.returncode != 0:
            return {"error": b.stderr.strip()[-500:]}
        rep = json.loads(b.stdout)
        rep["_server_cpu"] = round(srv, 2); rep["_foreign"] = foreign
        return rep
    finally:
        proc.send_signal(signal.SIGINT if server == "cloudproxy" else signal.SIGTERM)
        try: proc.wait(5)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        time.sleep(1)

results = {(s, n): [] for s in SERVERS for n in allocs}
for r in range(rounds):
    order = ["cloudproxy", "coturn"] if r % 2 == 0 else ["coturn", "cloudproxy"]
    for n in allocs:
        for server in order:
            rep = run(server, n)
            if "error" in rep:
                print(f"round {r+1} {server} {n}: ERROR {rep['error']}", flush=True); continue
            res = rep["result"] or {}
            noisy = sum(rep["_foreign"].values()) > 0.1
            results[(server, n)].append((res.get("received_pps", 0), noisy))
            lat = res.get("latency") or {}
            print(f"round {r+1} {server:10} allocs {n:4}: {res.get('received_pps',0):9.0f} pps "
                  f"{res.get('received_mbps',0):7.1f} Mbps loss {res.get('loss_percent',0):.3f}% "
                  f"p50 {lat.get('p50_ms',0):.3f} p99 {lat.get('p99_ms',0):.3f} ms "
                  f"gen-cpu {res.get('generator_cpu',0):.2f} server-cpu {rep['_server_cpu']:.2f} "
                  f"steps {len(rep['steps'])} verdicts {''.join(s['verdict'][0] for s in rep['steps'])} "
                  f"foreign {rep['_foreign']}", flush=True)
            with open(RUNS, "a") as f:
                f.write(json.dumps({"round": r+1, "server": server, "allocations": n, "report": rep}) + "\n")
print()
for n in allocs:
  for label, keep in (("all runs", lambda x: True), ("quiet runs", lambda x: not x[1])):
    a = [x[0] for x in results[("cloudproxy", n)] if keep(x)]
    c = [x[0] for x in results[("coturn", n)] if keep(x)]
    print(label, end=": ")
    if a and c:
        ma, mc = statistics.median(a), statistics.median(c)
        print(f"allocs {n:4}: cloudproxy median {ma:9.0f} pps ({ma*200*8/1e6:.1f} Mbps) {sorted(round(x) for x in a)} | "
              f"coturn median {mc:9.0f} pps ({mc*200*8/1e6:.1f} Mbps) {sorted(round(x) for x in c)} | ratio {ma/mc:.2f}")
