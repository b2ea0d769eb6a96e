#!/usr/bin/env python3
"""cloudproxy vs coturn 4.6.1 (and the raw batched forwarder, the ceiling) under the same
`cloudproxy bench` generator, alternating servers over rounds, a fresh server per run, recording
other processes' CPU use (a run is "quiet" when they used under 0.1 core). Prints each run, then
medians and ratios. See BENCHMARKS.md.

Usage: CLOUDPROXY=target/release/cloudproxy python3 compare_coturn.py ROUNDS CASE[,CASE...]
       [extra bench args...]
  CASE: udp:N | tcp:N | tls:N  (`--rate max`, N allocations, 200-byte payloads; a bare N is udp:N)
        setup:N                (`--setup-only`: allocations set up per second)
  env:  SERVERS=cloudproxy,coturn,forwarder   (the forwarder runs udp cases only)
        LATENCY=1   after the max-rate rounds of a data case, LAT_ROUNDS rounds (default ROUNDS)
                    of a 10 s fixed-rate run per server at 50% of the lower TURN server's median
                    max rate, for p50/p99 at equal load
        BENCH_RUNS  raw reports are appended here (default bench-runs.jsonl)
TLS needs a certificate; one is made with openssl in /tmp for both servers."""
import json, os, signal, socket, struct, subprocess, sys, time, statistics

BIN = os.environ.get("CLOUDPROXY", "target/release/cloudproxy")
RUNS = os.environ.get("BENCH_RUNS", "bench-runs.jsonl")
SECRET = "bench-secret"
CERT, KEY = "/tmp/cp-bench-cert.pem", "/tmp/cp-bench-key.pem"
PEER_PORT = 27999
rounds = int(sys.argv[1])
cases = []
for c in sys.argv[2].split(","):
    kind, _, n = c.rpartition(":")
    cases.append((kind or "udp", int(n)))
extra = sys.argv[3:]
servers = os.environ.get("SERVERS", "cloudproxy,coturn,forwarder").split(",")
latency = os.environ.get("LATENCY") == "1"
lat_rounds = int(os.environ.get("LAT_ROUNDS", rounds))

if not (os.path.exists(CERT) and os.path.exists(KEY)):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", KEY,
                    "-out", CERT, "-days", "30", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)

# Relay port ranges stay below the kernel's ephemeral range (32768-60999), which the
# generator's own sockets use: 10,000 allocations need 10,000 ports each.
def ours():
    return [BIN, "relay", "--udp", "127.0.0.1:29478", "--tcp", "127.0.0.1:29478",
            "--tls", "127.0.0.1:29479", "--cert", CERT, "--key", KEY,
            "--static-secret", SECRET, "--realm", "r",
            "--allow-peer", "127.0.0.1/32", "--no-metrics", "--relay-ports", "5000-15999",
            "--shards", "2", "--log-level", "warn"]

def coturn():
    return ["turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
            "--listening-port=28478", "--tls-listening-port=28479", f"--cert={CERT}",
            f"--pkey={KEY}", "--use-auth-secret", f"--static-auth-secret={SECRET}",
            "--realm=r", "--allow-loopback-peers", "--no-cli", "--no-dtls",
            "--no-tcp-relay", "--min-port=16000", "--max-port=26999", "--relay-threads=2",
            "--no-software-attribute", "--log-file=/dev/null", "--no-stdout-log", "--simple-log"]

def forwarder():
    return [BIN, "bench-forward", "--listen", "127.0.0.1:27478",
            "--peer", f"127.0.0.1:{PEER_PORT}", "--threads", "2"]

# name: (command, UDP/TCP port, TLS port, extra bench args)
SERVERS = {"cloudproxy": (ours, 29478, 29479, []), "coturn": (coturn, 28478, 28479, []),
           "forwarder": (forwarder, 27478, None, ["--raw", "--peer-port", str(PEER_PORT)])}

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

