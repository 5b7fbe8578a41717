//! The report and its verdicts. Every verdict compares ours with the floor
//! round by round (paired: the two ran at once, each under its own load)
//! and judges the median of the per-round ratios, so a slow stretch of a
//! shared machine falls on both sides of a pair and rarely moves the median.
//!
//! The primary verdict is server CPU (utime + stime) per answered review:
//! for each case, the median ratio against its baseline ([`cpu_baseline`])
//! with a margin ([`CASE_MARGIN`]), and over all cases pooled, a tighter
//! one ([`POOLED_MARGIN`]), both set from the measured spread
//! (bench/README.md, "Spread and limits", which also shows a 10 % slower
//! decision path failing them).
//! Throughput and latency are reported beside it.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use crate::client::Run;
use crate::options::{Opts, Proto};

/// The median ratio, ours / floor, of server CPU per answered review that
/// this project's 2-core machine measures for each case: the mean of two
/// runs' medians on 2026-12-03 (bench/README.md, "Spread and limits").
/// `None`: reported, not judged. At h1 C=64 the 500 KB bodies of both
/// servers' loads (2 × 64 × 500 KB) queue for the body budget, and one
/// server's share of a 3 s window swung from nothing to all of it: single
/// pairs ranged from 0.07 to 7.9.
pub fn cpu_baseline(proto: Proto, payload: &str) -> Option<f64> {
    Some(match (proto, payload) {
        (Proto::H2, "vmi-6k") => 0.89,
        (Proto::H2, "vm") => 0.77,
        (Proto::H2, "vm-denied") => 0.96,
        (Proto::H2, "vmi-500k") => 0.95,
        (Proto::H1, "vmi-6k") => 0.85,
        (Proto::H1, "vm") => 0.80,
        (Proto::H1, "vm-denied") => 0.97,
        (Proto::H1, "vmi-500k") => return None,
        // A payload without a measured baseline is held to the floor's cost.
        _ => 1.0,
    })
}

/// How far one case's median ratio may rise over its baseline: more than
/// any run's median strayed from it (at most +12.5 %, h1 vmi-6k), to catch
/// a large regression of one kind of review.
pub const CASE_MARGIN: f64 = 0.15;

/// How far the geometric mean over the judged cases of (median ratio /
/// baseline) may rise over 1: pooling seven cases narrows the noise (three
/// runs gave 0.967 to 1.004), so this catches a review that became 10 %
/// dearer everywhere.
pub const POOLED_MARGIN: f64 = 0.05;

pub fn fmt_ns(ns: f64) -> String {
    let us = ns / 1e3;
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else {
        format!("{:.2}ms", us / 1e3)
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Every round of one case, both servers; `ours[i]` and `floor[i]` ran at
/// the same time.
pub struct CaseResult {
    pub proto: Proto,
    pub concurrency: usize,
    pub payload: &'static str,
    pub ours: Vec<Run>,
    pub floor: Vec<Run>,
}

impl CaseResult {
    fn median(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
        median(runs.iter().map(f).collect())
    }
    /// `f(ours) / f(floor)` of each round.
    fn paired(&self, f: impl Fn(&Run) -> f64) -> Vec<f64> {
        self.ours
            .iter()
            .zip(&self.floor)
            .map(|(a, b)| f(a) / f(b))
            .collect()
    }
    fn name(&self) -> String {
        format!(
            "{} C={} {}",
            self.proto.name(),
            self.concurrency,
            self.payload
        )
    }
}

/// The median (the mean of the middle two for an even count); NaN if empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The decision micro-benchmark's median for `name`, from divan's table.
fn divan_median(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| {
        l.split_whitespace()
            .any(|w| w.trim_start_matches(['├', '╰', '─', ' ']) == name)
    })?;
    let median = line.split('│').nth(2)?.trim();
    let (num, unit) = median.split_once(' ')?;
    let num: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "ps" => 1e-6,
        "ns" => 1e-3,
        "µs" | "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return None,
    };
    Some(num * scale)
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    format!(
        "{} | nproc {cores} | {cpu} | Linux {}",
        date.trim(),
        kernel.trim()
    )
}

