//! Promises of the README and the flag table, end to end: the real binary
//! (`serve` as a child process on loopback port 0), real TLS, and for cluster
//! mode the in-process fake API server. Each test fails if its promise breaks.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::fake_api::{realistic_vm, uid, Down, FakeApi, Res};
use support::{
    bin_command, fixture_objects, fixtures, metric, post_json, read_json, review, sample_review,
    serve_command, standalone_flags, tls_post, wait_until, Certs, Spawned, CONTROLLER,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `serve` with `args` and `env` (every other `REBOOT_WEBHOOK_*` variable
/// removed by `serve_command`).
fn spawn(certs: &Certs, args: &[impl AsRef<std::ffi::OsStr>], env: &[(&str, &str)]) -> Spawned {
    let mut cmd = serve_command(certs);
    cmd.args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stderr(Stdio::null());
    Spawned::start(&mut cmd, Duration::from_secs(30))
}

/// `serve` standalone: the gate on, VMs from the fixtures, plus `extra`.
fn spawn_standalone(certs: &Certs, extra: &[&str]) -> Spawned {
    let mut args = standalone_flags();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    spawn(certs, &args, &[])
}

/// POSTs `body` as JSON; the status and the parsed answer.
async fn post(certs: &Certs, url: &str, body: &Value) -> (u16, Value) {
    post_json(
        &support::client(&certs.ca_pem, false),
        url,
        body.to_string(),
    )
    .await
}

/// Every fixture of `dir` with its endpoint and expected answer.
fn fixture_cases(dir: &str) -> Vec<(String, &'static str, Value, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(fixtures().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.ends_with(".json") && !n.ends_with(".expected.json")
        })
        .collect();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap().to_owned();
        let endpoint = if name.ends_with(".mutate.json") {
            "/mutate"
        } else {
            "/validate"
        };
        let mut want = read_json(&f.with_extension("expected.json"));
        // The decoded copy is the fixture's, not the server's.
        if let Some(r) = want["response"].as_object_mut() {
            r.remove("patchDecoded");
        }
        out.push((name, endpoint, read_json(&f), want));
    }
    out
}

/// `--mode warn`: every policy denial of the enforce-mode fixtures becomes an
/// allowed answer whose warnings are the enforce warnings followed by one
/// "would be denied (warn mode): FIELD: MESSAGE" per cause, and whose audit
/// annotation `denied` becomes `would-deny`; everything else is answered
/// exactly as in enforce mode.
#[tokio::test]
async fn warn_mode_turns_every_policy_denial_into_warnings() {
    let certs = Certs::new();
    let server = spawn_standalone(&certs, &["--mode", "warn"]);
    let mut denials = 0;
    for dir in ["gate-on"] {
        for (name, endpoint, review, enforce) in fixture_cases(dir) {
            let (status, got) = post(&certs, &server.url(endpoint), &review).await;
            assert_eq!(status, 200, "{name}: {got}");
            let mut want = enforce.clone();
            let r = &enforce["response"];
            if r["allowed"] == false {
                denials += 1;
                let mut warnings: Vec<Value> = r
                    .get("warnings")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for c in r["status"]["details"]["causes"].as_array().unwrap() {
                    warnings.push(json!(format!(
                        "would be denied (warn mode): {}: {}",
                        c["field"].as_str().unwrap(),
                        c["message"].as_str().unwrap()
                    )));
                }
                want["response"] = json!({"uid": r["uid"], "allowed": true, "warnings": warnings});
                // The audit log still says what would have been denied.
                if let Some(denied) = r.get("auditAnnotations").and_then(|a| a.get("denied")) {
                    want["response"]["auditAnnotations"] = json!({ "would-deny": denied });
                }
            }
            assert_eq!(got, want, "{name}");
        }
    }
    assert!(
        denials >= 8,
        "the fixtures hold denials to soften: {denials}"
    );
}

