//! The real server over real TLS on a loopback port: AdmissionReview
//! fixtures in, full responses compared; bad bodies; `check` parity.
//!
//! Fixtures live in `tests/fixtures/gate-{on,off}/NN-name.{validate,mutate}.json`
//! with the expected response beside each as `*.expected.json`. An expected
//! file is the server's answer verbatim, plus `response.patchDecoded`: the
//! base64 `patch` decoded, so a fixture diff can be read (the test checks
//! that it matches `patch`). To refresh the expected files after an intended
//! change: `UPDATE_FIXTURES=1 cargo test --test server`; the run rewrites
//! them and fails with "fixtures rewritten", then read the diff and rerun.
//! Any other value of `UPDATE_FIXTURES` is refused, so a stray `=0` cannot
//! turn the comparisons off.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::{
    bin_command, decoded_patch, examples, fixture_objects, fixtures, read_json, sample_review,
    standalone_flags, TestServer,
};

/// How many request fixtures each directory holds: a file that goes missing
/// (or one added without its expected answer being thought about) fails.
const FIXTURE_COUNTS: [(&str, usize); 2] = [("gate-on", 18), ("gate-off", 4)];

fn fixture_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.ends_with(".json") && !n.ends_with(".expected.json")
        })
        .collect();
    files.sort();
    let want = FIXTURE_COUNTS
        .iter()
        .find(|(d, _)| *d == dir)
        .map(|(_, n)| *n)
        .unwrap_or_else(|| panic!("no fixture count for {dir}"));
    assert_eq!(
        files.len(),
        want,
        "{dir}: {files:#?}; update FIXTURE_COUNTS when adding a fixture"
    );
    files
}

/// Whether this run rewrites the expected files: only `UPDATE_FIXTURES=1`.
fn updating_fixtures() -> bool {
    match std::env::var("UPDATE_FIXTURES") {
        Err(std::env::VarError::NotPresent) => false,
        Ok(v) if v == "1" => true,
        other => panic!(
            "UPDATE_FIXTURES={other:?}: set it to 1 to rewrite the expected files, or unset it to compare"
        ),
    }
}

/// The answer as stored in an expected file: with `response.patchDecoded`
/// beside a base64 `patch`.
fn with_decoded_patch(mut answer: Value) -> Value {
    if let Some(ops) = decoded_patch(&answer["response"]).unwrap_or_else(|e| panic!("{e}")) {
        answer["response"]["patchDecoded"] = ops;
    }
    answer
}

fn endpoint_of(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".mutate.json") {
        "/mutate"
    } else {
        assert!(
            name.ends_with(".validate.json"),
            "{name}: endpoint not in the name"
        );
        "/validate"
    }
}

fn expected_path(path: &Path) -> PathBuf {
    path.with_extension("expected.json")
}

