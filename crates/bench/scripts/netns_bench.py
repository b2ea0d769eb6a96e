#!/usr/bin/env python3
"""The relay benchmark in network namespaces: coturn 4.6.1, cloudproxy's socket path, cloudproxy's
XDP fast path (native mode) and the no-TURN batched forwarder, side by side, with the generator
sending straight to the echo peer (no relay at all) as the baseline. See BENCHMARKS.md.

Topology (made here, removed at exit):

    cpb-client 10.71.1.2 ─┐                ┌─ 10.71.3.2 cpb-relay (the server under test, alone)
      (generator)         ├─ cpb-router ───┤
    cpb-media  10.71.2.2 ─┘  (forwards)    └─ (to-relay carries a pass-through XDP program, so
      (echo peer)                             the relay's native XDP_TX frames are received)

The client and media ends compute UDP checksums themselves (`ethtool -K eth0 tx off`), as a host
behind a real NIC delivers them; the relay's end keeps its offloads.

Per server and round it runs:
  1. a fixed load (ALLOCATIONS x RATE pps, SIZE-byte payloads, SECS s): whole-system CPU from
     /proc/stat (elapsed time minus idle, iowait and steal; user, system, irq and softirq alike)
     over the generator's lifetime, minus the CPU of user-space processes that are not part of
     the benchmark, divided by the round trips received; also the p50/p99 round-trip time;
  2. `--rate max`: the highest total rate delivered with loss under 0.1%.
The relay's CPU per round trip is a server's figure minus the baseline's (the generator and the
echo peer doing the same work with no relay between them): on a 2-core machine where the
generator costs most of the CPU, this is the figure that survives. Servers alternate order every
round; the summary takes medians.

Usage (as root, after `cargo build --release -p cloudproxy`):
  CLOUDPROXY=target/release/cloudproxy python3 crates/bench/scripts/netns_bench.py [ROUNDS]
  env: SERVERS=baseline,coturn,socket,xdp,forwarder  ALLOCATIONS=100  RATE=200  SIZE=200
       SECS=10  MAX=1 (0: skip the max-rate search)  BENCH_RUNS=netns-runs.jsonl (raw reports)
       XDP_MODE=native|generic
       PIN_CPU=N   run everything of the benchmark on CPU N and move every other user-space
                   process to the other CPUs for the duration (restored at exit): on a machine
                   that other work keeps busy, the measured CPU is then that core's alone
"""
import json, os, signal, statistics, subprocess, sys, tempfile, time

BIN = os.path.abspath(os.environ.get("CLOUDPROXY", "target/release/cloudproxy"))
RUNS = os.environ.get("BENCH_RUNS", "netns-runs.jsonl")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
SERVERS = os.environ.get("SERVERS", "baseline,coturn,socket,xdp,forwarder").split(",")
ALLOCATIONS = int(os.environ.get("ALLOCATIONS", "100"))
RATE = float(os.environ.get("RATE", "200"))
SIZE = int(os.environ.get("SIZE", "200"))
SECS = int(os.environ.get("SECS", "10"))
MAX = os.environ.get("MAX", "1") == "1"
XDP_MODE = os.environ.get("XDP_MODE", "native")
SECRET = "bench-secret"
NS = {r: f"cpb-{r}" for r in ("client", "media", "relay", "router")}
NET = {"client": 1, "media": 2, "relay": 3}
RELAY, PEER = "10.71.3.2", "10.71.2.2:27999"
TURN = f"{RELAY}:3478"
HZ = os.sysconf("SC_CLK_TCK")
PIN = int(os.environ["PIN_CPU"]) if os.environ.get("PIN_CPU") else None
ALL_CPUS = os.sched_getaffinity(0)
MOVED = {}   # pid -> its affinity before the run


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def in_ns(role, *args):
    return ["ip", "netns", "exec", NS[role], *args]