/// A VMI CREATE by `user` in `groups`, owned by VM `owner`, with the
/// BootOnce annotation already on it.
fn vmi_create(ns: &str, owner: &str, owner_uid: &str, user: &str, groups: &[&str]) -> Value {
    let vmi = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": owner, "namespace": ns,
            "annotations": {"runstrategy.kubevirt.io": "BootOnce"},
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "name": owner, "uid": owner_uid, "controller": true}]},
        "spec": {"domain": {"devices": {}}}
    });
    let mut r = review("VirtualMachineInstance", "CREATE", &vmi, None);
    r["request"]["userInfo"] = json!({"username": user, "groups": groups});
    r
}

/// In cluster mode with the API unreachable, a VMI whose owner is not
/// cached cannot be stamped: `--mode warn` keeps that mutation a denial
/// (a BootOnce VM must never boot without its annotation), while policy
/// denials on /validate are still softened. `cache_synced` reports both
/// caches once their lists are in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_mode_keeps_the_unreadable_owner_a_denial() {
    let fake = FakeApi::start().await;
    fake.enable_gate();
    fake.apply(
        Res::Vm,
        realistic_vm("tenant-a", "cached", &uid(1), "BootOnce"),
    );
    let kubeconfig = fake.kubeconfig();
    let certs = Certs::new();
    let kc = kubeconfig.path().display().to_string();
    let server = spawn(&certs, &["--mode", "warn", "--kubeconfig", &kc], &[]);
    for cache in ["kubevirt", "virtualmachines"] {
        let series = format!("kubevirt_reboot_webhook_cache_synced{{cache=\"{cache}\"}}");
        wait_until(&series, Duration::from_secs(30), || async {
            metric(server.metrics_addr, &series).await == 1.0
        })
        .await;
    }
    let (status, _) = reqwest_status(&server.metrics_url("/readyz")).await;
    assert_eq!(status, 200, "ready once both caches are synced");

    // The cached owner is stamped as usual.
    let (_, got) = post(
        &certs,
        &server.url("/mutate"),
        &vmi_create("tenant-a", "cached", &uid(1), CONTROLLER, &[]),
    )
    .await;
    assert_eq!(got["response"]["allowed"], true, "{got}");

    fake.set_down(Down::Refuse);
    let (status, got) = post(
        &certs,
        &server.url("/mutate?timeout=5s"),
        &vmi_create("tenant-a", "missing", &uid(2), CONTROLLER, &[]),
    )
    .await;
    assert_eq!(status, 200);
    let r = &got["response"];
    assert_eq!(r["allowed"], false, "warn mode keeps this denial: {got}");
    assert_eq!(r["status"]["code"], 422);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("metadata.ownerReferences: the owner VirtualMachine could not be read (")
            && msg.ends_with(
                "so it is unknown whether this VMI must carry runstrategy.kubevirt.io: BootOnce; retry the request"
            ),
        "{msg}"
    );
    assert!(r.get("patch").is_none(), "{got}");
    assert_eq!(
        metric(
            server.metrics_addr,
            "kubevirt_reboot_webhook_errors_total{class=\"owner_unavailable\"}"
        )
        .await,
        1.0
    );

    // The same forged annotation on /validate by a user: softened to warnings.
    let (_, got) = post(
        &certs,
        &server.url("/validate"),
        &vmi_create("tenant-a", "missing", &uid(2), "alice", &[]),
    )
    .await;
    assert_eq!(got["response"]["allowed"], true, "{got}");
    let warnings = got["response"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{got}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("would be denied (warn mode): metadata.annotations: "),
        "{got}"
    );
}

