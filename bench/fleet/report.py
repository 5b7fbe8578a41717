#!/usr/bin/env python3
"""make bench-fleet's table and verdicts from bench/fleet/run.sh's results.

Usage: report.py RESULTS.jsonl   (one JSON object per line, "phase" says which)

Prints Markdown (the tables of bench/README.md, "Fleet") and one PASS/FAIL
line per target of issue 24; exits 1 when any target is missed.
"""
import json
import statistics
import sys

ANCHORS = ("kube-runtime", "controller-runtime")
# Below this, an unpaginated list's RSS growth is the API server's noise.
MEASURABLE_GROWTH_MIB = 16


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fmt(x, digits=1):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    rows = load(sys.argv[1])
    by = lambda phase: [r for r in rows if r["phase"] == phase]
    verdicts = []

    def verdict(ok, text):
        verdicts.append(("PASS" if ok else "FAIL") + " " + text)

    for c in by("conditions"):
        print(f"conditions: load average {c['load_average']}, {c['nproc']} cores, {fmt(c['mem_available_mib'])} MiB available")
    print()
    for c in by("create"):
        print(f"**Fleet**: {fmt(c['count'])} VMs created in {fmt(c['seconds'])} s "
              f"({fmt(c['per_second'])}/s, {fmt(c['bytes_each'])} B each as sent; failed {c['failed']}); "
              f"etcd {fmt(c['etcd_db_mib'])} MiB")
    print()

    def sync_table(phase, title, time_key):
        table = {r["arm"]: r for r in by(phase)}
        if not table:
            return table
        print(f"**{title}**")
        print()
        print("| arm | time (s) | arm CPU (s) | arm peak RSS (MiB) | arm settled RSS (MiB) "
              "| API server RSS before → peak (MiB) | API server growth (MiB) | API server CPU (s) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for arm, r in table.items():
            print(f"| {arm} | {fmt(r[time_key], 2)} | {fmt(r['cpu_s'], 2)} | {fmt(r['peak_rss_mib'])} | {fmt(r['settled_rss_mib'])} "
                  f"| {fmt(r['apiserver_rss_before_mib'])} → {fmt(r['apiserver_peak_rss_mib'])} | {fmt(r['apiserver_growth_mib'])} "
                  f"| {fmt(r['apiserver_cpu_s'], 2)} |")
        print()
        return table

    def api_cost_verdict(table, what):
        ours, unpaged = table.get("ours"), table.get("ours-unpaginated")
        if not ours or not unpaged:
            return
        key = "apiserver_growth_mib"
        if unpaged[key] < MEASURABLE_GROWTH_MIB:
            # The API server's heap already had room for the unpaginated
            # list (after creating the fleet, its RSS stays high): no
            # baseline to compare with at this size.
            verdicts.append(f"N/A API server peak RSS growth during our {what}: {fmt(ours[key])} MiB; an unpaginated list grew it by "
                            f"{fmt(unpaged[key])} MiB only, under {MEASURABLE_GROWTH_MIB} MiB: too little to compare with (target ≤ 0.1 ×)")
            return
        r = ratio(ours[key], unpaged[key])
        verdict(ours[key] <= 0.1 * unpaged[key],
                f"API server peak RSS growth during our {what}: {fmt(ours[key])} MiB against {fmt(unpaged[key])} MiB for an unpaginated list"
                f" = {fmt(r, 3)} (target ≤ 0.1)")

    sync = sync_table("sync", "Initial sync (each arm alone, in this order; NAME.rN: round N of our three list modes)", "ready_s")
    # Our list modes over every round: the median of each figure.
    rounds = {}
    for r in by("sync"):
        base = r["arm"].split(".r")[0]
        if base.startswith("ours"):
            rounds.setdefault(base, []).append(r)
    medians = {}
    if any(len(v) > 1 for v in rounds.values()):
        keys = ("ready_s", "cpu_s", "peak_rss_mib", "settled_rss_mib", "apiserver_growth_mib", "apiserver_cpu_s")
        print("**Our list modes, median over the rounds above**")
        print()
        print("| mode | rounds | time (s) | our CPU (s) | our peak RSS (MiB) | our settled RSS (MiB) | API server growth (MiB) | API server CPU (s) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for base, rs in rounds.items():
            m = {k: statistics.median(x[k] for x in rs) for k in keys}
            medians[base] = m
            print(f"| {base} | {len(rs)} | {fmt(m['ready_s'], 2)} | {fmt(m['cpu_s'], 2)} | {fmt(m['peak_rss_mib'])} | {fmt(m['settled_rss_mib'])} "
                  f"| {fmt(m['apiserver_growth_mib'])} | {fmt(m['apiserver_cpu_s'], 2)} |")
        print()
    api_cost_verdict(medians or sync, "initial sync")
    for r in by("restart"):
        print(f"**API server restart** over etcd compacted at revision {r['compacted_at']}: its VM watch cache ready in "
              f"{r['ready_s']} s, RSS {fmt(r['apiserver_rss_mib'])} MiB, etcd {fmt(r['etcd_db_mib'])} MiB after defragmentation")
        print()
    relist = sync_table("relist", "Relist after the restart (each arm resumed alone, in this order)", "relisted_s")
    api_cost_verdict(relist, "relist")

    rests, churns = by("rest"), by("churn")
    if churns:
        print("**Churn** (VM status patches; all three caches watch the same stream; CPU per 1,000 events is the arm's "
              "utime+stime over the window divided by the patches the API server accepted)")
        print()
        print("| rate asked | patches/s | arm | CPU ms / 1,000 events | × better anchor | RSS first → last (min–max) MiB | lag p50 / p99 / max (ms) | probes (missed) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for rest, c in zip(rests, churns):
        arms = c["arms"]
        best = min((arms[a].get("cpu_ms_per_1000_events") for a in ANCHORS if a in arms), default=None)
        asked = "most" if c["rate_asked"] == 0 else fmt(int(c["rate_asked"]))
        for name, a in arms.items():
            cpu = a.get("cpu_ms_per_1000_events")
            print(f"| {asked} | {fmt(c['patches_per_second'])} | {name} | {fmt(cpu, 2)} | {fmt(ratio(cpu, best), 2)} "
                  f"| {fmt(a['rss_first_mib'])} → {fmt(a['rss_last_mib'])} ({fmt(a['rss_min_mib'])}–{fmt(a['rss_max_mib'])}) "
                  f"| {fmt(a['lag_p50_ms'])} / {fmt(a['lag_p99_ms'])} / {fmt(a['lag_max_ms'])} | {a['lag_probes']} ({a['lag_missed']}) |")
        ours = arms.get("ours")
        if ours and best:
            r = ratio(ours["cpu_ms_per_1000_events"], best)
            verdict(r <= 0.5, f"our CPU per 1,000 events at {asked}/s ({fmt(c['patches_per_second'])}/s achieved): "
                              f"{fmt(ours['cpu_ms_per_1000_events'], 2)} ms = {fmt(r, 2)} × the better anchor's (target ≤ 0.5)")
        if ours:
            flat = (ours["rss_max_mib"] - ours["rss_min_mib"]) / ours["rss_min_mib"]
            verdict(flat <= 0.05, f"our RSS over the churn at {asked}/s: {fmt(ours['rss_min_mib'])}–{fmt(ours['rss_max_mib'])} MiB,"
                                  f" {fmt(100 * flat)} % (target ≤ 5 %)")
        # The issue sets the lag and VMI create targets at 1,000 events/s; a
        # machine that does not reach that rate is judged at the rates it
        # reached (every window).
        if ours:
            verdict(ours["lag_missed"] == 0 and ours["lag_p99_ms"] < 1000,
                    f"our watch lag p99 at {asked}/s ({fmt(c['patches_per_second'])}/s achieved): {fmt(ours['lag_p99_ms'])} ms, "
                    f"{ours['lag_missed']} probes missed (target < 1,000 ms)")
    if churns:
        print()
        print("**VMI creates** during each churn window against the rest window just before it (10 a second, as "
              "virt-controller, owned by a BootOnce VM: through the API server, which calls our webhook; and the same "
              "VMI's AdmissionReview straight to our /mutate)")
        print()
        print("| rate asked | create p50 / p99 at rest (ms) | during churn (ms) | p99 × rest | /mutate p50 / p99 at rest (ms) | during churn (ms) | p99 × rest | failed / unstamped |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for rest, c in zip(rests, churns):
        asked = "most" if c["rate_asked"] == 0 else fmt(int(c["rate_asked"]))
        rc, cc = rest.get("vmi_create", {}), c.get("vmi_create", {})
        rm, cm = rest.get("mutate", {}), c.get("mutate", {})
        bad = sum(x.get("failed", 0) + x.get("unstamped", 0) for x in (rc, cc, rm, cm))
        print(f"| {asked} | {fmt(rc.get('p50_ms'))} / {fmt(rc.get('p99_ms'))} | {fmt(cc.get('p50_ms'))} / {fmt(cc.get('p99_ms'))} "
              f"| {fmt(ratio(cc.get('p99_ms'), rc.get('p99_ms')), 2)} | {fmt(rm.get('p50_ms'), 2)} / {fmt(rm.get('p99_ms'), 2)} "
              f"| {fmt(cm.get('p50_ms'), 2)} / {fmt(cm.get('p99_ms'), 2)} | {fmt(ratio(cm.get('p99_ms'), rm.get('p99_ms')), 2)} | {bad} |")
        verdict(bad == 0, f"every VMI create at {asked}/s and at rest answered and stamped ({bad} failed or unstamped)")
        for label, r0, r1 in (("VMI create through the API server", rc, cc), ("/mutate", rm, cm)):
            r = ratio(r1.get("p99_ms"), r0.get("p99_ms"))
            verdict(r is not None and r <= 1.5, f"{label} p99 during {asked} events/s ({fmt(c['patches_per_second'])}/s achieved): {fmt(r1.get('p99_ms'), 2)} ms against "
                                                f"{fmt(r0.get('p99_ms'), 2)} ms at rest = {fmt(r, 2)} × (target ≤ 1.5)")
    for e in by("etcd"):
        print()
        print(f"etcd at the end: {fmt(e['etcd_db_mib'])} MiB")
    print()
    for v in verdicts:
        print(v)
    return 1 if any(v.startswith("FAIL") for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
