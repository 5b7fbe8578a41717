//! Shared by the integration tests: certificates, an in-process server with
//! real TLS on loopback port 0, the real binary as a child process (its
//! bound addresses read from its stdout, `REBOOT_WEBHOOK_*` of the test
//! process kept out), an HTTPS client that trusts it, the CLI parsed by
//! clap, AdmissionReview builders and the one patch decoder, and polling
//! (`wait_until`). `fake_api` is an in-process Kubernetes API, `tools` finds
//! kubectl, helm and promtool, `match_conditions` evaluates the webhook
//! configurations' CEL.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory as _, FromArgMatches as _};
use kubevirt_reboot_webhook::cli::{Cli, Command, ServeArgs};
use kubevirt_reboot_webhook::startup::{self, Started};
use serde_json::Value;
use tokio::sync::oneshot;

pub mod fake_api;
pub mod tools;

/// The binary's own command line parser (clap), blind to the environment:
/// `args` (after the program name) alone decide, so no `REBOOT_WEBHOOK_*`
/// variable of whoever runs the tests fills in a flag.
pub fn parse_cli<T: AsRef<str>>(args: &[T]) -> Result<Cli, clap::Error> {
    let cmd = Cli::command().mut_subcommands(|s| s.mut_args(|a| a.env(None)));
    let argv = std::iter::once("kubevirt-reboot-webhook").chain(args.iter().map(AsRef::as_ref));
    Cli::from_arg_matches(&cmd.try_get_matches_from(argv)?)
}

/// `serve ARGS...` parsed by [`parse_cli`]; the error names the arguments.
pub fn serve_args<T: AsRef<str>>(args: &[T]) -> Result<ServeArgs, String> {
    let shown = || args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ");
    match parse_cli(args) {
        Ok(Cli {
            command: Command::Serve(a),
            ..
        }) => Ok(*a),
        Ok(_) => Err(format!("`{}` is not `serve`", shown())),
        Err(e) => Err(format!("`{}` does not parse: {e}", shown())),
    }
}

/// The environment variables that `serve` reads flags from.
pub fn serve_flag_env_names() -> std::collections::BTreeSet<String> {
    Cli::command()
        .find_subcommand("serve")
        .expect("a serve subcommand")
        .get_arguments()
        .filter_map(|a| a.get_env()?.to_str().map(str::to_owned))
        .collect()
}

/// `kubevirt-reboot-webhook serve` as a child process: HTTPS and health /
/// metrics both on loopback port 0 (the kernel picks), TLS from `certs`,
/// stdout piped so that [`Spawned::start`] can read the bound addresses.
pub fn serve_command(certs: &Certs) -> std::process::Command {
    serve_command_for(&certs.cert(), &certs.key())
}

/// [`serve_command`] serving the certificate and key files given.
pub fn serve_command_for(cert: &Path, key: &Path) -> std::process::Command {
    let mut cmd = bin_command();
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key);
    cmd
}

/// The binary as a child process: stdin closed, stdout piped (for
/// [`Spawned::start`]), and none of the test process's `REBOOT_WEBHOOK_*`
/// variables passed on, so the developer's environment cannot change the
/// outcome.
pub fn bin_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kubevirt-reboot-webhook"));
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("REBOOT_WEBHOOK_")) {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    cmd
}

/// A `serve` child process and the addresses it bound; killed when dropped,
/// so a failing test never leaves it behind.
pub struct Spawned {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Where its stderr goes, when started by [`Spawned::start_logged`].
    pub log: Option<PathBuf>,
}

