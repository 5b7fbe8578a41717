//! Operating the webhook: certificate rotation (in place and by symlink
//! swap), chains, mTLS, graceful shutdown on SIGTERM, limits and deadlines,
//! metrics and structured logs.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use support::TestCa as Ca;
use support::{
    fixtures, metric, read_json, sample_review, serve_command, standalone_flags, wait_until, Certs,
    Spawned, TestServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until `readyz` answers 503, as it does once SIGTERM is handled.
async fn wait_unready(readyz: &str) {
    wait_until(
        "readiness fails after SIGTERM",
        Duration::from_secs(5),
        || async { matches!(reqwest::get(readyz).await, Ok(r) if r.status() == 503) },
    )
    .await;
}

/// The DER of the leaf certificate the server presents to a new connection.
async fn served_leaf(addr: std::net::SocketAddr, roots_pem: &[&str]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in roots_pem {
        for c in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
            let c: CertificateDer<'static> = c.unwrap();
            roots.add(c).unwrap();
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    let c: CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    c.as_ref().to_vec()
}

fn client_trusting(roots: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false);
    for r in roots {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(r.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// Posts the review in a loop on fresh and reused connections; counts
/// failures, and answered requests in `done` as they happen.
fn request_stream(
    url: String,
    roots: Vec<String>,
    stop: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
        let reused = client_trusting(&roots);
        let body = sample_review().to_string();
        let (mut ok, mut failed) = (0, 0);
        let mut i = 0usize;
        while stop.load(Ordering::SeqCst) == 0 {
            i += 1;
            // Every other request on a brand-new connection, so handshakes happen mid-rotation.
            let client = if i.is_multiple_of(2) {
                client_trusting(&roots)
            } else {
                reused.clone()
            };
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(resp) if resp.status() == 200 => ok += 1,
                _ => failed += 1,
            }
            done.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok, failed)
    })
}

/// Kubernetes Secret volume layout: `..data -> ..<ts>/`, `tls.crt -> ..data/tls.crt`.
fn secret_volume_write(dir: &Path, generation: u32, cert: &str, key: &str) {
    let ts = dir.join(format!("..2026_11_25_{generation:02}"));
    std::fs::create_dir_all(&ts).unwrap();
    std::fs::write(ts.join("tls.crt"), cert).unwrap();
    std::fs::write(ts.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(ts.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(f), &link).unwrap();
        }
    }
}

async fn start_with_files(cert: &Path, key: &Path, extra: &[String]) -> TestServer {
    TestServer::start_with_files(Certs::new(), cert, key, extra).await
}