async fn reqwest_status(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.expect("GET");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// `--trusted-user`, `--trusted-group` and `--kubevirt-namespace`: who may
/// create a VMI carrying the reserved annotation without a BootOnce owner.
#[tokio::test]
async fn trusted_users_groups_and_the_kubevirt_namespace() {
    let certs = Certs::new();
    let objects = fixture_objects();
    let gates = [
        "--feature-gates",
        "RecreateVMIOnReboot",
        "--objects",
        &objects,
    ];
    let default = spawn(&certs, &gates, &[]);
    let mut args = gates.to_vec();
    args.extend([
        "--trusted-user",
        "ci-bot",
        "--trusted-group",
        "platform-admins",
        "--kubevirt-namespace",
        "virt",
    ]);
    let configured = spawn(&certs, &args, &[]);
    // The annotation on a VMI without a BootOnce owner (no such VM).
    let allowed = |server: &Spawned, user: &'static str, groups: &'static [&'static str]| {
        let review = vmi_create("default", "nobody", &uid(9), user, groups);
        let url = server.url("/validate");
        let certs = &certs;
        async move {
            let (status, got) = post(certs, &url, &review).await;
            assert_eq!(status, 200, "{got}");
            got["response"]["allowed"].as_bool().unwrap()
        }
    };
    let sa = |ns: &str| format!("system:serviceaccount:{ns}:kubevirt-controller");
    let sa_kubevirt: &'static str = sa("kubevirt").leak();
    let sa_virt: &'static str = sa("virt").leak();
    // (user, groups, allowed by default, allowed with the flags)
    let rows: [(&str, &[&str], bool, bool); 6] = [
        ("alice", &["system:authenticated"], false, false),
        ("ci-bot", &[], false, true),
        ("bob", &["platform-admins"], false, true),
        ("bob", &["platform-viewers"], false, false),
        (sa_kubevirt, &["system:serviceaccounts"], true, false),
        (sa_virt, &["system:serviceaccounts"], false, true),
    ];
    for (user, groups, by_default, with_flags) in rows {
        assert_eq!(
            allowed(&default, user, groups).await,
            by_default,
            "{user} {groups:?} without flags"
        );
        assert_eq!(
            allowed(&configured, user, groups).await,
            with_flags,
            "{user} {groups:?} with --trusted-user ci-bot --trusted-group platform-admins --kubevirt-namespace virt"
        );
    }
}

/// Every flag reads `REBOOT_WEBHOOK_<FLAG>`: the same server configured by
/// the environment alone (lists comma separated), as a Deployment's `env`.
#[tokio::test]
async fn environment_variables_configure_serve() {
    let certs = Certs::new();
    let (cert, key) = (certs.cert(), certs.key());
    let objects = fixture_objects();
    let mut cmd = bin_command();
    cmd.arg("serve").stderr(Stdio::null());
    cmd.envs([
        ("REBOOT_WEBHOOK_LISTEN", "127.0.0.1:0"),
        ("REBOOT_WEBHOOK_METRICS_LISTEN", "127.0.0.1:0"),
        ("REBOOT_WEBHOOK_TLS_CERT", cert.to_str().unwrap()),
        ("REBOOT_WEBHOOK_TLS_KEY", key.to_str().unwrap()),
        ("REBOOT_WEBHOOK_FEATURE_GATES", "LiveMigration,RebootPolicy"),
        ("REBOOT_WEBHOOK_OBJECTS", &objects),
        ("REBOOT_WEBHOOK_MODE", "warn"),
        ("REBOOT_WEBHOOK_TRUSTED_USER", "ci-bot,release-bot"),
        ("REBOOT_WEBHOOK_KUBEVIRT_NAMESPACE", "virt"),
        ("REBOOT_WEBHOOK_LOG_FORMAT", "json"),
    ]);
    let server = Spawned::start(&mut cmd, Duration::from_secs(30));
    // The gate is on (RebootPolicy is in the list), the objects are read.
    let review = read_json(&fixtures().join("gate-on/08-vmi-create-bootonce-owner.mutate.json"));
    let (_, got) = post(&certs, &server.url("/mutate"), &review).await;
    assert!(got["response"]["patch"].is_string(), "{got}");
    assert_eq!(
        metric(
            server.metrics_addr,
            "kubevirt_reboot_webhook_feature_gate_enabled"
        )
        .await,
        1.0
    );
    // Warn mode: a denial becomes warnings.
    let review = sample_review();
    let (_, got) = post(&certs, &server.url("/validate"), &review).await;
    assert_eq!(got["response"]["allowed"], true, "{got}");
    assert_eq!(got["response"]["warnings"].as_array().unwrap().len(), 1);
    // Both trusted users, and the service account of the namespace given.
    let cr = "system:serviceaccount:virt:kubevirt-controller";
    for user in ["ci-bot", "release-bot", cr] {
        let (_, got) = post(
            &certs,
            &server.url("/validate"),
            &vmi_create("default", "nobody", &uid(9), user, &[]),
        )
        .await;
        assert_eq!(got["response"]["allowed"], true, "{user}: {got}");
        assert!(got["response"].get("warnings").is_none(), "{user}: {got}");
    }
    let (_, got) = post(
        &certs,
        &server.url("/validate"),
        &vmi_create("default", "nobody", &uid(9), "mallory", &[]),
    )
    .await;
    assert_eq!(
        got["response"]["warnings"].as_array().unwrap().len(),
        1,
        "{got}"
    );
}

/// The Deployment's container args, run by the real binary: only the
/// listen addresses (loopback port 0 here) and the certificate paths
/// differ. It needs the cluster, so a fake API server stands in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployments_args_start_the_server() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/deployment.yaml"),
    )
    .unwrap();
    let deployment: Value = serde_yaml_ng::from_str(&text).unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let certs = Certs::new();
    let fake = FakeApi::start().await;
    fake.enable_gate();
    let kubeconfig = fake.kubeconfig();
    let mut args: Vec<String> = Vec::new();
    for a in container["args"].as_array().expect("args") {
        let a = a.as_str().unwrap();
        let (flag, _) = a.split_once('=').unwrap_or((a, ""));
        args.push(match flag {
            "--listen" | "--metrics-listen" => format!("{flag}=127.0.0.1:0"),
            "--tls-cert" => format!("--tls-cert={}", certs.cert().display()),
            "--tls-key" => format!("--tls-key={}", certs.key().display()),
            _ => a.to_owned(),
        });
    }
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| Some((v["name"].as_str()?.into(), v["value"].as_str()?.into())))
                .collect()
        })
        .unwrap_or_default();
    args.push(format!("--kubeconfig={}", kubeconfig.path().display()));
    assert_eq!(args[0], "serve", "{args:?}");
    let mut cmd = bin_command();
    cmd.args(&args).envs(env).stderr(Stdio::null());
    let mut server = Spawned::start(&mut cmd, Duration::from_secs(30));
    server.wait_ready(Duration::from_secs(30)).await;
    let review = sample_review();
    let (_, got) = post(&certs, &server.url("/validate"), &review).await;
    assert_eq!(got["response"]["allowed"], false, "{got}");
}