impl Spawned {
    /// Spawns `cmd` (from [`serve_command`]) and waits up to `timeout` for
    /// the line `listening admission=https://ADDR metrics=http://ADDR` that
    /// `serve` prints once both listeners are bound.
    pub fn start(cmd: &mut std::process::Command, timeout: Duration) -> Spawned {
        let mut child = cmd.spawn().expect("spawn kubevirt-reboot-webhook serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep reading after the line, so the child never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(tx) = tx.take_if(|_| line.starts_with("listening ")) {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(timeout) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "serve printed no bound addresses within {timeout:?} ({e}); exit: {status:?}"
                );
            }
        };
        let (addr, metrics_addr) = parse_listening(&line)
            .unwrap_or_else(|| panic!("unexpected address line from serve: {line:?}"));
        Spawned {
            child,
            addr,
            metrics_addr,
            log: None,
        }
    }

    /// [`Spawned::start`] with the child's stderr written to the file `log`.
    pub fn start_logged(cmd: &mut std::process::Command, timeout: Duration, log: &Path) -> Spawned {
        cmd.stderr(std::fs::File::create(log).expect("log file"));
        let mut spawned = Spawned::start(cmd, timeout);
        spawned.log = Some(log.to_owned());
        spawned
    }

    /// The last `n` lines of the log ("" without one).
    pub fn log_tail(&self, n: usize) -> String {
        let text = self
            .log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Polls `/readyz` every 10 ms until it answers 200; panics, with the
    /// log's tail, when the process exits or `timeout` passes first.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let url = self.metrics_url("/readyz");
        let start = std::time::Instant::now();
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("serve exited with {status}:\n{}", self.log_tail(30));
            }
            assert!(
                start.elapsed() < timeout,
                "serve not ready after {timeout:?}:\n{}",
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process from this one.
    pub fn signal(&self, signal: libc::c_int) {
        use rustix::process::{kill_process, Pid, Signal};
        let pid = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw);
        let pid = pid.expect("a child's pid");
        let sig = Signal::from_named_raw(signal).expect("a named signal");
        // kill(2) with our own child's pid; it is not reaped before `self`
        // drops, so the pid cannot have been reused.
        if let Err(e) = kill_process(pid, sig) {
            panic!("kill({}, {signal}): {e}", pid.as_raw_pid());
        }
    }

    /// `https://localhost:PORT{path}` (the certificates name localhost).
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics_addr)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `listening admission=https://A metrics=http://B` → (A, B).
pub fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("listening admission=https://")?;
    let (addr, metrics) = rest.split_once(" metrics=http://")?;
    Some((addr.parse().ok()?, metrics.trim().parse().ok()?))
}

/// Development certificates written into a temporary directory.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        kubevirt_reboot_webhook::certs::write(dir.path(), &hosts).expect("certs");
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).expect("ca");
        Certs { dir, ca_pem }
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }
}

/// The repository's `tests/fixtures` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The repository's `examples` directory.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The VirtualMachines the fixtures' VMIs are owned by, for `--objects`.
pub fn fixture_objects() -> String {
    fixtures().join("objects").display().to_string()
}

/// `serve` flags for a standalone server as the fixtures expect it: the
/// gate on, VMs read from [`fixture_objects`].
pub fn standalone_flags() -> Vec<String> {
    vec![
        "--feature-gates".into(),
        "RecreateVMIOnReboot".into(),
        "--objects".into(),
        fixture_objects(),
    ]
}

/// A number not handed out before in this test process, for review uids.
pub fn serial() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// An AdmissionReview of `operation` on `object` (a `kind` of
/// kubevirt.io/v1, name and namespace from its metadata; `default` without
/// one) by the user alice, with `old` as `oldObject` and a fresh uid.
pub fn review(kind: &str, operation: &str, object: &Value, old: Option<&Value>) -> Value {
    let meta = &object["metadata"];
    let mut review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{:012}", serial()),
            "kind": {"group": "kubevirt.io", "version": "v1", "kind": kind},
            "resource": {"group": "kubevirt.io", "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "name": meta["name"],
            "namespace": meta["namespace"].as_str().unwrap_or("default"),
            "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object,
            "dryRun": false
        }
    });
    if let Some(old) = old {
        review["request"]["oldObject"] = old.clone();
    }
    review
}

/// KubeVirt's controller: the user virt-controller creates VMIs as.
pub const CONTROLLER: &str = "system:serviceaccount:kubevirt:kubevirt-controller";

/// A VM CREATE that `/validate` denies (`rebootPolicy: terminate`, lower case).
pub fn sample_review() -> Value {
    read_json(&fixtures().join("gate-on/02-vm-lowercase-terminate.validate.json"))
}