def topology_up():
    topology_down()
    for ns in NS.values():
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    for role, n in NET.items():
        sh("ip", "link", "add", "eth0", "netns", NS[role], "type", "veth",
           "peer", "name", f"to-{role}", "netns", NS["router"])
        sh("ip", "-n", NS[role], "addr", "add", f"10.71.{n}.2/24", "dev", "eth0")
        sh("ip", "-n", NS[role], "link", "set", "eth0", "up")
        sh("ip", "-n", NS[role], "route", "add", "default", "via", f"10.71.{n}.1")
        sh("ip", "-n", NS["router"], "addr", "add", f"10.71.{n}.1/24", "dev", f"to-{role}")
        sh("ip", "-n", NS["router"], "link", "set", f"to-{role}", "up")
    sh(*in_ns("router", "sysctl", "-qw", "net.ipv4.ip_forward=1"))
    for role in ("client", "media"):
        sh(*in_ns(role, "ethtool", "-K", "eth0", "tx", "off"))
    # Native XDP_TX on a veth needs a program on the receiving end too; every server runs with
    # it, so the comparison stays fair.
    d = tempfile.mkdtemp(prefix="cpb-xdp-")
    src, obj = os.path.join(d, "pass.c"), os.path.join(d, "pass.o")
    with open(src, "w") as f:
        f.write('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                'SEC("xdp") int pass(struct xdp_md *ctx) { return XDP_PASS; }\n'
                'char LICENSE[] SEC("license") = "GPL";\n')
    sh("clang", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", src, "-o", obj)
    sh("ip", "-n", NS["router"], "link", "set", "dev", "to-relay", "xdpdrv", "obj", obj,
       "sec", "xdp")


def topology_down():
    for ns in NS.values():
        sh("ip", "netns", "del", ns, check=False)


def server_cmd(name):
    relay = [BIN, "relay", "--udp", TURN, "--tcp", TURN, "--tls", f"{RELAY}:443",
             "--static-secret", SECRET, "--realm", "r", "--relay-ip", RELAY,
             "--allow-peer", "10.71.2.0/24", "--metrics", f"{RELAY}:9100",
             "--relay-ports", "16000-26999", "--shards", "2", "--log-level", "info"]
    return {
        "baseline": None,
        "coturn": ["turnserver", "-n", f"--listening-ip={RELAY}", f"--relay-ip={RELAY}",
                   "--listening-port=3478", "--use-auth-secret",
                   f"--static-auth-secret={SECRET}", "--realm=r", "--no-cli", "--no-dtls",
                   "--no-tls", "--no-tcp-relay", "--min-port=16000", "--max-port=26999",
                   "--relay-threads=2", "--no-software-attribute", "--log-file=/dev/null",
                   "--no-stdout-log", "--simple-log"],
        "socket": relay,
        "xdp": relay + ["--fast-path", "xdp", "--xdp-interface", "eth0",
                        "--xdp-mode", XDP_MODE],
        "forwarder": [BIN, "bench-forward", "--listen", TURN, "--peer", PEER, "--threads", "2"],
    }[name]


def generator_args(name):
    common = ["--secret", SECRET, "--remote-peer", PEER]
    if name == "baseline":
        return ["--server", PEER, "--raw", *common]
    if name == "forwarder":
        return ["--server", TURN, "--raw", *common]
    return ["--server", TURN, *common]


def not_busy():
    """Idle + iowait + steal jiffies of the whole system, or of the pinned CPU, and the time.

    Busy time is taken as elapsed time minus these, not as the sum of the user/system/softirq
    columns: those are sampled at the timer tick, and a generator paced by timers wakes in step
    with it (a 10 k pps run was counted at 16 jiffies where its own getrusage said 150). Idle
    time is measured at each idle entry and exit on a tickless kernel, so it is exact.
    """
    want = "cpu" if PIN is None else f"cpu{PIN}"
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] == want:
            idle, iowait, steal = int(f[4]), int(f[5]), int(f[8])
            return idle + iowait + steal, time.monotonic()
    sys.exit(f"no {want} in /proc/stat")


def busy_since(start):
    """Busy jiffies since `start` (a `not_busy()` reading)."""
    cpus = len(ALL_CPUS) if PIN is None else 1
    idle, t = not_busy()
    return (t - start[1]) * HZ * cpus - (idle - start[0])


def user_pids():
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/cmdline", "rb").read():
                    yield int(p)
            except OSError:
                pass


def threads_of(pid):
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def pin_start():
    """This process (and so every child) on PIN; every other user-space thread elsewhere."""
    me = os.getpid()
    others = ALL_CPUS - {PIN}
    for pid in user_pids():
        if pid == me:
            continue
        for tid in threads_of(pid):
            try:
                before = os.sched_getaffinity(tid)
                if PIN in before and before - {PIN}:
                    os.sched_setaffinity(tid, before & others)
                    MOVED[tid] = before
            except OSError:
                pass
    os.sched_setaffinity(0, {PIN})


def pin_end():
    """Gives back what was taken, to the moved threads and to any child they made meanwhile."""
    others = ALL_CPUS - {PIN}
    for pid in user_pids():
        for tid in threads_of(pid):
            try:
                now = os.sched_getaffinity(tid)
                if tid in MOVED:
                    os.sched_setaffinity(tid, MOVED[tid])
                elif now == others:
                    os.sched_setaffinity(tid, ALL_CPUS)
            except OSError:
                pass
    os.sched_setaffinity(0, ALL_CPUS)