/// A chunked body (no Content-Length) larger than 7 MiB gets a 413 with a
/// JSON Status, counted as payload_too_large; the server keeps serving.
#[tokio::test]
async fn chunked_body_over_seven_mib_is_refused() {
    let certs = Certs::new();
    let server = spawn_standalone(&certs, &[]);
    let mut s = support::raw_tls(server.addr, &certs.ca_pem, b"http/1.1").await;
    s.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b' '; 256 * 1024];
    let mut sent = 0;
    // 7 MiB + 256 KiB in chunks; the server may answer and close early.
    while sent <= 7 * 1024 * 1024 {
        let head = format!("{:x}\r\n", chunk.len());
        if s.write_all(head.as_bytes()).await.is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains("request body is larger than 7340032 bytes (7 MiB), the API server's limit"),
        "{text}"
    );
    assert_eq!(
        metric(
            server.metrics_addr,
            "kubevirt_reboot_webhook_errors_total{class=\"payload_too_large\"}"
        )
        .await,
        1.0
    );
    let review = read_json(&fixtures().join("gate-on/01-vm-bootonce-create.validate.json"));
    let (status, _) = post(&certs, &server.url("/validate"), &review).await;
    assert_eq!(status, 200);
}

/// `--drain-timeout`: after SIGTERM (no delay) a request that never
/// finishes is cut off when the drain timeout expires, and the process
/// exits cleanly then, not before and not never.
#[tokio::test]
async fn drain_timeout_expiry_ends_the_process() {
    let certs = Certs::new();
    let mut server = spawn_standalone(&certs, &["--shutdown-delay", "0s", "--drain-timeout", "2s"]);
    // Half a request, never completed, with a generous API server timeout.
    let mut s = support::raw_tls(server.addr, &certs.ca_pem, b"http/1.1").await;
    s.write_all(b"POST /validate?timeout=30s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    s.flush().await.unwrap();
    let in_flight = "kubevirt_reboot_webhook_requests_in_flight";
    wait_until("the request in flight", Duration::from_secs(10), || async {
        metric(server.metrics_addr, in_flight).await == 1.0
    })
    .await;
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "still running 30 s after SIGTERM with --drain-timeout 2s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_secs(2),
        "exited after {took:?}, before the 2 s drain timeout, with a request in flight"
    );
    // The held connection was closed without an answer.
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("connection closed");
    assert!(
        !String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
        "the cut-off request got an answer"
    );
}

