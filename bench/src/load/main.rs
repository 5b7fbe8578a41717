//! `make bench`: a closed-loop load benchmark over loopback TLS of the
//! webhook's release binary against the floor server (`src/bin/floor.rs`).
//!
//! For every case (protocol and concurrency, × payload) the two servers run
//! in `--rounds` pairs: both at once, each under its own copy of the load,
//! each time as fresh processes: warm-up, then a fixed measuring window. The
//! primary verdict is server CPU per answered review, judged on the median
//! of the pairs' ratios; throughput, latency and RSS are reported beside it.
//! The client runs on the same machine, nothing is pinned.
//!
//! ```text
//! kubevirt-reboot-webhook-bench --ours target/release/kubevirt-reboot-webhook \
//!     --floor target/release/floor [--workdir DIR] [--decide FILE] \
//!     [--warmup SECS] [--duration SECS] [--rounds N] [--cases h2/16,h1/64] \
//!     [--payload vmi-6k,vm,vm-denied,vmi-500k] [--h2-conns N]
//! kubevirt-reboot-webhook-bench --dump-payloads DIR   # write the bodies, for curl
//! ```
//!
//! By concern: `options.rs` (the command line), `servers.rs` (the server
//! processes and what `/proc` says of them), `client.rs` (the load
//! generator and one measured round), `verdict.rs` (the report and its
//! verdicts); `main.rs` runs the rounds. The payloads and the TLS set-up are
//! the crate's library, shared with the floor and the micro-benchmark.

mod client;
mod options;
mod servers;
mod verdict;

use std::fs;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use kubevirt_reboot_webhook_bench::payloads::{self, Payload};
use tokio_rustls::TlsConnector;

use client::{measure, Case};
use options::{parse_opts, Which};
use servers::{clock_ticks_per_second, prepare, start};
use verdict::{fmt_ns, mib, report, CaseResult};

fn main() -> anyhow::Result<()> {
    let o = parse_opts()?;
    if let Some(dir) = &o.dump {
        fs::create_dir_all(dir)?;
        for p in payloads::all() {
            let file = dir.join(format!("{}.json", p.name));
            fs::write(&file, &p.body)?;
            println!(
                "{} ({} bytes, POST {})",
                file.display(),
                p.body.len(),
                p.path
            );
        }
        return Ok(());
    }
    prepare(&o)?;
    let tck = clock_ticks_per_second();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let all = payloads::all();
    if let Some(unknown) = o
        .payloads
        .iter()
        .find(|n| !all.iter().any(|p| p.name == n.as_str()))
    {
        bail!("--payload: {unknown} is not one of vmi-6k, vm, vm-denied, vmi-500k");
    }
    let payloads: Vec<Payload> = all
        .into_iter()
        .filter(|p| o.payloads.iter().any(|n| n == p.name))
        .collect();
    if payloads.is_empty() {
        bail!("--payload: none of vmi-6k, vm, vm-denied, vmi-500k selected");
    }
    for p in &payloads {
        eprintln!(
            "payload {:<9} {:>7} bytes → {}",
            p.name,
            p.body.len(),
            p.path
        );
    }
    let mut results = Vec::new();
    let began = Instant::now();
    for &(proto, concurrency) in &o.cases {
        for payload in &payloads {
            let case = Case {
                proto,
                concurrency,
                payload,
            };
            let tls = TlsConnector::from(Arc::new(kubevirt_reboot_webhook_bench::client_config(
                &o.workdir.join("certs/ca.crt"),
                proto.alpn(),
            )?));
            let (mut ours, mut floor) = (Vec::new(), Vec::new());
            for round in 0..o.rounds {
                // A pair: both servers at once, each under its own half of
                // the load, so whatever else the machine does in that window
                // falls on both alike.
                let servers = [start(Which::Ours, &o)?, start(Which::Floor, &o)?];
                let (a, b) = rt.block_on(async {
                    tokio::join!(
                        measure(&servers[0], &case, &o, &tls, tck),
                        measure(&servers[1], &case, &o, &tls, tck)
                    )
                });
                drop(servers);
                for (which, r) in [(Which::Ours, a), (Which::Floor, b)] {
                    let r = r.with_context(|| {
                        format!(
                            "{} {} C={concurrency} {}",
                            which.name(),
                            proto.name(),
                            payload.name
                        )
                    })?;
                    eprintln!(
                        "[{:>4.0}s] {} C={:<3} {:<9} {:<5} round {}: {:>7.1} µs/review  {:>7.0} req/s  p50 {:>8}  p99 {:>8}  RSS {:>5.1} MiB  server {:.2} cores{}",
                        began.elapsed().as_secs_f64(),
                        proto.name(),
                        concurrency,
                        payload.name,
                        which.name(),
                        round + 1,
                        r.cpu_us,
                        r.rps,
                        fmt_ns(r.p50_ns as f64),
                        fmt_ns(r.p99_ns as f64),
                        mib(r.rss_kib),
                        r.cpu_s / r.window_s,
                        if r.failures.is_empty() { String::new() } else { format!("  FAILURES: {:?}", r.failures) }
                    );
                    match which {
                        Which::Ours => ours.push(r),
                        Which::Floor => floor.push(r),
                    }
                }
            }
            results.push(CaseResult {
                proto,
                concurrency,
                payload: payload.name,
                ours,
                floor,
            });
        }
    }
    let decide = match &o.decide {
        Some(p) => Some(fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let (text, pass) = report(&o, &results, decide.as_deref());
    println!("\n{text}");
    let out = o.workdir.join("results.txt");
    fs::write(&out, &text)?;
    eprintln!(
        "load benchmark took {:.0}s; table saved to {}",
        began.elapsed().as_secs_f64(),
        out.display()
    );
    if !pass {
        bail!("a target was missed or an answer was wrong (see the FAIL lines above)");
    }
    Ok(())
}