async fn run_fixtures(server: &TestServer, dir: &str) {
    let update = updating_fixtures();
    let mut rewritten = Vec::new();
    for f in fixture_files(dir) {
        let review = read_json(&f);
        let (status, got) = server.post(endpoint_of(&f), &review).await;
        assert_eq!(status, 200, "{}: {got}", f.display());
        // The protocol basics hold for every fixture, whatever the verdict.
        assert_eq!(got["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(got["kind"], "AdmissionReview");
        assert_eq!(got["response"]["uid"], review["request"]["uid"]);
        let got = with_decoded_patch(got);
        let exp_path = expected_path(&f);
        if update {
            let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
            if std::fs::read_to_string(&exp_path).ok().as_deref() != Some(text.as_str()) {
                std::fs::write(&exp_path, text).unwrap();
                rewritten.push(exp_path.display().to_string());
            }
            continue;
        }
        let want = read_json(&exp_path);
        assert_eq!(got, want, "{}: full response differs", f.display());
    }
    assert!(
        !update,
        "fixtures rewritten ({} changed: {rewritten:#?}), review the diff and rerun without UPDATE_FIXTURES",
        rewritten.len()
    );
}

#[tokio::test]
async fn fixtures_gate_on_over_http2_and_http1() {
    let flags = standalone_flags();
    let mut server = TestServer::start(&flags).await;
    // ALPN negotiates HTTP/2 with a client that offers it.
    let resp = server
        .client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(read_json(&fixture_files("gate-on")[0]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    run_fixtures(&server, "gate-on").await;

    server.client = support::client(&server.certs.ca_pem, true);
    let resp = server
        .client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(read_json(&fixture_files("gate-on")[0]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    run_fixtures(&server, "gate-on").await;
    server.stop().await;
}

#[tokio::test]
async fn fixtures_gate_off_with_upstream_gate_name_listed_elsewhere() {
    // "LiveMigration" only: the gate is off.
    let objects = fixture_objects();
    let server =
        TestServer::start(&["--feature-gates", "LiveMigration", "--objects", &objects]).await;
    run_fixtures(&server, "gate-off").await;
    server.stop().await;
}

#[tokio::test]
async fn upstream_gate_name_enables_the_feature() {
    let objects = fixture_objects();
    let server =
        TestServer::start(&["--feature-gates", "RebootPolicy", "--objects", &objects]).await;
    let review = read_json(&fixtures().join("gate-off/01-vm-terminate-gate-off.validate.json"));
    let (status, got) = server.post("/validate", &review).await;
    assert_eq!(status, 200);
    assert_eq!(got["response"]["allowed"], true, "{got}");
    server.stop().await;
}

#[tokio::test]
async fn dry_run_is_judged_like_a_real_request() {
    let flags = standalone_flags();
    let server = TestServer::start(&flags).await;
    let real = sample_review();
    let mut dry = real.clone();
    dry["request"]["dryRun"] = json!(true);
    let (_, a) = server.post("/validate", &real).await;
    let (_, b) = server.post("/validate", &dry).await;
    assert_eq!(a["response"]["allowed"], false);
    assert_eq!(a, b);
    server.stop().await;
}

async fn raw_post(server: &TestServer, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = server.client.post(server.url("/validate")).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req
        .send()
        .await
        .expect("request is answered, connection not dropped");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

#[tokio::test]
async fn bad_bodies_get_clear_errors_and_the_server_keeps_serving() {
    let flags = standalone_flags();
    let server = TestServer::start(&flags).await;
    let good = sample_review();
    let mut no_uid = good.clone();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut no_op = good.clone();
    no_op["request"]
        .as_object_mut()
        .unwrap()
        .remove("operation");
    let mut no_kind = good.clone();
    no_kind["request"].as_object_mut().unwrap().remove("kind");
    let mut v1beta1 = good.clone();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_request = good.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut bad_op = good.clone();
    bad_op["request"]["operation"] = json!("PATCH");
    let json = Some("application/json");
    // name, content type, body, expected status, part of the error message
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "not JSON",
            json,
            b"hello".to_vec(),
            400,
            "not a JSON AdmissionReview",
        ),
        ("empty", json, Vec::new(), 400, "not a JSON AdmissionReview"),
        (
            "truncated",
            json,
            good.to_string().as_bytes()[..100].to_vec(),
            400,
            "not a JSON AdmissionReview",
        ),
        (
            "JSON array",
            json,
            b"[1,2]".to_vec(),
            400,
            "not a JSON AdmissionReview",
        ),
        (
            "no request",
            json,
            no_request.to_string().into_bytes(),
            400,
            "AdmissionReview has no",
        ),
        (
            "no uid",
            json,
            no_uid.to_string().into_bytes(),
            400,
            "request.uid is missing",
        ),
        (
            "no operation",
            json,
            no_op.to_string().into_bytes(),
            400,
            "request.operation is missing",
        ),
        (
            "no kind",
            json,
            no_kind.to_string().into_bytes(),
            400,
            "request.kind is missing",
        ),
        (
            "unknown operation",
            json,
            bad_op.to_string().into_bytes(),
            400,
            "PATCH",
        ),
        (
            "v1beta1",
            json,
            v1beta1.to_string().into_bytes(),
            400,
            "apiVersion must be \\\"admission.k8s.io/v1\\\"",
        ),
        (
            "text/plain",
            Some("text/plain"),
            good.to_string().into_bytes(),
            415,
            "Content-Type must be application/json",
        ),
        (
            "no content type",
            None,
            good.to_string().into_bytes(),
            415,
            "Content-Type is missing",
        ),
        (
            "over 7 MiB",
            json,
            vec![b' '; 7 * 1024 * 1024 + 1],
            413,
            "larger than 7340032 bytes",
        ),
    ];
    for (name, ct, body, want_status, want_msg) in cases {
        let (status, got) = raw_post(&server, ct, body).await;
        assert_eq!(status, want_status, "{name}: {got}");
        assert_eq!(got["kind"], "Status", "{name}");
        assert!(
            got.to_string().contains(want_msg),
            "{name}: {got} lacks {want_msg:?}"
        );
        // The same connection pool still gets good answers.
        let (status, ok) = server.post("/validate", &good).await;
        assert_eq!(status, 200, "{name}: good request after");
        assert_eq!(ok["response"]["uid"], good["request"]["uid"]);
    }
    // Exactly 7 MiB of valid JSON is accepted (the limit is inclusive).
    let mut big = good.clone();
    big["request"]["object"]["metadata"]["annotations"] = json!({"pad": ""});
    let filler = 7 * 1024 * 1024 - big.to_string().len();
    big["request"]["object"]["metadata"]["annotations"] = json!({"pad": "x".repeat(filler)});
    let body = big.to_string().into_bytes();
    assert_eq!(body.len(), 7 * 1024 * 1024);
    let (status, got) = raw_post(&server, json, body).await;
    assert_eq!(status, 200, "{got}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let flags = standalone_flags();
    let server = TestServer::start(&flags).await;
    let resp = server.client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = server
        .client
        .get(server.url("/validate"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let (status, body) = server.get_text(&server.metrics_url("/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = server.get_text(&server.metrics_url("/readyz")).await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// `check --output json` on the same fixtures gives byte-identical responses
/// to the server's, because both call the same decision code.
#[tokio::test]
async fn check_and_server_agree() {
    let flags = standalone_flags();
    let server = TestServer::start(&flags).await;
    let files = fixture_files("gate-on");
    let out = bin_command()
        .arg("check")
        .args(["--output", "json", "--objects"])
        .arg(fixtures().join("objects"))
        .args(&files)
        .output()
        .expect("check runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "some fixtures are denials: exit 1"
    );
    let judged: Vec<Value> = serde_json::from_slice(&out.stdout).expect("check JSON");
    assert_eq!(judged.len(), files.len());
    for (f, j) in files.iter().zip(&judged) {
        let review = read_json(f);
        let endpoint = endpoint_of(f);
        let (_, got) = server.post(endpoint, &review).await;
        let mine = if endpoint == "/mutate" {
            &j["mutation"]
        } else {
            &j["validation"]
        };
        assert_eq!(&got["response"], mine, "{}", f.display());
    }

    // And for plain manifests: check's synthetic CREATE, posted to the server.
    let examples = examples();
    let out = bin_command()
        .args(["check", "--output", "json", "--objects"])
        .arg(&examples)
        .arg(examples.join("installer-vmi.yaml"))
        .arg(examples.join("invalid/bootonce-with-reboot.yaml"))
        .output()
        .unwrap();
    let judged: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(judged.len(), 2);
    assert!(
        judged[0]["mutation"]["patch"].is_string(),
        "the VMI is stamped"
    );
    assert_eq!(judged[1]["validation"]["allowed"], false);
    let server2 = TestServer::start(&[
        "--feature-gates",
        "RecreateVMIOnReboot",
        "--objects",
        examples.to_str().unwrap(),
    ])
    .await;
    let vmi = serde_yaml_ng::from_str::<Value>(
        &std::fs::read_to_string(examples.join("installer-vmi.yaml")).unwrap(),
    )
    .unwrap();
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "00000000-0000-0000-0000-000000000001",
        "kind": {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachineInstance"},
        "namespace": "default", "name": "installer", "operation": "CREATE",
        "userInfo": {"username": "kubernetes-admin"}, "object": vmi, "dryRun": true}});
    let (_, got) = server2.post("/mutate", &review).await;
    assert_eq!(got["response"], judged[0]["mutation"]);
    server2.stop().await;
    server.stop().await;
}