#[tokio::test]
async fn certificate_rotation_in_place_and_by_symlink_swap() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let roots = vec![old_ca.pem(), new_ca.pem()];
    let flags = standalone_flags();

    for layout in ["in-place", "symlink-swap"] {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = old_ca.leaf("localhost");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        if layout == "in-place" {
            std::fs::write(&cert, &c1).unwrap();
            std::fs::write(&key, &k1).unwrap();
        } else {
            secret_volume_write(dir.path(), 1, &c1, &k1);
        }
        let server = start_with_files(&cert, &key, &flags).await;
        let root_refs: Vec<&str> = roots.iter().map(String::as_str).collect();
        assert_eq!(
            served_leaf(server.addr, &root_refs).await,
            der_of(&c1),
            "{layout}: initial"
        );

        let (stop, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stream = request_stream(
            server.url("/validate"),
            roots.clone(),
            stop.clone(),
            done.clone(),
        );
        let answered = |n: usize| {
            let done = done.clone();
            move || {
                let done = done.clone();
                async move { done.load(Ordering::SeqCst) >= n }
            }
        };
        wait_until("the stream running", Duration::from_secs(10), answered(10)).await;
        let reload_errors = "kubevirt_reboot_webhook_errors_total{class=\"certificate_reload\"}";
        assert_eq!(server.metric(reload_errors).await, 0.0, "{layout}");

        // A mismatched pair (new cert, old key) is refused; the old one stays.
        let (c2, k2) = new_ca.leaf("localhost");
        if layout == "in-place" {
            std::fs::write(&cert, &c2).unwrap();
        } else {
            secret_volume_write(dir.path(), 2, &c2, &k1);
        }
        // The reloader has seen the pair and refused it (its error counted) ...
        wait_until(
            &format!("{layout}: the mismatched pair refused"),
            Duration::from_secs(10),
            || async { server.metric(reload_errors).await >= 1.0 },
        )
        .await;
        // ... and kept serving the old certificate.
        assert_eq!(
            served_leaf(server.addr, &root_refs).await,
            der_of(&c1),
            "{layout}: mismatched pair must keep the old certificate"
        );

        // Completing the pair rotates.
        if layout == "in-place" {
            std::fs::write(&key, &k2).unwrap();
        } else {
            secret_volume_write(dir.path(), 3, &c2, &k2);
        }
        let addr = server.addr;
        let want = der_of(&c2);
        wait_until(
            &format!("{layout}: new certificate served"),
            Duration::from_secs(5),
            || {
                let roots = root_refs.clone();
                let want = want.clone();
                async move { served_leaf(addr, &roots).await == want }
            },
        )
        .await;
        // Requests keep succeeding with the new certificate.
        let seen = done.load(Ordering::SeqCst);
        wait_until(
            "the stream after rotation",
            Duration::from_secs(10),
            answered(seen + 10),
        )
        .await;
        stop.store(1, Ordering::SeqCst);
        let (ok, failed) = stream.await.unwrap();
        assert_eq!(
            failed, 0,
            "{layout}: {failed} failed requests during rotation ({ok} ok)"
        );
        assert!(ok >= 20, "{layout}: the stream ran ({ok} requests)");

        // The expiry metric follows the new certificate.
        let (_, parsed) = x509_parser::parse_x509_certificate(&want).unwrap();
        let not_after = parsed.validity().not_after.timestamp();
        let (_, metrics) = server.get_text(&server.metrics_url("/metrics")).await;
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("kubevirt_reboot_webhook_certificate_expiry_timestamp_seconds ")
            })
            .expect("expiry metric");
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(value as i64, not_after, "{layout}");
        server.stop().await;
    }
}