def jiffies(pid):
    """utime + stime of `pid` in jiffies, or None once it is gone."""
    try:
        # The fields after the parenthesised command name, which may hold spaces.
        st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(st[11]) + int(st[12])
    except OSError:
        return None


def user_cpu():
    """utime + stime of every user-space process (kernel threads have no cmdline)."""
    out = {}
    for pid in user_pids():
        t = jiffies(pid)
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
        except OSError:
            continue
        if t is not None:
            out[pid] = (comm, t)
    return out


OURS = {"cloudproxy", "turnserver", "ip", "python3"}


def foreign_jiffies(before, after):
    if PIN is not None:
        return 0, {}   # everything else runs on the other CPUs
    total, who = 0, {}
    for pid, (comm, t) in after.items():
        if comm in OURS or comm.startswith("bench-") or comm.startswith("cloudproxy"):
            continue
        d = t - before.get(pid, (comm, 0))[1]
        if d > 0:
            total += d
            if d >= 5:
                who[f"{comm}({pid})"] = round(d / HZ, 2)
    return total, who


def metrics_of_relay():
    r = subprocess.run(in_ns("relay", "curl", "-s", f"http://{RELAY}:9100/metrics"),
                       capture_output=True, text=True)
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("cloudproxy_fastpath_packets_total") or \
                line.startswith("cloudproxy_packets_total{direction=\"client_to_peer\",transport=\"udp\"}"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def program_stats():
    """(run count, run time ns) of the relay's XDP program (kernel.bpf_stats_enabled is on)."""
    r = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    try:
        progs = [p for p in json.loads(r.stdout) if p.get("name") == "relay_fast_path"]
    except ValueError:
        return None
    if not progs:
        return None
    newest = max(progs, key=lambda p: p["id"])
    return newest.get("run_cnt", 0), newest.get("run_time_ns", 0)


def start_server(name):
    cmd = server_cmd(name)
    if cmd is None:
        return None, None
    log = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen(in_ns("relay", *cmd), stdout=log, stderr=subprocess.STDOUT)
    time.sleep(1.5 if name != "forwarder" else 0.5)
    if name == "xdp":
        log.seek(0)
        text = log.read()
        if "XDP fast path on" not in text:
            stop_server(p)
            sys.exit(f"the XDP fast path did not load:\n{text}")
    return p, log


def stop_server(p):
    if p is None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    time.sleep(0.5)


def server_pid_cpu(p):
    """CPU jiffies of the server process (the child of `ip netns exec`, which execs it)."""
    if p is None:
        return 0
    return jiffies(p.pid) or 0


def run(name, fixed):
    p, _log = start_server(name)
    try:
        args = in_ns("client", BIN, "bench", *generator_args(name),
                     "--allocations", str(ALLOCATIONS), "--transport", "udp",
                     "--size", str(SIZE), "--json", "--quiet")
        if fixed:
            args += ["--rate", str(RATE), "--duration", str(SECS)]
        else:
            args += ["--rate", "max", "--start-rate", str(max(4000, 10 * ALLOCATIONS))]
        prog_before = program_stats() if name == "xdp" else None
        before_busy, before_users, before_srv = not_busy(), user_cpu(), server_pid_cpu(p)
        t0 = time.time()
        b = subprocess.run(args, capture_output=True, text=True, timeout=900)
        wall = time.time() - t0
        busy = busy_since(before_busy)
        foreign, who = foreign_jiffies(before_users, user_cpu())
        srv = server_pid_cpu(p) - before_srv
        if b.returncode != 0:
            return {"error": b.stderr.strip()[-800:]}
        rep = json.loads(b.stdout)
        rep["_busy_jiffies"], rep["_foreign_jiffies"], rep["_foreign"] = busy, foreign, who
        rep["_server_jiffies"], rep["_wall"] = srv, wall
        if name in ("socket", "xdp"):
            rep["_relay_metrics"] = metrics_of_relay()
        prog_after = program_stats() if name == "xdp" else None
        if prog_before and prog_after and prog_after[0] > prog_before[0]:
            runs = prog_after[0] - prog_before[0]
            rep["_xdp_runs"] = runs
            rep["_xdp_ns_per_run"] = (prog_after[1] - prog_before[1]) / runs
        return rep
    finally:
        stop_server(p)


def run_logged(r, name, what):
    """`run` for round `r` (`what`: "fixed" or "max"), its report appended to RUNS; None
    (and the error printed) when it failed."""
    rep = run(name, fixed=what == "fixed")
    with open(RUNS, "a") as f:
        f.write(json.dumps({"round": r + 1, "server": name, "what": what,
                            "report": rep}) + "\n")
    if "error" in rep:
        print(f"round {r+1} {name:9} {what}: ERROR {rep['error']}", flush=True)
        return None
    return rep


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, XDP)")
    if PIN is not None:
        pin_start()
    try:
        measure()
    finally:
        if PIN is not None:
            pin_end()


