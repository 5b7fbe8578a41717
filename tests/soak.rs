//! The long run: `make soak` (`SOAK_SECONDS`, default 600;
//! `cargo test --release --test soak -- --ignored --nocapture`).
//!
//! The release binary runs in cluster mode against the fake API server of
//! `tests/support` (in this process) and gets, for the whole run:
//!
//! - reviews over HTTP/1.1 and HTTP/2, on reused connections and on a new
//!   connection each time: VMI CREATEs for VMs that never change (the
//!   verdict is checked exactly), a VM with an invalid `rebootPolicy` (must
//!   be denied), and VMI CREATEs for VMs that churn (any well-formed answer);
//! - VM watch churn: a VM created, changed or deleted every 100 ms;
//! - an API outage of 3 s every minute (connections refused or 503s,
//!   alternately; every other one also expires the watch history: 410);
//! - a certificate rotation every minute, by the symlink swap a Secret
//!   volume does (checked through the expiry metric);
//! - abusive clients: headers that never finish, bodies over 7 MiB (the 413
//!   must arrive), garbage instead of TLS, garbage HTTP, and invalid JSON
//!   (400 expected).
//!
//! Every 5 s it samples the server's RSS, open file descriptors and threads
//! (from /proc) and its requests in flight. It fails on any failed request
//! that should have succeeded, on a server that exits, on requests still in
//! flight at the end, and when RSS or open fds grow with time: the least
//! squares slope after the first minute is over `SOAK_RSS_SLOPE` MiB/h
//! (default 8) or `SOAK_FD_SLOPE` fds/h (default 30) *and* the last quarter
//! of the samples is above the first quarter by more than noise (2 MiB,
//! 5 fds). It stops by itself after `SOAK_SECONDS`.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use support::fake_api::{
    kubevirt_cr, realistic_vm, realistic_vmi_create, uid, Down, FakeApi, Options, Res,
};
use support::{
    bootonce_stamp, decoded_patch, sample_review, serve_command_for, LockUnpoisoned as _, Rng,
    Spawned,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: f64 = 1024.0 * 1024.0;
const STABLE: u64 = 400;
const CHURN: u64 = 50;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const HEADER_READ_TIMEOUT: u64 = 2;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One in ten stable VMs is BootOnce.
fn strategy(i: u64) -> &'static str {
    if i.is_multiple_of(10) {
        "BootOnce"
    } else {
        ["Always", "RerunOnFailure", "Halted", "Manual"][(i % 4) as usize]
    }
}

/// What happened, shared by every task.
#[derive(Default)]
struct Tally {
    ok: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    failures: AtomicU64,
    first_failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Tally {
    fn ok(&self, what: &'static str) {
        *self.ok.lock_unpoisoned().entry(what).or_default() += 1;
    }
    fn fail(&self, what: &str, why: String) {
        self.failures.fetch_add(1, Ordering::SeqCst);
        let mut first = self.first_failures.lock_unpoisoned();
        if first.len() < 20 {
            eprintln!("FAILED {what}: {why}");
            first.push(format!("{what}: {why}"));
        }
    }
    fn check(&self, what: &'static str, r: Result<(), String>) {
        match r {
            Ok(()) => self.ok(what),
            Err(e) => self.fail(what, e),
        }
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A CA whose leaves the server rotates through; clients trust the CA.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    rotations: u64,
}

impl Ca {
    fn new(dir: &Path) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "soak CA");
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        let mut ca = Ca {
            issuer,
            dir: dir.to_owned(),
            rotations: 0,
        };
        ca.rotate();
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", dir.join("tls.key")).unwrap();
        ca
    }