#[tokio::test]
async fn certificate_chain_with_intermediate() {
    let root = Ca::new("root");
    let inter = root.intermediate("intermediate");
    let (leaf, key) = inter.leaf("localhost");
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, format!("{leaf}{}", inter.pem())).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let flags = standalone_flags();
    let server = start_with_files(&cert_path, &key_path, &flags).await;
    // The client trusts only the root: the served intermediate completes the chain.
    let client = client_trusting(&[&root.pem()]);
    let resp = client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(sample_review().to_string())
        .send()
        .await
        .expect("chain verifies");
    assert_eq!(resp.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_with_client_name_allow_list() {
    let client_ca = Ca::new("client CA");
    let other_ca = Ca::new("unrelated CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, client_ca.pem()).unwrap();
    let mut flags = standalone_flags();
    flags.extend([
        "--client-ca".into(),
        ca_path.display().to_string(),
        "--client-name".into(),
        "kube-apiserver".into(),
    ]);
    let server = TestServer::start(&flags).await;
    let ca = server.certs.ca_pem.clone();
    // Each refusal is the TLS handshake failing with the alert that says why,
    // not any later error; the allowed client gets its HTTP answer.
    use rustls::AlertDescription::{AccessDenied, CertificateRequired, UnknownCA};
    assert_eq!(
        mtls_post(server.addr, &ca, None).await,
        Err(CertificateRequired),
        "no client certificate"
    );
    assert_eq!(
        mtls_post(server.addr, &ca, Some(other_ca.leaf("kube-apiserver"))).await,
        Err(UnknownCA),
        "certificate from another CA"
    );
    assert_eq!(
        mtls_post(server.addr, &ca, Some(client_ca.leaf("someone-else"))).await,
        Err(AccessDenied),
        "name not on the allow-list"
    );
    assert_eq!(
        mtls_post(server.addr, &ca, Some(client_ca.leaf("kube-apiserver"))).await,
        Ok(200),
        "allowed client name"
    );
    server.stop().await;

    // Without --client-name, any certificate from the CA is accepted.
    let mut flags = standalone_flags();
    flags.extend(["--client-ca".into(), ca_path.display().to_string()]);
    let server = TestServer::start(&flags).await;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(server.certs.ca_pem.as_bytes()).unwrap(),
        )
        .identity({
            let (c, k) = client_ca.leaf("anyone");
            reqwest::Identity::from_pem(format!("{c}{k}").as_bytes()).unwrap()
        })
        .build()
        .unwrap();
    let status = client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(sample_review().to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    server.stop().await;
}

/// Posts the review presenting `identity` as client certificate.
async fn mtls_post(
    addr: std::net::SocketAddr,
    server_ca: &str,
    identity: Option<(String, String)>,
) -> Result<u16, rustls::AlertDescription> {
    support::tls_post(
        addr,
        server_ca,
        identity,
        "/validate",
        &sample_review().to_string(),
    )
    .await
}

/// A raw TLS HTTP/1.1 connection to send requests slowly.
async fn raw_tls(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    raw_tls_alpn(addr, ca_pem, b"http/1.1").await
}

/// A raw TLS connection offering only `alpn`.
async fn raw_tls_alpn(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    support::raw_tls(addr, ca_pem, alpn).await
}

/// Sends headers and half the body, waits for `release`, sends the rest;
/// returns the status code and body of the answer.
async fn slow_request(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    query: &str,
    body: String,
    release: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<(u16, String)> {
    let mut s = raw_tls(addr, ca_pem).await;
    let head = format!(
        "POST /validate{query} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    let (a, b) = body.as_bytes().split_at(body.len() / 2);
    s.write_all(a).await?;
    s.flush().await?;
    // A dropped sender releases too: a failing test never leaves it hanging.
    let _ = release.await;
    // The server may already have answered (deadline); a failed write is fine then.
    let _ = s.write_all(b).await;
    let _ = s.flush().await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP response: {text:?}")))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((status, body))
}

/// A review whose body stops half-way until [`Slow::finish`] sends the rest.
struct Slow {
    task: tokio::task::JoinHandle<std::io::Result<(u16, String)>>,
    release: tokio::sync::oneshot::Sender<()>,
}

impl Slow {
    fn start(addr: std::net::SocketAddr, ca_pem: &str, body: String) -> Slow {
        let (release, rx) = tokio::sync::oneshot::channel();
        let ca = ca_pem.to_owned();
        let task =
            tokio::spawn(async move { slow_request(addr, &ca, "?timeout=10s", body, rx).await });
        Slow { task, release }
    }

    /// Sends the rest of the body; returns the answer's status and body.
    async fn finish(self) -> (u16, String) {
        let _ = self.release.send(());
        self.task
            .await
            .expect("slow request task")
            .expect("the slow review is answered")
    }
}

/// Longest a test waits for an answer that must come: a hang guard, far
/// above any deadline these tests set, so a loaded machine cannot miss it.
/// When answers come is checked in paused time next to the code
/// (src/server/tests.rs), not against this machine's clock.
const HANG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn deadline_from_the_api_server_timeout_is_honoured() {
    let flags = standalone_flags();
    let server = TestServer::start(&flags).await;
    // Half a body, then silence: answered with a 408 at the server's budget
    // for the API server's 2 s (0.9 × 2 s - 50 ms = 1.75 s; that the answer
    // comes exactly then is src/server/tests.rs's
    // `stalled_bodies_are_answered_at_the_budget_of_their_timeout`).
    let body = sample_review().to_string();
    let mut s = raw_tls(server.addr, &server.certs.ca_pem).await;
    let head = format!(
        "POST /validate?timeout=2s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..body.len() / 2])
        .await
        .unwrap();
    s.flush().await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(HANG, s.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("deadline"), "{text}");
    assert_eq!(
        server
            .metric("kubevirt_reboot_webhook_errors_total{class=\"deadline_exceeded\"}")
            .await,
        1.0
    );
    server.stop().await;
}

/// Starts a review whose body trickles in (half, then the rest when the
/// test calls [`Slow::finish`]), and waits until the server has admitted it
/// past every limit: it holds its limit for as long as the test wants.
async fn start_slow(server: &TestServer, body: &str) -> Slow {
    let before = in_flight(server).await;
    let slow = Slow::start(server.addr, &server.certs.ca_pem, body.to_owned());
    wait_until(
        "the slow review admitted",
        Duration::from_secs(10),
        || async { in_flight(server).await > before },
    )
    .await;
    slow
}

/// `requests_in_flight`: reviews admitted past every limit.
async fn in_flight(server: &TestServer) -> f64 {
    server
        .metric("kubevirt_reboot_webhook_requests_in_flight")
        .await
}

/// Sends `body` with the API server's 4 s timeout: it must be answered
/// with `status` and a body containing `text` (a 503 comes at the server's
/// 3.55 s budget, before the API server gives up: src/server/tests.rs holds
/// that in paused time).
async fn expect_answer(server: &TestServer, body: &str, status: u16, text: &str) {
    let resp = server
        .client
        .post(server.url("/validate?timeout=4s"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send();
    let resp = tokio::time::timeout(HANG, resp)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(resp.status().as_u16(), status);
    let answer = resp.text().await.unwrap();
    assert!(answer.contains(text), "{answer}");
}

#[tokio::test]
async fn concurrency_limit_applies_back_pressure_then_recovers() {
    let mut flags = standalone_flags();
    flags.extend(["--max-concurrent-requests".into(), "1".into()]);
    let server = TestServer::start(&flags).await;
    let body = sample_review().to_string();
    // The client's connection is open before the clock matters.
    expect_answer(&server, &body, 200, "allowed").await;
    let a = start_slow(&server, &body).await;
    expect_answer(&server, &body, 503, "concurrency limit").await;
    let (status, a_body) = a.finish().await;
    assert_eq!(status, 200, "{a_body}");
    // And the next review is served once the slot is free.
    expect_answer(&server, &body, 200, "allowed").await;
    server.stop().await;
}

#[tokio::test]
async fn body_byte_budget_applies_back_pressure_then_recovers() {
    // A few KiB, so that a body is several permits.
    let mut padded = sample_review();
    padded["request"]["object"]["metadata"]["annotations"]["padding"] = "x".repeat(3000).into();
    let body = padded.to_string();
    // A budget of exactly two bodies.
    let mut flags = standalone_flags();
    flags.extend([
        "--max-body-bytes-in-flight".into(),
        (2 * body.len()).to_string(),
    ]);
    let server = TestServer::start(&flags).await;
    expect_answer(&server, &body, 200, "allowed").await;
    // A holds one body's worth: another fits beside it (each review takes
    // its own length, not the whole budget) ...
    let a = start_slow(&server, &body).await;
    expect_answer(&server, &body, 200, "allowed").await;
    // ... and with B holding the second, nothing else may be read (each
    // takes its length, not one permit).
    let b = start_slow(&server, &body).await;
    expect_answer(&server, &body, 503, "bytes in flight").await;
    for slow in [a, b] {
        let (status, answer) = slow.finish().await;
        assert_eq!(status, 200, "{answer}");
    }
    // Once A and B are done, the budget is free again; and a body larger
    // than the whole budget is still served (it takes all of it).
    let (status, _) = server.post("/validate", &sample_review()).await;
    assert_eq!(status, 200);
    let mut big = sample_review();
    big["request"]["object"]["metadata"]["annotations"]["padding"] = "x".repeat(64 * 1024).into();
    let (status, answer) = server.post("/validate", &big).await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn slow_headers_and_silent_handshakes_are_cut_off() {
    let mut flags = standalone_flags();
    flags.extend(["--header-read-timeout".into(), "1s".into()]);
    let server = TestServer::start(&flags).await;
    // Headers never finished.
    let mut s = raw_tls(server.addr, &server.certs.ca_pem).await;
    s.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // Cut off at --header-read-timeout (when: src/server/tests.rs, in
    // paused time).
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(HANG, s.read_to_end(&mut buf))
        .await
        .expect("server closes the connection");
    // A TCP connection that never starts TLS.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(HANG, tcp.read(&mut buf))
        .await
        .expect("server closes the connection");
    assert!(matches!(n, Ok(0) | Err(_)));
    // The server is still fine.
    let (status, _) = server.post("/validate", &sample_review()).await;
    assert_eq!(status, 200);
    let (_, metrics) = server.get_text(&server.metrics_url("/metrics")).await;
    assert!(
        metrics.contains("kubevirt_reboot_webhook_errors_total{class=\"tls_handshake\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_labels() {
    let flags = standalone_flags();
    let server = TestServer::start(&flags).await;
    let (_, _) = server.post("/validate", &sample_review()).await;
    let (_, _) = server.post("/validate", &sample_review()).await;
    let mutate = read_json(&fixtures().join("gate-on/08-vmi-create-bootonce-owner.mutate.json"));
    let (_, _) = server.post("/mutate", &mutate).await;
    let warn = read_json(&fixtures().join("gate-on/05-vm-terminate-rerunonfailure.validate.json"));
    let (_, _) = server.post("/validate", &warn).await;
    let (_, _) = server.post("/validate", &json!({"not": "a review"})).await;
    let (status, m) = server.get_text(&server.metrics_url("/metrics")).await;
    assert_eq!(status, 200);
    for want in [
        r#"kubevirt_reboot_webhook_requests_total{endpoint="validate",kind="VirtualMachine",operation="CREATE",allowed="false",mutated="false",warned="false"} 2"#,
        r#"kubevirt_reboot_webhook_requests_total{endpoint="mutate",kind="VirtualMachineInstance",operation="CREATE",allowed="true",mutated="true",warned="false"} 1"#,
        r#"kubevirt_reboot_webhook_requests_total{endpoint="validate",kind="VirtualMachine",operation="CREATE",allowed="true",mutated="false",warned="true"} 1"#,
        r#"kubevirt_reboot_webhook_errors_total{class="bad_request"} 1"#,
        r#"kubevirt_reboot_webhook_request_duration_seconds_count{endpoint="validate"} 3"#,
        "kubevirt_reboot_webhook_vm_cache_objects ",
        "kubevirt_reboot_webhook_feature_gate_enabled 1",
        "kubevirt_reboot_webhook_certificate_expiry_timestamp_seconds ",
        "kubevirt_reboot_webhook_requests_in_flight 0",
    ] {
        assert!(m.contains(want), "metrics lack {want}\n{m}");
    }
    server.stop().await;
}

/// The real binary, for signals and logs.
struct Proc {
    server: Spawned,
    certs: Certs,
    stderr: Arc<std::sync::Mutex<Vec<String>>>,
    /// Reads stderr into `stderr` until the process closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn spawn(extra: &[&str]) -> Proc {
        Proc::spawn_logging("json", extra)
    }

    fn spawn_logging(log_format: &str, extra: &[&str]) -> Proc {
        let certs = Certs::new();
        let mut cmd = serve_command(&certs);
        cmd.args(["--log-format", log_format])
            // Hermetic: the developer's own settings must not change the logs.
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .args(standalone_flags())
            .args(extra)
            .stderr(Stdio::piped());
        let mut server = Spawned::start(&mut cmd, Duration::from_secs(30));
        let stderr = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = server.child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        });
        Proc {
            server,
            certs,
            stderr,
            reader: Some(reader),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.addr
    }

    fn child(&mut self) -> &mut Child {
        &mut self.server.child
    }

    async fn metric(&self, series: &str) -> f64 {
        metric(self.server.metrics_addr, series).await
    }

    /// A body that is not JSON: answered 400, and logged (waits for the line).
    async fn post_malformed_review(&self) {
        let client = support::client(&self.certs.ca_pem, false);
        let resp = client
            .post(self.server.url("/validate"))
            .header("content-type", "application/json")
            .body("{]")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        wait_until("the log line", Duration::from_secs(10), || async {
            let lines = self.stderr.lock().unwrap();
            lines.iter().any(|l| l.contains("bad admission request"))
        })
        .await;
    }

    /// Every log line of a process that has exited: read to the end of
    /// its stderr first, not just as far as the reader thread has got.
    fn all_logs(&mut self) -> Vec<Value> {
        assert!(
            self.child().try_wait().unwrap().is_some(),
            "all_logs before the process exited"
        );
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.logs()
    }

    fn logs(&self) -> Vec<Value> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_drops_none() {
    let mut p = Proc::spawn(&["--shutdown-delay", "2s", "--drain-timeout", "30s"]);
    p.server.wait_ready(Duration::from_secs(10)).await;
    let (addr, ca) = (p.addr(), p.certs.ca_pem.clone());
    // Slow requests, admitted before the signal, whose bodies are completed
    // only once the listener is closed (after the delay).
    let mut slow = Vec::new();
    for i in 0..5u64 {
        let mut r = sample_review();
        r["request"]["uid"] = json!(format!("slow-{i}"));
        slow.push(Slow::start(addr, &ca, r.to_string()));
    }
    let in_flight = "kubevirt_reboot_webhook_requests_in_flight";
    wait_until(
        "five reviews in flight",
        Duration::from_secs(10),
        || async { p.metric(in_flight).await == 5.0 },
    )
    .await;
    p.server.signal(libc::SIGTERM);
    let readyz = p.server.metrics_url("/readyz");
    wait_unready(&readyz).await;
    let text = reqwest::get(&readyz).await.unwrap().text().await.unwrap();
    assert!(text.contains("shutting down"), "{text}");
    // During the delay, new requests are still served: the listener is
    // still open, since the slow requests have not been released.
    let client = support::client(&ca, false);
    let resp = client
        .post(p.server.url("/validate"))
        .header("content-type", "application/json")
        .body(sample_review().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // After the delay the listener closes, while the five are still in flight.
    wait_until("the listener closed", Duration::from_secs(10), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert_eq!(
        p.metric(in_flight).await,
        5.0,
        "the in-flight reviews are kept while draining"
    );
    assert!(
        p.child().try_wait().unwrap().is_none(),
        "exited while draining"
    );
    // Every accepted slow request completes with its own verdict.
    for (i, s) in slow.into_iter().enumerate() {
        let (status, body) = s.finish().await;
        assert_eq!(status, 200, "slow-{i}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["response"]["uid"], format!("slow-{i}"));
    }
    let status = wait_exit(p.child(), Duration::from_secs(10)).expect("exits after draining");
    assert!(status.success(), "{status:?}");
    // Structured logs: the denial was logged at info with uid, kind, object and user.
    let logs = p.all_logs();
    let denial = logs
        .iter()
        .find(|l| l["message"] == "denied" && l["uid"] == "slow-0")
        .unwrap_or_else(|| panic!("no denial log: {logs:#?}"));
    assert_eq!(denial["level"], "INFO");
    assert_eq!(denial["kind"], "VirtualMachine");
    assert_eq!(denial["object"], "default/web");
    assert_eq!(denial["user"], "alice");
    assert!(denial["reason"]
        .as_str()
        .unwrap()
        .contains("Unsupported value"));
}

/// One HTTP/1.1 request on `conn` (keep-alive); the status and the
/// `connection` header of its answer.
async fn keep_alive_request<S>(conn: &mut S, body: &str) -> (u16, Option<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: webhook\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).await.unwrap(),
            1,
            "closed before the answer: {buf:?}"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap().to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let length: usize = header("content-length").unwrap().parse().unwrap();
    let mut answer = vec![0u8; length];
    conn.read_exact(&mut answer).await.unwrap();
    let status = head[9..12].parse().unwrap();
    (status, header("connection"))
}

/// From SIGTERM on, the server closes a connection only after telling the
/// client so, since the API server retries no webhook call that fails on a
/// closed connection: an idle HTTP/1.1 keep-alive connection stays open
/// during the delay, and its next request is answered with `Connection:
/// close` before the server closes it; an HTTP/2 connection's next request
/// is answered, then GOAWAY sends the client elsewhere. Both long before the
/// 60 s delay ends.
#[tokio::test]
async fn shutdown_closes_connections_only_after_telling_the_client() {
    let mut p = Proc::spawn(&["--shutdown-delay", "60s"]);
    p.server.wait_ready(Duration::from_secs(10)).await;
    let (addr, ca) = (p.addr(), p.certs.ca_pem.clone());
    let review = sample_review().to_string();
    let mut h1 = raw_tls_alpn(addr, &ca, b"http/1.1").await;
    assert_eq!(keep_alive_request(&mut h1, &review).await, (200, None));
    let (h2, h2_conn) = h2::client::handshake(raw_tls_alpn(addr, &ca, b"h2").await)
        .await
        .unwrap();
    let h2_conn = tokio::spawn(h2_conn);
    let h2_request = |h2: h2::client::SendRequest<bytes::Bytes>| {
        let review = review.clone();
        async move {
            let mut h2 = h2.ready().await?;
            let req = hyper::Request::post("/validate")
                .header("content-type", "application/json")
                .body(())
                .unwrap();
            let (resp, mut send) = h2.send_request(req, false)?;
            send.send_data(bytes::Bytes::from(review), true)?;
            Ok::<_, h2::Error>(resp.await?.status().as_u16())
        }
    };
    assert_eq!(h2_request(h2.clone()).await.unwrap(), 200);

    p.server.signal(libc::SIGTERM);
    wait_unready(&p.server.metrics_url("/readyz")).await;
    // The idle keep-alive connection was not closed under the client: its
    // next request is answered, and the answer says the connection closes.
    assert_eq!(
        keep_alive_request(&mut h1, &review).await,
        (200, Some("close".to_owned()))
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), h1.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the server closes the HTTP/1.1 connection after that answer: {read:?}"
    );
    // HTTP/2: the next request is answered, then GOAWAY ends the connection.
    assert_eq!(h2_request(h2.clone()).await.unwrap(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(20), h2_conn)
        .await
        .expect("GOAWAY closes the HTTP/2 connection during the delay")
        .unwrap();
    assert!(ended.is_ok(), "a graceful close: {ended:?}");
    // New connections are still served during the delay.
    let mut fresh = raw_tls_alpn(addr, &ca, b"http/1.1").await;
    assert_eq!(
        keep_alive_request(&mut fresh, &review).await,
        (200, Some("close".to_owned()))
    );
    p.server.signal(libc::SIGTERM);
    wait_exit(p.child(), Duration::from_secs(20)).expect("second signal exits at once");
}

#[tokio::test]
async fn second_signal_exits_immediately() {
    let mut p = Proc::spawn(&["--shutdown-delay", "60s"]);
    p.server.wait_ready(Duration::from_secs(10)).await;
    p.server.signal(libc::SIGTERM);
    // The first signal was handled: readiness fails, the process stays.
    let readyz = p.server.metrics_url("/readyz");
    wait_unready(&readyz).await;
    assert!(
        p.child().try_wait().unwrap().is_none(),
        "still serving during the delay"
    );
    p.server.signal(libc::SIGTERM);
    // Far sooner than the 60 s delay.
    let status =
        wait_exit(p.child(), Duration::from_secs(20)).expect("second signal exits at once");
    assert_eq!(status.code(), Some(130));
}

#[tokio::test]
async fn bad_input_is_logged_at_warn() {
    let mut p = Proc::spawn(&[]);
    p.server.wait_ready(Duration::from_secs(10)).await;
    p.post_malformed_review().await;
    let logs = p.logs();
    assert!(
        logs.iter()
            .any(|l| l["level"] == "WARN" && l["message"] == "bad admission request"),
        "{logs:#?}"
    );
}

/// Logs go to a pipe in a pod (`kubectl logs`): plain text, no colour codes.
#[tokio::test]
async fn text_logs_carry_no_colour_codes_into_a_pipe() {
    let mut p = Proc::spawn_logging("text", &[]);
    p.server.wait_ready(Duration::from_secs(10)).await;
    p.post_malformed_review().await;
    let lines = p.stderr.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("bad admission request")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains('\x1b')), "{lines:#?}");
}

/// Over one HTTP/2 connection, bodies waiting for the byte budget must not
/// take the flow-control window the admitted body needs. The client sends
/// the waiting streams' data first, as the API server's Go client may. With
/// hyper's default windows (1 MiB for a stream and for the connection) the
/// five waiting 600 KB bodies absorb the connection window and the
/// admitted review stalls until its deadline (408): seen failing that way
/// on 2026-12-04 with the window settings of `src/server/listener.rs`
/// removed. Two waiting bodies were not enough: the h2 client shares the
/// window among the streams, and the admitted one still got through.
#[tokio::test]
async fn waiting_http2_bodies_do_not_stall_the_admitted_one() {
    let mut big = sample_review();
    big["request"]["object"]["metadata"]["annotations"]["padding"] = "x".repeat(600 * 1024).into();
    let body = bytes::Bytes::from(big.to_string());
    let mut flags = standalone_flags();
    flags.extend(["--max-body-bytes-in-flight".into(), body.len().to_string()]);
    let server = TestServer::start(&flags).await;

    let tls = raw_tls_alpn(server.addr, &server.certs.ca_pem, b"h2").await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    // Six reviews: the first one's headers arrive first, so it is the one
    // admitted; the other five wait for the budget.
    let mut streams = Vec::new();
    for i in 0..6 {
        let mut client = client.clone().ready().await.unwrap();
        let req = hyper::Request::post("/validate?timeout=10s")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(())
            .unwrap();
        streams.push(client.send_request(req, false).unwrap());
        if i == 0 {
            wait_until(
                "the first review admitted",
                Duration::from_secs(10),
                || async { in_flight(&server).await == 1.0 },
            )
            .await;
        }
    }
    // Queue the waiting reviews' bodies before the admitted one's.
    for (_, send) in streams.iter_mut().rev() {
        send.send_data(body.clone(), true).unwrap();
    }
    // A stall lasts until the deadline (8.95 s) and ends in 408s: every
    // review answered 200 is the proof, whatever the clock says.
    for (resp, _) in streams {
        let resp = tokio::time::timeout(HANG, resp)
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    server.stop().await;
}