/// `--max-connections`: with two connections open, a third TCP connection
/// is not taken up (no TLS handshake) until one of them closes.
#[tokio::test]
async fn max_connections_holds_further_connections_until_one_closes() {
    let certs = Certs::new();
    let server = spawn_standalone(&certs, &["--max-connections", "2"]);
    let a = support::raw_tls(server.addr, &certs.ca_pem, b"http/1.1").await;
    let _b = support::raw_tls(server.addr, &certs.ca_pem, b"http/1.1").await;
    let (addr, ca) = (server.addr, certs.ca_pem.clone());
    let third = tokio::spawn(async move { support::raw_tls(addr, &ca, b"http/1.1").await });
    // Not taken up while two are open (the kernel queues it meanwhile).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!third.is_finished(), "a third connection was served");
    drop(a);
    let mut c = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("taken up once a connection closed")
        .unwrap();
    let body =
        read_json(&fixtures().join("gate-on/01-vm-bootonce-create.validate.json")).to_string();
    c.write_all(
        format!(
            "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
}

/// The client CA bundle is re-read when it changes: a client certificate
/// from the new CA is accepted without a restart, one from the old CA is
/// then refused at the handshake.
#[tokio::test]
async fn client_ca_is_reloaded() {
    let certs = Certs::new();
    let (old_ca, new_ca) = (
        support::TestCa::new("old client CA"),
        support::TestCa::new("new client CA"),
    );
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, old_ca.pem()).unwrap();
    let objects = fixture_objects();
    let ca_arg = ca_path.display().to_string();
    let server = spawn(
        &certs,
        &[
            "--feature-gates",
            "RecreateVMIOnReboot",
            "--objects",
            &objects,
            "--client-ca",
            &ca_arg,
            "--cert-reload-interval",
            "200ms",
        ],
        &[],
    );
    let body =
        read_json(&fixtures().join("gate-on/01-vm-bootonce-create.validate.json")).to_string();
    let post = |ca: &support::TestCa| {
        let (addr, server_ca, body) = (server.addr, certs.ca_pem.clone(), body.clone());
        let leaf = ca.leaf("kube-apiserver");
        async move { tls_post(addr, &server_ca, Some(leaf), "/validate", &body).await }
    };
    assert_eq!(post(&old_ca).await, Ok(200));
    assert_eq!(
        post(&new_ca).await,
        Err(rustls::AlertDescription::UnknownCA)
    );
    std::fs::write(&ca_path, new_ca.pem()).unwrap();
    wait_until(
        "the new client CA accepted",
        Duration::from_secs(10),
        || {
            let answer = post(&new_ca);
            async move { answer.await == Ok(200) }
        },
    )
    .await;
    assert_eq!(
        post(&old_ca).await,
        Err(rustls::AlertDescription::UnknownCA)
    );
}

const ERROR_CLASSES: [&str; 8] = [
    "bad_request",
    "payload_too_large",
    "unsupported_media_type",
    "deadline_exceeded",
    "overloaded",
    "owner_unavailable",
    "tls_handshake",
    "certificate_reload",
];

/// `errors_total{class}` for every class the README lists, in that order.
async fn error_counts(server: &Spawned) -> Vec<f64> {
    let mut out = Vec::new();
    for class in ERROR_CLASSES {
        let series = format!("kubevirt_reboot_webhook_errors_total{{class=\"{class}\"}}");
        out.push(metric(server.metrics_addr, &series).await);
    }
    out
}

/// Every `errors_total` class the README lists is counted, once, by the
/// failure it names, and by nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_class_counts_its_failure() {
    let fake = FakeApi::start().await;
    fake.enable_gate();
    let kubeconfig = fake.kubeconfig();
    let certs = Certs::new();
    let kc = kubeconfig.path().display().to_string();
    let mut server = spawn(
        &certs,
        &[
            "--kubeconfig",
            &kc,
            "--max-concurrent-requests",
            "1",
            "--cert-reload-interval",
            "200ms",
        ],
        &[],
    );
    server.wait_ready(Duration::from_secs(30)).await;
    let mut want = vec![0.0; ERROR_CLASSES.len()];
    assert_eq!(error_counts(&server).await, want, "{ERROR_CLASSES:?}");
    let bump = |want: &mut Vec<f64>, class: &str| {
        let i = ERROR_CLASSES.iter().position(|c| *c == class).unwrap();
        want[i] += 1.0;
    };
    let good =
        read_json(&fixtures().join("gate-on/01-vm-bootonce-create.validate.json")).to_string();
    let raw = |head: String, body: &'static [u8]| {
        let (addr, ca) = (server.addr, certs.ca_pem.clone());
        async move {
            let mut s = support::raw_tls(addr, &ca, b"http/1.1").await;
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(body).await.unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let head = |query: &str, ct: &str, len: usize| {
        format!("POST /validate{query} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };

    let answer = raw(head("", "application/json", 2), b"{]").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    bump(&mut want, "bad_request");
    assert_eq!(error_counts(&server).await, want, "bad_request");

    let answer = raw(head("", "text/plain", 2), b"{}").await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    bump(&mut want, "unsupported_media_type");
    assert_eq!(error_counts(&server).await, want, "unsupported_media_type");

    let answer = raw(head("", "application/json", 8 << 20), b"{").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    bump(&mut want, "payload_too_large");
    assert_eq!(error_counts(&server).await, want, "payload_too_large");

    // Half a body, then silence past the API server's 2 s.
    let answer = raw(head("?timeout=2s", "application/json", 100), b"{").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    bump(&mut want, "deadline_exceeded");
    assert_eq!(error_counts(&server).await, want, "deadline_exceeded");

    // One review holds the only slot; the next one is turned away.
    let mut held = support::raw_tls(server.addr, &certs.ca_pem, b"http/1.1").await;
    held.write_all(head("?timeout=30s", "application/json", good.len()).as_bytes())
        .await
        .unwrap();
    held.write_all(&good.as_bytes()[..10]).await.unwrap();
    held.flush().await.unwrap();
    let in_flight = "kubevirt_reboot_webhook_requests_in_flight";
    wait_until(
        "the held review admitted",
        Duration::from_secs(10),
        || async { metric(server.metrics_addr, in_flight).await == 1.0 },
    )
    .await;
    let answer = raw(head("?timeout=2s", "application/json", 2), b"{}").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    bump(&mut want, "overloaded");
    assert_eq!(error_counts(&server).await, want, "overloaded");
    held.write_all(&good.as_bytes()[10..]).await.unwrap();
    let mut out = Vec::new();
    let _ = held.read_to_end(&mut out).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));

    fake.set_down(Down::Refuse);
    let (_, got) = post(
        &certs,
        &server.url("/mutate?timeout=5s"),
        &vmi_create("tenant-a", "missing", &uid(2), CONTROLLER, &[]),
    )
    .await;
    assert_eq!(got["response"]["allowed"], false, "{got}");
    bump(&mut want, "owner_unavailable");
    assert_eq!(error_counts(&server).await, want, "owner_unavailable");
    fake.set_down(Down::Up);

    // Not TLS at all.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    bump(&mut want, "tls_handshake");
    wait_until("tls_handshake counted", Duration::from_secs(10), || async {
        error_counts(&server).await == want
    })
    .await;

    // A certificate file that no longer parses: refused (and counted), the
    // old certificate kept.
    std::fs::write(certs.cert(), "not a certificate").unwrap();
    let i = ERROR_CLASSES
        .iter()
        .position(|c| *c == "certificate_reload")
        .unwrap();
    wait_until(
        "certificate_reload counted",
        Duration::from_secs(10),
        || async { error_counts(&server).await[i] >= 1.0 },
    )
    .await;
    let mut got = error_counts(&server).await;
    got[i] = got[i].min(1.0);
    bump(&mut want, "certificate_reload");
    assert_eq!(got, want, "certificate_reload");
    let (status, _) = post(
        &certs,
        &server.url("/validate"),
        &read_json(&fixtures().join("gate-on/01-vm-bootonce-create.validate.json")),
    )
    .await;
    assert_eq!(status, 200, "served with the old certificate");
}

/// `--watch-namespace`: only those namespaces are listed and watched, and
/// cached; an owner elsewhere is read from the API once per lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_caches_only_those_namespaces() {
    let fake = FakeApi::start().await;
    fake.enable_gate();
    for (i, ns) in [(1, "tenant-a"), (2, "tenant-b"), (3, "tenant-c")] {
        fake.apply(Res::Vm, realistic_vm(ns, "vm", &uid(i), "BootOnce"));
    }
    let kubeconfig = fake.kubeconfig();
    let certs = Certs::new();
    let kc = kubeconfig.path().display().to_string();
    let mut server = spawn(
        &certs,
        &[
            "--kubeconfig",
            &kc,
            "--watch-namespace",
            "tenant-a",
            "--watch-namespace",
            "tenant-c",
        ],
        &[],
    );
    server.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(
        metric(
            server.metrics_addr,
            "kubevirt_reboot_webhook_vm_cache_objects"
        )
        .await,
        2.0,
        "tenant-a and tenant-c"
    );
    let seen: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|s| s.res == Some(Res::Vm))
        .map(|s| s.path)
        .collect();
    for ns in ["tenant-a", "tenant-c"] {
        let path = format!("/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines");
        assert!(seen.contains(&path), "{ns} is listed: {seen:?}");
    }
    assert!(
        seen.iter()
            .all(|p| p.contains("/namespaces/tenant-a/") || p.contains("/namespaces/tenant-c/")),
        "only the watched namespaces are read: {seen:?}"
    );

    let stamped = |got: &Value| got["response"]["patch"].is_string();
    let gets = |fake: &FakeApi| {
        fake.requests()
            .iter()
            .filter(|s| s.path.ends_with("/virtualmachines/vm"))
            .count()
    };
    // From the cache: no request.
    let (_, got) = post(
        &certs,
        &server.url("/mutate"),
        &vmi_create("tenant-c", "vm", &uid(3), CONTROLLER, &[]),
    )
    .await;
    assert!(stamped(&got), "{got}");
    assert_eq!(gets(&fake), 0);
    // Outside the watched namespaces: read from the API.
    let (_, got) = post(
        &certs,
        &server.url("/mutate"),
        &vmi_create("tenant-b", "vm", &uid(2), CONTROLLER, &[]),
    )
    .await;
    assert!(stamped(&got), "{got}");
    assert_eq!(gets(&fake), 1);
}