    /// Issues a leaf with a distinct expiry and swaps it in as a Secret
    /// volume does (`..data` symlink replaced by a rename); returns that
    /// expiry as a Unix timestamp.
    fn rotate(&mut self) -> i64 {
        self.rotations += 1;
        let k = self.rotations;
        let not_after = 2_000_000_000 + k as i64 * 3600;
        let mut p =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, format!("soak leaf {k}"));
        p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let data = self.dir.join(format!("..{k}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(data.join("tls.key"), key.serialize_pem()).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..{k}"), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if k > 1 {
            let _ = std::fs::remove_dir_all(self.dir.join(format!("..{}", k - 1)));
        }
        not_after
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

/// One sample of the server process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    t: f64,
    rss: u64,
    fds: u64,
    threads: u64,
    in_flight: f64,
}

fn proc_sample(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")? * 1024, fds, field("Threads:")?))
}

async fn metric(http: &reqwest::Client, base: &str, series: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Least squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

/// Mean of the first and of the last quarter of `y`.
fn quarters(ys: &[f64]) -> (f64, f64) {
    if ys.is_empty() {
        return (0.0, 0.0);
    }
    let q = (ys.len() / 4).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    (mean(&ys[..q]), mean(&ys[ys.len() - q..]))
}

fn stable_ns(i: u64) -> String {
    format!("tenant-{}", i % 8)
}

/// Checks the exact verdict for stable VM `i`.
fn stable_verdict(i: u64, resp: &Value) -> Result<(), String> {
    let r = &resp["response"];
    if r["allowed"] != true {
        return Err(format!("vm {i}: not allowed: {resp}"));
    }
    let patch = decoded_patch(r).map_err(|e| format!("vm {i}: {e}: {resp}"))?;
    let want = (strategy(i) == "BootOnce").then(bootonce_stamp);
    if patch != want {
        return Err(format!("vm {i} ({}): wrong patch: {resp}", strategy(i)));
    }
    Ok(())
}

fn https_client(ca_pem: &str, http1: bool, reuse: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca pem");
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(15));
    if http1 {
        b = b.http1_only();
    }
    if !reuse {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().expect("client")
}

/// POSTs `body`; status and JSON answer.
async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<(u16, Value), String> {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("send: {e:?}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("body: {e:?}"))?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// One load worker: `mode` 0 = HTTP/2 reused, 1 = HTTP/1.1 reused, 2 = a
/// new connection per request (HTTP/1.1 and HTTP/2 in turn).
async fn load(tally: Arc<Tally>, ca_pem: String, base: String, mode: u8, seed: u64) {
    let mut rng = Rng(seed);
    let reused = match mode {
        0 => Some(https_client(&ca_pem, false, true)),
        1 => Some(https_client(&ca_pem, true, true)),
        _ => None,
    };
    let invalid = sample_review();
    let mut n = seed << 32;
    while !tally.stopped() {
        n += 1;
        let fresh;
        let client = match &reused {
            Some(c) => c,
            None => {
                fresh = https_client(&ca_pem, n.is_multiple_of(2), false);
                &fresh
            }
        };
        let pick = rng.below(100);
        if pick < 80 {
            let i = rng.below(STABLE);
            let review = realistic_vmi_create(&stable_ns(i), &format!("vm-{i}"), &uid(i), n);
            let r = post(client, &format!("{base}/mutate?timeout=10s"), &review).await;
            tally.check(
                "VMI CREATE (stable owner)",
                r.and_then(|(status, v)| {
                    if status != 200 {
                        return Err(format!("status {status}: {v}"));
                    }
                    stable_verdict(i, &v)
                }),
            );
        } else if pick < 90 {
            let r = post(client, &format!("{base}/validate?timeout=10s"), &invalid).await;
            tally.check(
                "VM with invalid rebootPolicy",
                r.and_then(|(status, v)| {
                    let msg = v["response"]["status"]["message"].as_str().unwrap_or("");
                    if status == 200
                        && v["response"]["allowed"] == false
                        && msg.contains("Unsupported value")
                    {
                        Ok(())
                    } else {
                        Err(format!("status {status}: {v}"))
                    }
                }),
            );
        } else {
            let k = rng.below(CHURN);
            let review = realistic_vmi_create("churn", &format!("churn-{k}"), &uid(100_000 + k), n);
            let r = post(client, &format!("{base}/mutate?timeout=10s"), &review).await;
            tally.check(
                "VMI CREATE (churning owner)",
                r.and_then(|(status, v)| {
                    if status == 200 && v["response"]["uid"] == review["request"]["uid"] {
                        Ok(())
                    } else {
                        Err(format!("status {status}: {v}"))
                    }
                }),
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn raw_tls(
    addr: &str,
    ca_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        let c: CertificateDer<'static> = c.map_err(|e| e.to_string())?;
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// Reads until the server closes; false if it has not within `limit`.
async fn closed_within(s: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let r = tokio::time::timeout(limit, s.read_to_end(&mut got)).await;
    (r.is_ok(), got)
}

/// The abusive clients, one after another, until stopped.
async fn abuse(tally: Arc<Tally>, ca_pem: String, addr: String) {
    while !tally.stopped() {
        // Headers that never finish: cut off by the header read timeout.
        let slow = async {
            let mut s = raw_tls(&addr, &ca_pem).await?;
            s.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let (closed, _) =
                closed_within(&mut s, Duration::from_secs(HEADER_READ_TIMEOUT * 2 + 2)).await;
            closed
                .then_some(())
                .ok_or_else(|| "slow headers not cut off".to_owned())
        };
        // A body over 7 MiB, written while the answer is read: the 413 arrives.
        let oversize = async {
            let s = raw_tls(&addr, &ca_pem).await?;
            let (mut r, mut w) = tokio::io::split(s);
            let len = 8 * 1024 * 1024;
            let writer = tokio::spawn(async move {
                let head = format!(
                    "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
                );
                w.write_all(head.as_bytes()).await?;
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..len / chunk.len() {
                    w.write_all(&chunk).await?;
                }
                w.flush().await
            });
            let (closed, got) = closed_within(&mut r, Duration::from_secs(10)).await;
            let _ = writer.await;
            let text = String::from_utf8_lossy(&got);
            (closed && text.starts_with("HTTP/1.1 413") && text.contains("RequestEntityTooLarge"))
                .then_some(())
                .ok_or_else(|| format!("oversize body: closed {closed}, got {text:?}"))
        };
        // Not TLS at all.
        let garbage = async {
            let mut s = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
            let _ = s
                .write_all(&[0x47, 0x45, 0x54, 0x20, 0xff, 0x00, 0x13, 0x37])
                .await;
            let (closed, _) = closed_within(&mut s, Duration::from_secs(15)).await;
            closed
                .then_some(())
                .ok_or_else(|| "garbage connection not closed".to_owned())
        };
        // TLS, then not HTTP.
        let garbage_http = async {
            let mut s = raw_tls(&addr, &ca_pem).await?;
            s.write_all(b"\x01\x02 this is not HTTP\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let (closed, got) = closed_within(&mut s, Duration::from_secs(15)).await;
            let text = String::from_utf8_lossy(&got);
            (closed && (got.is_empty() || text.starts_with("HTTP/1.1 400")))
                .then_some(())
                .ok_or_else(|| format!("garbage HTTP: closed {closed}, got {text:?}"))
        };
        // Valid HTTP, invalid JSON: 400 with a Status.
        let bad_json = async {
            let mut s = raw_tls(&addr, &ca_pem).await?;
            let body = "{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": ";
            let req = format!(
                "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let (closed, got) = closed_within(&mut s, Duration::from_secs(15)).await;
            let text = String::from_utf8_lossy(&got);
            (closed && text.starts_with("HTTP/1.1 400") && text.contains("\"kind\":\"Status\""))
                .then_some(())
                .ok_or_else(|| format!("invalid JSON: closed {closed}, got {text:?}"))
        };
        let (a, b, c, d, e) = tokio::join!(slow, oversize, garbage, garbage_http, bad_json);
        tally.check("abusive: slow headers cut off", a);
        tally.check("abusive: 413 for 8 MiB arrives", b);
        tally.check("abusive: not TLS, closed", c);
        tally.check("abusive: not HTTP, closed", d);
        tally.check("abusive: invalid JSON, 400", e);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Creates, changes and deletes churn VMs every 100 ms.
async fn churn(tally: Arc<Tally>, fake: Arc<FakeApi>) {
    let mut rng = Rng(0x5eed);
    let mut alive = [false; CHURN as usize];
    let mut changes = 0u64;
    while !tally.stopped() {
        let k = rng.below(CHURN);
        let (ns, name, id) = ("churn", format!("churn-{k}"), uid(100_000 + k));
        if alive[k as usize] && rng.below(2) == 0 {
            fake.delete(Res::Vm, ns, &name);
            alive[k as usize] = false;
        } else {
            let s = if rng.below(2) == 0 {
                "BootOnce"
            } else {
                "Always"
            };
            fake.apply(Res::Vm, realistic_vm(ns, &name, &id, s));
            alive[k as usize] = true;
        }
        changes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tally
        .ok
        .lock_unpoisoned()
        .insert("watch churn: VM changes", changes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make soak"]
async fn soak() {
    let seconds: u64 = env_or("SOAK_SECONDS", 600);
    assert!(
        seconds >= 90,
        "SOAK_SECONDS={seconds} is too short to judge growth (samples after the first minute decide): use 90 or more"
    );
    let rss_limit: f64 = env_or("SOAK_RSS_SLOPE", 8.0);
    let fd_limit: f64 = env_or("SOAK_FD_SLOPE", 30.0);
    let duration = Duration::from_secs(seconds);
    eprintln!("soak: {seconds} s");

    let fake = Arc::new(
        FakeApi::start_with(Options {
            bookmark_interval: Duration::from_secs(10),
            ..Options::default()
        })
        .await,
    );
    fake.load(
        Res::Vm,
        (0..STABLE).map(|i| realistic_vm(&stable_ns(i), &format!("vm-{i}"), &uid(i), strategy(i))),
    );
    fake.apply(
        Res::KubeVirt,
        kubevirt_cr("kubevirt", &["RecreateVMIOnReboot"], &[], Some("v1.9.0")),
    );

    let dir = tempfile::tempdir().unwrap();
    let mut ca = Ca::new(dir.path());
    let ca_pem = ca.pem();
    let kubeconfig = fake.kubeconfig();
    let mut cmd = serve_command_for(&dir.path().join("tls.crt"), &dir.path().join("tls.key"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig.path())
        .args(["--header-read-timeout", &format!("{HEADER_READ_TIMEOUT}s")])
        .args(["--shutdown-delay", "0s"])
        .env("RUST_LOG", "warn,kubevirt_reboot_webhook::cluster=info");
    let log = dir.path().join("server.log");
    let mut server = Spawned::start_logged(&mut cmd, Duration::from_secs(60), &log);
    let pid = server.id();
    let metrics_base = format!("http://{}", server.metrics_addr);
    let base = server.url("");
    let addr = server.addr.to_string();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    server.wait_ready(Duration::from_secs(30)).await;

    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for (w, mode) in [0u8, 0, 1, 1, 2, 2].into_iter().enumerate() {
        tasks.push(tokio::spawn(load(
            tally.clone(),
            ca_pem.clone(),
            base.clone(),
            mode,
            0x1234_5678 + w as u64,
        )));
    }
    tasks.push(tokio::spawn(abuse(tally.clone(), ca_pem.clone(), addr)));
    tasks.push(tokio::spawn(churn(tally.clone(), fake.clone())));

    // The conductor: samples, outages, rotations.
    let start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut next_rotation = Duration::from_secs(60);
    let mut next_outage = Duration::from_secs(30);
    let mut outages = 0u64;
    let mut outage_end: Option<Duration> = None;
    let mut rotated: Option<(i64, Duration)> = None;
    let mut max_stale = 0.0f64;
    eprintln!("     t      RSS   fds  threads  in-flight  stale");
    while start.elapsed() < duration {
        let now = start.elapsed();
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("the server exited ({status}):\n{}", server.log_tail(30));
        }
        if now >= next_sample {
            next_sample += SAMPLE_EVERY;
            let in_flight = metric(
                &http,
                &metrics_base,
                "kubevirt_reboot_webhook_requests_in_flight",
            )
            .await
            .unwrap_or(-1.0);
            let stale = metric(
                &http,
                &metrics_base,
                "kubevirt_reboot_webhook_vm_cache_stale",
            )
            .await
            .unwrap_or(-1.0);
            if let Some((rss, fds, threads)) = proc_sample(pid) {
                let s = Sample {
                    t: now.as_secs_f64(),
                    rss,
                    fds,
                    threads,
                    in_flight,
                };
                eprintln!(
                    "{:>6.0}s {:>6.1}MiB {:>5} {:>8} {:>10} {:>6}",
                    s.t,
                    rss as f64 / MIB,
                    fds,
                    threads,
                    in_flight,
                    stale
                );
                samples.push(s);
            }
        }
        if now >= next_outage && outage_end.is_none() {
            outages += 1;
            let mode = if outages % 2 == 1 {
                Down::Refuse
            } else {
                Down::Unavailable
            };
            if outages % 4 < 2 {
                fake.force_gone_next_watch(Res::Vm);
            }
            fake.set_down(mode);
            outage_end = Some(now + Duration::from_secs(3));
            next_outage += Duration::from_secs(60);
        }
        if outage_end.is_some_and(|end| now >= end) {
            fake.set_down(Down::Up);
            outage_end = None;
        }
        if now >= next_rotation {
            next_rotation += Duration::from_secs(60);
            rotated = Some((ca.rotate(), now));
        }
        if let Some((expiry, at)) = rotated {
            let got = metric(
                &http,
                &metrics_base,
                "kubevirt_reboot_webhook_certificate_expiry_timestamp_seconds",
            )
            .await;
            if got == Some(expiry as f64) {
                tally.ok("certificate rotations picked up");
                rotated = None;
            } else if now > at + Duration::from_secs(5) {
                tally.fail(
                    "certificate rotation",
                    format!("expiry metric {got:?}, want {expiry}, 5 s after the swap"),
                );
                rotated = None;
            }
        }
        if let Some(since) = metric(
            &http,
            &metrics_base,
            "kubevirt_reboot_webhook_vm_cache_stale_since_timestamp_seconds",
        )
        .await
        .filter(|s| *s > 0.0)
        {
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            max_stale = max_stale.max(unix - since);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fake.set_down(Down::Up);
    tally.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let in_flight_end = metric(
        &http,
        &metrics_base,
        "kubevirt_reboot_webhook_requests_in_flight",
    )
    .await
    .unwrap_or(-1.0);
    let end = proc_sample(pid);

    // Growth after the first minute (start-up, pools, the first rotation).
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.t >= 60.0).collect();
    let hours = |s: &Sample| s.t / 3600.0;
    let rss_mib: Vec<f64> = steady.iter().map(|s| s.rss as f64 / MIB).collect();
    let fds: Vec<f64> = steady.iter().map(|s| s.fds as f64).collect();
    let rss_slope = slope(
        &steady
            .iter()
            .map(|s| (hours(s), s.rss as f64 / MIB))
            .collect::<Vec<_>>(),
    );
    let fd_slope = slope(
        &steady
            .iter()
            .map(|s| (hours(s), s.fds as f64))
            .collect::<Vec<_>>(),
    );
    let (rss_first, rss_last) = quarters(&rss_mib);
    let (fd_first, fd_last) = quarters(&fds);
    let max = |f: fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
    let rss_grows = rss_slope > rss_limit && rss_last - rss_first > 2.0;
    let fds_grow = fd_slope > fd_limit && fd_last - fd_first > 5.0;

    let ok = tally.ok.lock().unwrap().clone();
    let failures = tally.failures.load(Ordering::SeqCst);
    println!("\n## soak: {:.0} s", start.elapsed().as_secs_f64());
    println!("| what | count |\n|---|---|");
    for (what, n) in &ok {
        println!("| {what} | {n} |");
    }
    println!("| API outages (3 s) | {outages} |");
    println!("| failed requests that should have succeeded | {failures} |");
    println!(
        "\n| sample (every 5 s, {} taken) | first | last | max | slope after 60 s |",
        samples.len()
    );
    println!("|---|---|---|---|---|");
    let first = samples.first().copied();
    let last = samples.last().copied();
    println!(
        "| RSS (MiB) | {:.1} | {:.1} | {:.1} | {rss_slope:+.2} MiB/h (first/last quarter {rss_first:.1}/{rss_last:.1}) |",
        first.map_or(0.0, |s| s.rss as f64 / MIB),
        last.map_or(0.0, |s| s.rss as f64 / MIB),
        max(|s| s.rss as f64 / MIB)
    );
    println!(
        "| open fds | {} | {} | {:.0} | {fd_slope:+.1} fds/h (first/last quarter {fd_first:.1}/{fd_last:.1}) |",
        first.map_or(0, |s| s.fds),
        last.map_or(0, |s| s.fds),
        max(|s| s.fds as f64)
    );
    println!(
        "| threads | {} | {} | {:.0} | |",
        first.map_or(0, |s| s.threads),
        last.map_or(0, |s| s.threads),
        max(|s| s.threads as f64)
    );
    println!(
        "| requests in flight | {} | {} (after the load: {in_flight_end}) | {:.0} | |",
        first.map_or(0.0, |s| s.in_flight),
        last.map_or(0.0, |s| s.in_flight),
        max(|s| s.in_flight)
    );
    println!("| longest VM cache staleness seen | | | {max_stale:.1} s | |");
    if let Some((rss, fds, threads)) = end {
        println!(
            "\nafter the load: RSS {:.1} MiB, {fds} fds, {threads} threads",
            rss as f64 / MIB
        );
    }

    let mut problems = Vec::new();
    if failures > 0 {
        problems.push(format!(
            "{failures} failed requests: {:#?}",
            tally.first_failures.lock().unwrap()
        ));
    }
    if rss_grows {
        problems.push(format!("RSS grows: {rss_slope:+.2} MiB/h"));
    }
    if fds_grow {
        problems.push(format!("open fds grow: {fd_slope:+.1}/h"));
    }
    if in_flight_end != 0.0 {
        problems.push(format!("{in_flight_end} requests in flight after the load"));
    }
    if steady.len() < 4 {
        problems.push("too short to judge growth (SOAK_SECONDS >= 90)".into());
    }
    assert!(
        problems.is_empty(),
        "soak FAILED:\n{}\n{}",
        problems.join("\n"),
        server.log_tail(30)
    );
    println!("\nsoak PASS");
    drop(server);
}
