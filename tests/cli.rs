//! The commands as a user runs them: `certs`, and `check` with its exit
//! codes, stdin and output formats.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::Stdio;

use kubevirt_reboot_webhook::cli::{Cli, Command};
use support::{bin_command, examples};

#[test]
fn certs_writes_a_ca_and_a_serving_certificate_for_the_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin_command()
        .args(["certs", "--out"])
        .arg(dir.path())
        .args(["--host", "hook.example.svc", "--host", "10.0.0.7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    for (f, secret) in [
        ("ca.crt", false),
        ("ca.key", true),
        ("tls.crt", false),
        ("tls.key", true),
    ] {
        let meta = std::fs::metadata(dir.path().join(f)).unwrap_or_else(|_| panic!("{f} written"));
        if secret {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f} is private");
        }
    }
    let pem = std::fs::read(dir.path().join("tls.crt")).unwrap();
    let (_, der) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = der.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    assert!(
        names.iter().any(|n| n.contains("hook.example.svc")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "IPAddress(0a:00:00:07)"),
        "an IP SAN, not a DNS name: {names:?}"
    );
    // The leaf is signed by the CA next to it.
    let ca_pem = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let (_, ca_der) = x509_parser::pem::parse_x509_pem(&ca_pem).unwrap();
    let ca = ca_der.parse_x509().unwrap();
    assert_eq!(cert.issuer(), ca.subject());
}

#[test]
fn check_exit_codes_and_text_output() {
    let ok = bin_command()
        .arg("check")
        .arg(examples().join("bootonce-vm.yaml"))
        .arg(examples().join("terminate-vm.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.contains("VirtualMachine default/installer: allowed"),
        "{text}"
    );
    assert!(
        text.contains("2 objects judged: 2 allowed, 0 denied"),
        "{text}"
    );

    let denied = bin_command()
        .arg("check")
        .arg(examples().join("invalid/bootonce-with-reboot.yaml"))
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(1));
    let text = String::from_utf8_lossy(&denied.stdout);
    assert!(text.contains("DENIED"), "{text}");
    assert!(
        text.contains("denied: spec.running: Invalid value: true"),
        "{text}"
    );
    assert!(
        text.contains("denied: spec.template.spec.domain.rebootPolicy: Invalid value: \"Reboot\""),
        "{text}"
    );

    // The gate off makes the valid examples fail, naming the gate.
    let off = bin_command()
        .args(["check", "--feature-gates", ""])
        .arg(examples().join("terminate-vm.yaml"))
        .output()
        .unwrap();
    assert_eq!(off.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&off.stdout).contains("RecreateVMIOnReboot"));

    // Usage and input errors: exit 2 with a message on stderr.
    let missing = bin_command()
        .args(["check", "/nonexistent/vm.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/vm.yaml"));
    let usage = bin_command().args(["check"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: VirtualMachine\nspec: [unclosed\n").unwrap();
    let bad = bin_command().arg("check").arg(&broken).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("broken.yaml: document 1"));
    // An AdmissionReview the server would answer with 400 is an input error,
    // not an object "not judged".
    let review = dir.path().join("review.json");
    std::fs::write(
        &review,
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"group":"kubevirt.io","version":"v1","kind":"VirtualMachine"},"operation":"CREATE","object":{}}}"#,
    )
    .unwrap();
    let bad = bin_command().arg("check").arg(&review).output().unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("review.json") && stderr.contains("request.uid is missing"),
        "{stderr}"
    );
}