def measure():
    topology_up()
    # The kernel times each XDP program run only while this is on (a few ns per run).
    stats = sh("sysctl", "-n", "kernel.bpf_stats_enabled").stdout.strip()
    sh("sysctl", "-qw", "kernel.bpf_stats_enabled=1")
    echo = subprocess.Popen(in_ns("media", BIN, "bench-echo", "--listen", PEER),
                            stdout=subprocess.PIPE, text=True)
    echo.stdout.readline()
    fixed = {s: [] for s in SERVERS}    # (µs per round trip corrected, raw, p50, p99, srv µs)
    maxed = {s: [] for s in SERVERS}
    try:
        for r in range(ROUNDS):
            order = SERVERS if r % 2 == 0 else SERVERS[::-1]
            for name in order:
                rep = run_logged(r, name, "fixed")
                if rep is None:
                    continue
                x = rep["result"]
                rt = max(x["received"], 1)
                us = lambda j: j / HZ * 1e6 / rt
                corrected = us(rep["_busy_jiffies"] - rep["_foreign_jiffies"])
                lat = x.get("latency") or {}
                fixed[name].append((corrected, us(rep["_busy_jiffies"]), lat.get("p50_ms", 0),
                                    lat.get("p99_ms", 0), us(rep["_server_jiffies"])))
                print(f"round {r+1} {name:9} fixed {x['sent_pps']:8.0f} pps: received "
                      f"{x['received']} loss {x['loss_percent']:.3f}% system {corrected:6.2f} "
                      f"µs/rt (raw {us(rep['_busy_jiffies']):6.2f}, foreign "
                      f"{rep['_foreign_jiffies'] / HZ:.2f} s {rep['_foreign']}) server process "
                      f"{us(rep['_server_jiffies']):5.2f} µs/rt p50 {lat.get('p50_ms', 0):.3f} "
                      f"p99 {lat.get('p99_ms', 0):.3f} ms {rep.get('_relay_metrics', '')}"
                      + (f" XDP program {rep['_xdp_runs']} runs, {rep['_xdp_ns_per_run']:.0f} ns "
                         f"each" if "_xdp_runs" in rep else ""),
                      flush=True)
                if not MAX:
                    continue
                rep = run_logged(r, name, "max")
                if rep is None:
                    continue
                x = rep["result"] or {}
                maxed[name].append(x.get("received_pps", 0))
                print(f"round {r+1} {name:9} max   {x.get('received_pps', 0):8.0f} pps loss "
                      f"{x.get('loss_percent', 0):.3f}% gen-cpu {x.get('generator_cpu', 0):.2f} "
                      f"foreign {rep['_foreign_jiffies'] / HZ:.2f} s", flush=True)
    finally:
        echo.send_signal(signal.SIGTERM)
        echo.wait(10)
        sh("sysctl", "-qw", f"kernel.bpf_stats_enabled={stats}")
        topology_down()

    base = med([v[0] for v in fixed.get("baseline", [])]) if "baseline" in fixed else 0.0
    base_p50 = med([v[2] for v in fixed.get("baseline", [])]) if "baseline" in fixed else 0.0
    print()
    print(f"{ALLOCATIONS} allocations x {RATE:g} pps x {SIZE} B, {SECS} s fixed runs, "
          f"{ROUNDS} rounds, medians; baseline = generator straight to the echo peer; "
          + ("whole system" if PIN is None else f"everything on CPU {PIN}, its CPU measured"))
    print("| server | system µs per round trip | relay µs per round trip (minus baseline) | "
          "relay process µs per rt | p50 / p99 ms | added p50 ms | max pps (<0.1% loss) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for s in SERVERS:
        v = fixed[s]
        sys_us, p50, p99 = med([x[0] for x in v]), med([x[2] for x in v]), med([x[3] for x in v])
        relay_us = sys_us - base if s != "baseline" else 0.0
        rows[s] = (relay_us, med(maxed[s]))
        print(f"| {s} | {sys_us:.2f} | {relay_us:.2f} | {med([x[4] for x in v]):.2f} | "
              f"{p50:.3f} / {p99:.3f} | {p50 - base_p50:+.3f} | {med(maxed[s]):.0f} |")
    if "coturn" in rows:
        c_us, c_pps = rows["coturn"]
        for s in ("socket", "xdp", "forwarder"):
            if s in rows:
                us, pps = rows[s]
                print(f"{s}/coturn: relay CPU per round trip {us / c_us:.2f}x "
                      f"({c_us / us if us > 0 else float('inf'):.1f}x less), "
                      f"max pps {pps / c_pps:.2f}x")


if __name__ == "__main__":
    main()
