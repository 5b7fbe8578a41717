#!/usr/bin/env python3
"""Server CPU (utime+stime) per answered review of several webhook binaries
and the floor side by side (bench/README.md, "Latest figures"): each server a
long-running process, load from h2load (Debian's nghttp2-client), rounds
interleaved with the servers' order rotating; the first server is the
reference of the paired ratios. Issue 25's three cases by default.

bench/tools/cpu_per_review.py --payloads DIR --objects DIR --certs DIR \
    [--rounds 6] [--scale 0.5] [--cases h2-16-6k,h1-64-6k,h2-16-500k] \
    old=/path/to/kubevirt-reboot-webhook new=/path/to/it floor=/path/to/floor

A name starting with "floor" is run as the floor server. The directories are
what `make bench` prepares (target/bench/certs, target/bench/objects) and
`kubevirt-reboot-webhook-bench --dump-payloads DIR`.
"""
import argparse, os, re, statistics, subprocess, sys, time, tempfile, socket

TCK = os.sysconf("SC_CLK_TCK")

CASES = {
    "h2-16-6k": dict(h1=False, c=1, m=16, payload="vmi-6k.json", n=20000),
    "h1-64-6k": dict(h1=True, c=64, m=1, payload="vmi-6k.json", n=20000),
    "h2-16-500k": dict(h1=False, c=1, m=16, payload="vmi-500k.json", n=1500),
}


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s.rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[7]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, secs=20):
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not listen")


def h2load(port, case, payloads, n):
    c = CASES[case]
    path = "/mutate?timeout=10s"
    cmd = ["h2load", "-n", str(n), "-c", str(c["c"]), "-m", str(c["m"]), "-t", "1",
           "-d", os.path.join(payloads, c["payload"]),
           "-H", "content-type: application/json"]
    if c["h1"]:
        cmd.append("--h1")
    cmd.append(f"https://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    st = re.search(r"status codes: (\d+) 2xx", out)
    if not m:
        raise SystemExit("h2load output unparsed:\n" + out)
    ok = int(m.group(4))
    if ok != n or not st or int(st.group(1)) != n:
        raise SystemExit(f"h2load: {n} wanted, {ok} succeeded\n" + out)
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--payloads", required=True)
    ap.add_argument("--objects", required=True)
    ap.add_argument("--certs", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("servers", nargs="+")
    a = ap.parse_args()
    servers = []
    for spec in a.servers:
        name, path = spec.split("=", 1)
        port = free_port()
        if name.startswith("floor"):
            cmd = [path, "--listen", f"127.0.0.1:{port}"]
        else:
            cmd = [path, "serve", "--listen", f"127.0.0.1:{port}",
                   "--metrics-listen", f"127.0.0.1:{free_port()}",
                   "--feature-gates", "RecreateVMIOnReboot", "--objects", a.objects,
                   "--shutdown-delay", "0s"]
        cmd += ["--tls-cert", os.path.join(a.certs, "tls.crt"), "--tls-key", os.path.join(a.certs, "tls.key")]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        servers.append((name, p, port))
    try:
        for name, p, port in servers:
            wait_port(port, p)
            for case in a.cases.split(","):
                h2load(port, case, a.payloads, 200)  # warm-up, and checks the 200s
        res = {}
        for r in range(a.rounds):
            for case in a.cases.split(","):
                n = int(CASES[case]["n"] * a.scale)
                k = r % len(servers)
                order = servers[k:] + servers[:k]
                if r % 2:
                    order = order[::-1]
                for name, p, port in order:
                    t0, b0, w0 = ticks(p.pid), busy(), time.time()
                    ok = h2load(port, case, a.payloads, n)
                    t1, b1, w1 = ticks(p.pid), busy(), time.time()
                    us = (t1 - t0) / TCK / ok * 1e6
                    other = ((b1 - b0) / TCK - (t1 - t0) / TCK) / (w1 - w0)
                    res.setdefault(case, {}).setdefault(name, []).append((us, other))
                    print(f"round {r+1} {case:<11} {name:<12} {us:8.1f} µs/review  (server {(t1-t0)/TCK:.2f}s, {ok} reviews, {ok/(w1-w0):.0f}/s, load+other {other:.2f} cores)", flush=True)
        print()
        ref = servers[0][0]
        for case, by in res.items():
            print(f"{case}:")
            for name, _, _ in servers:
                v = [x for x, _ in by[name]]
                ratios = [x / y for (x, _), (y, _) in zip(by[name], by[ref])]
                print(f"  {name:<12} median {statistics.median(v):8.1f} µs  min {min(v):8.1f}  max {max(v):8.1f}  paired/{ref} median {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]")
    finally:
        for _, p, _ in servers:
            p.kill()
            p.wait()


main()