def run(server, kind, n, fixed=None):
    mk, port, tls_port, sargs = SERVERS[server]
    proc = subprocess.Popen(mk(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if server == "forwarder":
            time.sleep(0.5)
        else:
            assert ready(port), f"{server} did not answer"
        target = f"127.0.0.1:{tls_port if kind == 'tls' else port}"
        args = [BIN, "bench", "--server", target, "--secret", SECRET, "--allocations", str(n),
                "--json", "--quiet", *sargs]
        if kind == "setup":
            args += ["--setup-only", "--hold", "0"]
        else:
            args += ["--transport", kind, "--size", "200"]
            if fixed:
                args += ["--rate", str(fixed / n), "--duration", "10"]
            else:
                args += ["--rate", "max", "--start-rate", str(max(4000, 10 * n))]
        before = cpu_by_pid(); t0 = time.time()
        b = subprocess.run(args + extra, capture_output=True, text=True, timeout=900)
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
        proc.send_signal(signal.SIGTERM if server == "coturn" else signal.SIGINT)
        try: proc.wait(5)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        time.sleep(1)

def log(r, server, kind, n, rep, what):
    with open(RUNS, "a") as f:
        f.write(json.dumps({"round": r, "server": server, "case": f"{kind}:{n}", "what": what,
                            "report": rep}) + "\n")

def med(xs):
    return statistics.median(xs) if xs else 0.0

summary = []
for kind, n in cases:
    names = [s for s in servers if kind == "udp" or s != "forwarder"]
    res = {s: [] for s in names}   # (value, noisy, p50, p99)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for server in order:
            rep = run(server, kind, n)
            if "error" in rep:
                print(f"round {r+1} {server} {kind}:{n}: ERROR {rep['error']}", flush=True); continue
            log(r + 1, server, kind, n, rep, "setup" if kind == "setup" else "max")
            noisy = sum(rep["_foreign"].values()) > 0.1
            if kind == "setup":
                st = rep["setup"]
                res[server].append((st["rate_per_s"], noisy, 0, 0))
                print(f"round {r+1} {server:10} setup:{n}: {st['up']}/{st['requested']} up, "
                      f"{st['rate_per_s']:8.0f} allocations/s server-cpu {rep['_server_cpu']:.2f} "
                      f"foreign {rep['_foreign']}", flush=True)
                continue
            x = rep["result"] or {}
            lat = x.get("latency") or {}
            res[server].append((x.get("received_pps", 0), noisy, lat.get("p50_ms", 0), lat.get("p99_ms", 0)))
            print(f"round {r+1} {server:10} {kind}:{n:<5}: {x.get('received_pps',0):9.0f} pps "
                  f"{x.get('received_mbps',0):7.1f} Mbps loss {x.get('loss_percent',0):.3f}% "
                  f"p50 {lat.get('p50_ms',0):.3f} p99 {lat.get('p99_ms',0):.3f} ms "
                  f"gen-cpu {x.get('generator_cpu',0):.2f} server-cpu {rep['_server_cpu']:.2f} "
                  f"steps {len(rep['steps'])} verdicts {''.join(s['verdict'][0] for s in rep['steps'])} "
                  f"foreign {rep['_foreign']}", flush=True)
    meds = {s: med([v[0] for v in res[s]]) for s in names}
    line = f"{kind}:{n}: " + " | ".join(
        f"{s} median {meds[s]:.0f}" + (" alloc/s" if kind == "setup" else
                                       f" pps ({meds[s]*200*8/1e6:.1f} Mbps)")
        + f" {sorted(round(v[0]) for v in res[s])}" for s in names)
    if meds.get("coturn"):
        line += f" | ratio cloudproxy/coturn {meds.get('cloudproxy', 0)/meds['coturn']:.2f}"
    if meds.get("forwarder"):
        line += " | % of ceiling: " + ", ".join(
            f"{s} {100*meds[s]/meds['forwarder']:.0f}%" for s in names if s != "forwarder")
    summary.append(line); print(line, flush=True)
    if latency and kind != "setup":
        turn = [meds[s] for s in names if s != "forwarder" and meds[s] > 0]
        if not turn:
            continue
        rate = 0.5 * min(turn)
        lat = {s: [] for s in names}
        for r in range(lat_rounds):
            order = names if r % 2 == 0 else names[::-1]
            for server in order:
                rep = run(server, kind, n, fixed=rate)
                if "error" in rep:
                    print(f"latency round {r+1} {server}: ERROR {rep['error']}", flush=True); continue
                log(r + 1, server, kind, n, rep, f"fixed {rate:.0f}")
                x = rep["result"] or {}
                l = x.get("latency") or {}
                lat[server].append((l.get("p50_ms", 0), l.get("p99_ms", 0), x.get("loss_percent", 0)))
                print(f"latency round {r+1} {server:10} {kind}:{n} at {rate:.0f} pps: "
                      f"p50 {l.get('p50_ms',0):.3f} p99 {l.get('p99_ms',0):.3f} ms "
                      f"loss {x.get('loss_percent',0):.3f}% server-cpu {rep['_server_cpu']:.2f} "
                      f"foreign {rep['_foreign']}", flush=True)
        line = f"{kind}:{n} latency at {rate:.0f} pps (50% of the lower TURN max): " + " | ".join(
            f"{s} p50 {med([v[0] for v in lat[s]]):.3f} p99 {med([v[1] for v in lat[s]]):.3f} ms"
            f" loss {med([v[2] for v in lat[s]]):.3f}%" for s in names)
        summary.append(line); print(line, flush=True)
print()
print("\n".join(summary))