/// POSTs `body` as JSON to `url`; the status and the answer (parsed as JSON
/// when it is, else kept as a string).
pub async fn post_json(client: &reqwest::Client, url: &str, body: String) -> (u16, Value) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The JSONPatch of an AdmissionResponse (its base64 `patch`), decoded;
/// `None` when it carries none, an error when it is not base64 JSON.
pub fn decoded_patch(response: &Value) -> Result<Option<Value>, String> {
    use base64::Engine as _;
    let Some(patch) = response.get("patch") else {
        return Ok(None);
    };
    let b64 = patch
        .as_str()
        .ok_or_else(|| format!("patch is not a string: {patch}"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| format!("patch is not JSON: {e}"))
}

/// The patch that stamps the VMI of a BootOnce VM as virt-controller
/// creates it ([`fake_api::realistic_vmi_create`]: with annotations, so the
/// reserved one is added to them).
pub fn bootonce_stamp() -> Value {
    serde_json::json!([
        {"op": "add", "path": "/metadata/annotations/runstrategy.kubevirt.io", "value": "BootOnce"},
        {"op": "add", "path": "/spec/domain/rebootPolicy", "value": "Terminate"}
    ])
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A server started in-process; stops (SIGTERM-like) when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub certs: Certs,
    pub client: reqwest::Client,
    pub started: Started,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// Starts `serve` with these extra flags (TLS and ports are filled in).
    pub async fn start(extra: &[impl AsRef<str>]) -> TestServer {
        let certs = Certs::new();
        let (cert, key) = (certs.cert(), certs.key());
        Self::start_with_files(certs, &cert, &key, extra).await
    }

    /// Serves `cert`/`key` instead of the pair in `certs` (whose CA the client trusts).
    pub async fn start_with_files(
        certs: Certs,
        cert: &Path,
        key: &Path,
        extra: &[impl AsRef<str>],
    ) -> TestServer {
        let mut argv: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--shutdown-delay".into(),
            "0s".into(),
            "--cert-reload-interval".into(),
            "200ms".into(),
        ];
        argv.extend(extra.iter().map(|s| s.as_ref().to_owned()));
        let args = serve_args(&argv).unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = oneshot::channel::<()>();
        let started = startup::start(args, async move {
            let _ = rx.await;
        })
        .await
        .expect("server starts");
        let client = client(&certs.ca_pem, false);
        TestServer {
            addr: started.addr,
            metrics_addr: started.metrics_addr,
            certs,
            client,
            started,
            stop: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics_addr)
    }

    /// POSTs a JSON body; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        post_json(&self.client, &self.url(path), body.to_string()).await
    }

    /// One sample from `/metrics`, 0 when the series is absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(self.metrics_addr, series).await
    }

    pub async fn get_text(&self, url: &str) -> (u16, String) {
        let resp = reqwest::get(url).await.expect("get");
        (resp.status().as_u16(), resp.text().await.expect("text"))
    }

    /// Triggers graceful shutdown and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.started.task).await;
    }
}

/// One sample from the `/metrics` page on `metrics_addr` (`series` with its
/// labels, as printed), 0 when the series is absent.
pub async fn metric(metrics_addr: SocketAddr, series: &str) -> f64 {
    let resp = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().expect("metric value"))
        })
        .unwrap_or(0.0)
}

/// Polls `f` every 20 ms until it is true; panics after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POSTs `body` to `path` over a new TLS connection (HTTP/1.1) presenting
/// `identity` (certificate and key PEM) as client certificate; the HTTP status, or the TLS alert the
/// server refused the handshake with. Panics on any other failure.
pub async fn tls_post(
    addr: SocketAddr,
    server_ca: &str,
    identity: Option<(String, String)>,
    path: &str,
    body: &str,
) -> Result<u16, rustls::AlertDescription> {
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let alert = |e: std::io::Error| -> rustls::AlertDescription {
        match e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(a)) => *a,
            _ => panic!("not a TLS handshake refusal: {e:?}"),
        }
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // With TLS 1.3 the client's side of the handshake ends before the server
    // has judged its certificate: the alert arrives on the first read.
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .map_err(alert)?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A refused client may see the alert already on the write.
    s.write_all(req.as_bytes()).await.map_err(alert)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(alert)?;
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}")))
}

/// A CA and a way to issue leaves (and intermediates) from it.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap())
                .unwrap(),
        }
    }
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }
    pub fn intermediate(&self, name: &str) -> TestCa {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        TestCa {
            issuer: rcgen::CertifiedIssuer::signed_by(
                p,
                rcgen::KeyPair::generate().unwrap(),
                &self.issuer,
            )
            .unwrap(),
        }
    }
    /// (certificate PEM, key PEM) for `cn` with SANs localhost/127.0.0.1.
    pub fn leaf(&self, cn: &str) -> (String, String) {
        let mut p =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A raw TLS connection offering only `alpn`.
pub async fn raw_tls(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        let c: rustls::pki_types::CertificateDer<'static> = c.unwrap();
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// An HTTPS client trusting `ca_pem`; `http1` forces HTTP/1.1, else ALPN picks h2.
pub fn client(ca_pem: &str, http1: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca pem");
    let b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca);
    let b = if http1 { b.http1_only() } else { b };
    b.build().expect("client")
}

/// `Mutex::lock` that shrugs off poisoning: a thread that panicked while
/// holding the lock has failed its test already.
pub trait LockUnpoisoned<T> {
    fn lock_unpoisoned(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T> LockUnpoisoned<T> for std::sync::Mutex<T> {
    fn lock_unpoisoned(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// xorshift64*: reproducible picks for the load tests without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next pick below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