pub fn report(o: &Opts, results: &[CaseResult], decide: Option<&str>) -> (String, bool) {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "machine: {}", machine());
    let _ = writeln!(
        w,
        "method: closed loop, warm-up {:.1}s + {:.1}s measured (bodies over 100 KB: at least 1 s + twice that), {} paired rounds per case (ours and the floor at once, each under its own load), fresh server processes per round; client on the same machine, nothing pinned; h2: {} connection(s), h1: one keep-alive connection per worker",
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64(),
        o.rounds,
        o.h2_conns
            .map_or("ceil(C/32)".to_owned(), |n| n.to_string())
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "server CPU (utime+stime) per answered review, µs: medians of the rounds; ratio = median of the paired rounds' ours/floor (lowest-highest)"
    );
    let _ = writeln!(
        w,
        "{:<22}│ {:>8} {:>8} │ {:>6} {:>13} │ {:>5}",
        "case", "ours", "floor", "ratio", "rounds", "limit"
    );
    for r in results {
        let ratios = r.paired(|x| x.cpu_us);
        let (lo, hi) = min_max(&ratios);
        let _ = writeln!(
            w,
            "{:<22}│ {:>8.1} {:>8.1} │ {:>6.3} {:>13} │ {:>5}",
            r.name(),
            CaseResult::median(&r.ours, |x| x.cpu_us),
            CaseResult::median(&r.floor, |x| x.cpu_us),
            median(ratios),
            format!("{lo:.3}-{hi:.3}"),
            cpu_baseline(r.proto, r.payload).map_or("-".to_owned(), |b| format!(
                "{:.2}",
                b * (1.0 + CASE_MARGIN)
            ))
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "throughput and latency (medians of the rounds; ×: median of the paired ratios), peak RSS (highest), CPU of the load generator and of all other processes (median, cores)"
    );
    let _ = writeln!(
        w,
        "{:<22}│ {:>8} {:>8} {:>8} {:>7} │ {:>8} {:>8} {:>8} {:>7} │ {:>6} {:>6} │ {:>5} {:>5}",
        "case",
        "ours r/s",
        "p50",
        "p99",
        "RSS MiB",
        "floor/s",
        "p50",
        "p99",
        "RSS MiB",
        "tput×",
        "p99×",
        "load",
        "other"
    );
    for r in results {
        let rss = |runs: &[Run]| runs.iter().map(|x| x.rss_kib).max().unwrap_or(0);
        let both: Vec<Run> = r.ours.iter().chain(&r.floor).cloned().collect();
        let _ = writeln!(
            w,
            "{:<22}│ {:>8.0} {:>8} {:>8} {:>7.1} │ {:>8.0} {:>8} {:>8} {:>7.1} │ {:>6.2} {:>6.2} │ {:>5.2} {:>5.2}",
            r.name(),
            CaseResult::median(&r.ours, |x| x.rps),
            fmt_ns(CaseResult::median(&r.ours, |x| x.p50_ns as f64)),
            fmt_ns(CaseResult::median(&r.ours, |x| x.p99_ns as f64)),
            mib(rss(&r.ours)),
            CaseResult::median(&r.floor, |x| x.rps),
            fmt_ns(CaseResult::median(&r.floor, |x| x.p50_ns as f64)),
            fmt_ns(CaseResult::median(&r.floor, |x| x.p99_ns as f64)),
            mib(rss(&r.floor)),
            median(r.paired(|x| x.rps)),
            median(r.paired(|x| x.p99_ns as f64)),
            CaseResult::median(&both, |x| x.client_cores),
            CaseResult::median(&both, |x| x.other_cores),
        );
    }

    // Correctness: every answer of either server, warm-up included.
    let _ = writeln!(w);
    let mut ok = true;
    let (mut reqs, mut bad, mut checked) = (0, 0, 0);
    for r in results {
        for (which, runs) in [("ours", &r.ours), ("floor", &r.floor)] {
            let sum = |f: fn(&Run) -> u64| runs.iter().map(f).sum::<u64>();
            if which == "ours" {
                reqs += sum(|x| x.requests);
                bad += sum(|x| x.non_200 + x.errors + x.wrong);
                checked += sum(|x| x.checked);
            } else if sum(|x| x.non_200 + x.errors + x.wrong) > 0 {
                ok = false;
            }
            for f in runs.iter().flat_map(|x| &x.failures) {
                ok = false;
                let _ = writeln!(w, "  FAILURE {which} {}: {f}", r.name());
            }
            if sum(|x| x.checked) == 0 {
                ok = false;
                let _ = writeln!(w, "  FAILURE {which} {}: no answer was checked", r.name());
            }
        }
    }
    ok &= bad == 0;
    let _ = writeln!(
        w,
        "{} correctness: ours answered {reqs} measured requests correctly; {checked} answers (every 200, warm-up included) compared with the exact expected response (uid, verdict, causes, patch); {bad} not 200, failed or wrong",
        if ok { "PASS" } else { "FAIL" }
    );

    // Targets.
    let mut all = ok;
    let mut target = |w: &mut String, pass: bool, text: String| {
        all &= pass;
        let _ = writeln!(w, "{} {text}", if pass { "PASS" } else { "FAIL" });
    };
    let mut pooled = Vec::new();
    for r in results {
        let ratios = r.paired(|x| x.cpu_us);
        let (lo, hi) = min_max(&ratios);
        let x = median(ratios);
        let Some(base) = cpu_baseline(r.proto, r.payload) else {
            let _ = writeln!(
                w,
                "     CPU per review {}: {x:.3} × floor (paired rounds {lo:.3}-{hi:.3}; reported, not judged)",
                r.name()
            );
            continue;
        };
        let limit = base * (1.0 + CASE_MARGIN);
        pooled.push(x / base);
        target(
            w,
            x <= limit,
            format!(
                "CPU per review {}: {:.1} vs floor {:.1} µs = {x:.3} × floor (paired rounds {lo:.3}-{hi:.3}; baseline {base:.2}, limit {limit:.3})",
                r.name(),
                CaseResult::median(&r.ours, |x| x.cpu_us),
                CaseResult::median(&r.floor, |x| x.cpu_us),
            ),
        );
    }
    if !pooled.is_empty() {
        let g = (pooled.iter().map(|x| x.ln()).sum::<f64>() / pooled.len() as f64).exp();
        target(
            w,
            g <= 1.0 + POOLED_MARGIN,
            format!(
                "CPU per review over the {} judged cases: {g:.3} × their baselines (geometric mean; limit {:.2})",
                pooled.len(),
                1.0 + POOLED_MARGIN
            ),
        );
    }
    if let Some((peak, case)) = results
        .iter()
        .flat_map(|r| r.ours.iter().map(move |x| (x.rss_kib, r)))
        .max_by_key(|(k, _)| *k)
    {
        let floor_peak = results
            .iter()
            .flat_map(|r| r.floor.iter().map(|x| x.rss_kib))
            .max()
            .unwrap_or(0);
        target(
            w,
            mib(peak) < 40.0,
            format!(
                "peak RSS of ours {:.1} MiB (at {}; floor's peak {:.1} MiB) (target < 40 MiB)",
                mib(peak),
                case.name(),
                mib(floor_peak)
            ),
        );
    }
    match decide {
        Some(text) => {
            for (name, payload) in [
                ("vmi_6k_mutate", "6 KB VMI /mutate"),
                ("vm_validate", "VM /validate"),
                ("vm_denied_validate", "denied VM /validate"),
                ("vmi_500k_mutate", "500 KB VMI /mutate"),
            ] {
                let median = divan_median(text, name);
                if name == "vmi_6k_mutate" {
                    target(
                        w,
                        median.is_some_and(|m| m < 50.0),
                        format!(
                            "decision (decode + decide + response + encode) on the {payload}: median {} (target < 50 µs)",
                            median.map_or("not found".into(), |m| format!("{m:.1} µs"))
                        ),
                    );
                } else if let Some(m) = median {
                    let _ = writeln!(w, "     decision on the {payload}: median {m:.1} µs");
                }
            }
        }
        None => {
            let _ = writeln!(w, "SKIP decision micro-benchmark (no --decide output)");
        }
    }
    (s, all)
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert!(median(vec![]).is_nan());
        assert_eq!(median(vec![3.0]), 3.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