#[test]
fn check_reads_stdin_and_prints_json_responses() {
    let manifest = std::fs::read_to_string(examples().join("bootonce-vm.yaml")).unwrap()
        + "---\n"
        + &std::fs::read_to_string(examples().join("installer-vmi.yaml")).unwrap()
        + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
    let mut child = bin_command()
        .args(["check", "--output", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let judged: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(judged.len(), 2, "the ConfigMap is not judged");
    assert_eq!(judged[0]["source"], "-#1");
    assert_eq!(judged[1]["kind"], "VirtualMachineInstance");
    // The VM in the same stream is the VMI's owner: the VMI gets stamped.
    assert_eq!(judged[1]["mutation"]["patchType"], "JSONPatch");
    assert_eq!(judged[1]["validation"]["allowed"], true);
}

/// `check ARGS FILE...`, run twice: (exit code, the judged objects of
/// `--output json`, the text output).
fn check(args: &[&str], files: &[&std::path::Path]) -> (i32, Vec<serde_json::Value>, String) {
    let json = bin_command()
        .args(["check", "--output", "json"])
        .args(args)
        .args(files)
        .output()
        .unwrap();
    let text = bin_command()
        .arg("check")
        .args(args)
        .args(files)
        .output()
        .unwrap();
    let code = json.status.code().unwrap_or(-1);
    assert_eq!(text.status.code(), Some(code));
    assert!(
        code == 0 || code == 1,
        "exit {code}: {}",
        String::from_utf8_lossy(&json.stderr)
    );
    (
        code,
        serde_json::from_slice(&json.stdout).unwrap(),
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

/// `check --mode warn`, as `serve --mode warn`: denials become warnings
/// and the exit status is 0.
#[test]
fn check_has_the_warn_mode_of_serve() {
    let bad = examples().join("invalid/bootonce-with-reboot.yaml");
    let (code, _, _) = check(&[], &[&bad]);
    assert_eq!(code, 1);
    let (code, judged, text) = check(&["--mode", "warn"], &[&bad]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(judged[0]["validation"]["allowed"], true);
    assert!(
        text.contains("warning: would be denied (warn mode): spec.running: Invalid value: true"),
        "{text}"
    );
    assert!(
        text.contains("1 objects judged: 1 allowed, 0 denied"),
        "{text}"
    );
}

/// A `kubevirt.io/v1alpha3` VirtualMachineInstanceReplicaSet is judged like
/// a v1 one: the API server converts it for the webhook (matchPolicy
/// Equivalent).
#[test]
fn check_judges_a_v1alpha3_replica_set() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vmirs.yaml");
    std::fs::write(
        &f,
        "apiVersion: kubevirt.io/v1alpha3\nkind: VirtualMachineInstanceReplicaSet\n\
         metadata: {name: rs, namespace: default}\n\
         spec: {replicas: 2, template: {spec: {domain: {rebootPolicy: terminate}}}}\n",
    )
    .unwrap();
    let (code, judged, text) = check(&[], &[&f]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(judged[0]["kind"], "VirtualMachineInstanceReplicaSet");
    assert!(
        text.contains(
            r#"denied: spec.template.spec.domain.rebootPolicy: Unsupported value: "terminate""#
        ),
        "{text}"
    );
}

/// Objects in a namespace the installed webhook exempts are not judged (the
/// API server never sends them); `--exempt-namespace` names others, `""`
/// none.
#[test]
fn check_leaves_exempt_namespaces_alone() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vms.yaml");
    let vm = |ns: &str| {
        format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: bad, namespace: {ns}}}\n\
             spec: {{runStrategy: Always, template: {{spec: {{domain: {{rebootPolicy: terminate}}}}}}}}\n"
        )
    };
    std::fs::write(
        &f,
        [
            vm("kube-system"),
            vm("kubevirt-reboot-webhook"),
            vm("tenant"),
        ]
        .join("---\n"),
    )
    .unwrap();
    let (code, judged, text) = check(&[], &[&f]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(judged.len(), 1, "{text}");
    assert_eq!(judged[0]["namespace"], "tenant");
    for ns in ["kube-system", "kubevirt-reboot-webhook"] {
        assert!(
            text.contains(&format!(
                "VirtualMachine {ns}/bad: not judged (namespace {ns} is exempt from the webhook; see --exempt-namespace)"
            )),
            "{text}"
        );
    }
    let (_, judged, _) = check(&["--exempt-namespace", "tenant"], &[&f]);
    let namespaces: Vec<&str> = judged
        .iter()
        .filter_map(|j| j["namespace"].as_str())
        .collect();
    assert_eq!(namespaces, ["kube-system", "kubevirt-reboot-webhook"]);
    let (_, judged, _) = check(&["--exempt-namespace", ""], &[&f]);
    assert_eq!(judged.len(), 3);
}

/// `check`'s default exemptions are the namespaceSelector of both webhook
/// configurations in `manifests/base`: one list, held equal here.
#[test]
fn check_exempts_what_the_manifests_exempt() {
    let Ok(Cli {
        command: Command::Check(args),
    }) = support::parse_cli(&["check", "x.yaml"])
    else {
        panic!("`check x.yaml` does not parse as check");
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["validating-webhook.yaml", "mutating-webhook.yaml"] {
        let text = std::fs::read_to_string(root.join("manifests/base").join(file)).unwrap();
        let config: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        for webhook in config["webhooks"].as_array().unwrap() {
            let exprs = webhook["namespaceSelector"]["matchExpressions"]
                .as_array()
                .unwrap();
            let [expr] = exprs.as_slice() else {
                panic!("{file}: one expression expected: {exprs:?}");
            };
            assert_eq!(expr["key"], "kubernetes.io/metadata.name", "{file}");
            assert_eq!(expr["operator"], "NotIn", "{file}");
            assert_eq!(
                expr["values"],
                serde_json::json!(args.exempt_namespaces),
                "{file}: check --exempt-namespace defaults differ"
            );
        }
    }
}

/// `--objects` takes a directory or one file, in `serve` as in `check`.
#[tokio::test]
async fn objects_is_a_file_or_a_directory_in_serve_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let vm = dir.path().join("vm.yaml");
    std::fs::copy(examples().join("bootonce-vm.yaml"), &vm).unwrap();
    let vmi = examples().join("installer-vmi.yaml");
    let vmi_obj: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&vmi).unwrap()).unwrap();
    for objects in [&vm, &dir.path().to_path_buf()] {
        let objects = objects.to_str().unwrap();
        let (code, judged, _) = check(&["--objects", objects], &[&vmi]);
        assert_eq!(
            (code, &judged[0]["mutation"]["patchType"]),
            (0, &serde_json::json!("JSONPatch")),
            "check --objects {objects}"
        );
        let server = support::TestServer::start(&[
            "--feature-gates",
            "RecreateVMIOnReboot",
            "--objects",
            objects,
        ])
        .await;
        let mut review = support::review("VirtualMachineInstance", "CREATE", &vmi_obj, None);
        review["request"]["userInfo"]["username"] = support::CONTROLLER.into();
        let (status, resp) = server.post("/mutate", &review).await;
        assert_eq!(status, 200);
        assert!(
            resp["response"]["patch"].is_string(),
            "serve --objects {objects}: not stamped: {resp}"
        );
        server.stop().await;
    }
}
