//! The Helm chart in charts/kubevirt-reboot-webhook, checked with the real
//! Helm (`make helm`) and kubectl:
//!
//! - `helm lint --strict` passes;
//! - drift: `helm template` and `kubectl kustomize` of manifests/ (and of
//!   each overlay, with the values that select it) render the same objects
//!   once Helm's own labels are removed;
//! - values reach the objects, and the container arguments parse with the
//!   binary's own flag parser;
//! - bad values are refused with a message naming them.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use kubevirt_reboot_webhook::admission::{BootOnceMode, Mode};
use serde_json::{json, Value};
use support::tools;

const NS: &str = "kubevirt-reboot-webhook";
const RELEASE: &str = "kubevirt-reboot-webhook";

/// Labels only Helm adds (standard chart labels); everything else must match.
const HELM_ONLY_LABELS: &[&str] = &[
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
];

fn chart() -> PathBuf {
    tools::repo().join("charts/kubevirt-reboot-webhook")
}

/// `helm template RELEASE chart -n NS` with `--set` (or, for `file:` items,
/// `--set-file`) values.
fn template_as(
    helm: &Path,
    release: &str,
    namespace: &str,
    values: &[&str],
) -> Result<Vec<Value>, String> {
    let chart = chart();
    let mut args = vec!["template", release, chart.to_str().expect("utf-8 path")];
    args.extend(["--namespace", namespace]);
    for v in values {
        match v.strip_prefix("file:") {
            Some(f) => args.extend(["--set-file", f]),
            None => args.extend(["--set", v]),
        }
    }
    tools::run(helm, &args)
        .map(|out| tools::yaml_docs(&out).unwrap_or_else(|e| panic!("{e} in:\n{out}")))
}

fn template(helm: &Path, values: &[&str]) -> Vec<Value> {
    template_as(helm, RELEASE, NS, values).unwrap_or_else(|e| panic!("{e}"))
}

/// `to` relative to `from` (kustomize refuses absolute paths).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to) = (
        from.canonicalize().expect("canonical"),
        to.canonicalize().expect("canonical"),
    );
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// A throwaway overlay of repository directories, rendered by kustomize.
fn kustomize_overlay(kubectl: &Path, resources: &[&str], components: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let rel = |p: &&str| {
        relative(dir.path(), &tools::repo().join(p))
            .display()
            .to_string()
    };
    let k = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources.iter().map(rel).collect::<Vec<_>>(),
        "components": components.iter().map(rel).collect::<Vec<_>>(),
    });
    std::fs::write(dir.path().join("kustomization.yaml"), k.to_string()).expect("write");
    tools::kustomize(kubectl, dir.path())
}

fn strip_helm_labels(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for key in HELM_ONLY_LABELS {
                map.remove(*key);
            }
            map.values_mut().for_each(strip_helm_labels);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_helm_labels),
        _ => {}
    }
}

type Id = (String, String, String, String);

fn id(o: &Value) -> Id {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    (
        s(&o["apiVersion"]),
        s(&o["kind"]),
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"]),
    )
}

/// Objects by identity, Helm's labels removed; an empty label map (left
/// when Helm's were the only ones) is dropped too.
fn normalize(objs: Vec<Value>) -> BTreeMap<Id, Value> {
    let mut out = BTreeMap::new();
    for mut o in objs {
        strip_helm_labels(&mut o);
        if o["metadata"]["labels"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
        {
            o["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("labels");
        }
        let key = id(&o);
        assert!(
            out.insert(key.clone(), o).is_none(),
            "duplicate object {key:?}"
        );
    }
    out
}

/// JSON paths where `a` and `b` differ, with both values.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differences(va, vb, &format!("{path}.{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(va, vb, &format!("{path}[{i}]"), out);
            }
        }
        // Long texts (CEL expressions): the first line that differs.
        (Value::String(x), Value::String(y))
            if x != y && (x.contains('\n') || y.contains('\n')) =>
        {
            let (mut xs, mut ys) = (x.lines(), y.lines());
            let line = (1..)
                .find_map(|n| {
                    let (l, r) = (xs.next(), ys.next());
                    (l != r).then(|| format!("line {n}: chart {l:?} != kustomize {r:?}"))
                })
                .unwrap_or_else(|| "trailing newline".to_owned());
            out.push(format!("{path}: {line}"));
        }
        _ if a != b => out.push(format!("{path}: chart {a} != kustomize {b}")),
        _ => {}
    }
}

/// The drift check: the same objects, field for field.
fn drift(chart: Vec<Value>, kustomize: Vec<Value>) -> Vec<String> {
    let (chart, kustomize) = (normalize(chart), normalize(kustomize));
    let mut problems = Vec::new();
    for key in kustomize.keys().filter(|k| !chart.contains_key(*k)) {
        problems.push(format!("only in kustomize: {key:?}"));
    }
    for key in chart.keys().filter(|k| !kustomize.contains_key(*k)) {
        problems.push(format!("only in the chart: {key:?}"));
    }
    for (key, c) in &chart {
        if let Some(k) = kustomize.get(key) {
            let mut diffs = Vec::new();
            differences(c, k, "", &mut diffs);
            problems.extend(
                diffs
                    .into_iter()
                    .map(|d| format!("{} {}: {d}", key.1, key.3)),
            );
        }
    }
    problems
}

fn assert_no_drift(what: &str, chart: Vec<Value>, kustomize: Vec<Value>) {
    let problems = drift(chart, kustomize);
    assert!(
        problems.is_empty(),
        "{what}: the chart and the kustomize manifests drifted apart:\n  {}",
        problems.join("\n  ")
    );
}

fn tools_or_skip() -> Option<(PathBuf, PathBuf)> {
    Some((tools::helm()?, tools::kubectl()?))
}

/// Values and the kustomize entry point they must reproduce exactly.
const DRIFT_ROWS: &[(&[&str], &str)] = &[
    (&["namespace.create=true"], "manifests"),
    (
        &["namespace.create=true", "certificate.source=certManager"],
        "manifests/overlays/cert-manager",
    ),
    (
        &["namespace.create=true", "bootonce=compat"],
        "manifests/overlays/compat",
    ),
    (
        &["namespace.create=true", "webhooks.matchConditions=false"],
        "manifests/overlays/no-match-conditions",
    ),
];

/// Values and the overlay of components they must reproduce (overlays that
/// manifests/ leaves to the user to write).
const DRIFT_COMBINATIONS: &[(&[&str], &[&str], &[&str])] = &[
    (
        &[
            "namespace.create=true",
            "bootonce=compat",
            "webhooks.matchConditions=false",
        ],
        &["manifests"],
        &[
            "manifests/components/compat",
            "manifests/components/no-match-conditions",
        ],
    ),
    (
        &[
            "namespace.create=true",
            "bootonce=compat",
            "certificate.source=certManager",
        ],
        &["manifests/overlays/cert-manager"],
        &["manifests/components/compat"],
    ),
    (
        &[
            "namespace.create=true",
            "mtls.clientCAConfigMap=kubevirt-reboot-webhook-client-ca",
        ],
        &["manifests"],
        &["manifests/components/mtls"],
    ),
];

#[test]
fn default_values_render_manifests_without_the_namespace() {
    let Some((helm, kubectl)) = tools_or_skip() else {
        return;
    };
    // Helm installs into a namespace made by `--create-namespace` (or
    // namespace.create=true, checked below); everything else is equal.
    let base: Vec<Value> = tools::kustomize(&kubectl, &tools::repo().join("manifests"))
        .into_iter()
        .filter(|o| o["kind"] != "Namespace")
        .collect();
    assert_no_drift("default values vs manifests/", template(&helm, &[]), base);
}

#[test]
fn chart_and_kustomize_do_not_drift() {
    let Some((helm, kubectl)) = tools_or_skip() else {
        return;
    };
    for (values, dir) in DRIFT_ROWS {
        assert_no_drift(
            &format!("{values:?} vs {dir}"),
            template(&helm, values),
            tools::kustomize(&kubectl, &tools::repo().join(dir)),
        );
    }
    for (values, resources, components) in DRIFT_COMBINATIONS {
        assert_no_drift(
            &format!("{values:?} vs {resources:?} + {components:?}"),
            template(&helm, values),
            kustomize_overlay(&kubectl, resources, components),
        );
    }
    let all_monitoring = [
        "namespace.create=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.dashboard.enabled=true",
    ];
    assert_no_drift(
        "monitoring",
        template(&helm, &all_monitoring),
        kustomize_overlay(
            &kubectl,
            &["manifests", "manifests/monitoring"],
            &["manifests/monitoring/servicemonitor"],
        ),
    );
}

#[test]
fn drift_check_catches_differences() {
    let Some((helm, kubectl)) = tools_or_skip() else {
        return;
    };
    let kustomized = tools::kustomize(&kubectl, &tools::repo().join("manifests"));
    let find = |objs: &mut Vec<Value>, kind: &str| -> usize {
        objs.iter().position(|o| o["kind"] == kind).expect(kind)
    };
    type Break = (
        &'static str,
        fn(&mut Vec<Value>, usize),
        &'static str,
        &'static str,
    );
    let breaks: &[Break] = &[
        (
            "ValidatingWebhookConfiguration",
            |o, i| o[i]["webhooks"][0]["timeoutSeconds"] = json!(15),
            "webhooks[0].timeoutSeconds: chart 15 != kustomize 10",
            "a changed value",
        ),
        (
            "Deployment",
            |o, i| {
                o[i]["spec"]["template"]["spec"]["containers"][0]["args"]
                    .as_array_mut()
                    .expect("args")
                    .pop();
            },
            ".args",
            "a missing argument",
        ),
        (
            "PodDisruptionBudget",
            |o, i| {
                o.remove(i);
            },
            "only in kustomize",
            "a missing object",
        ),
        (
            "Service",
            |o, i| o[i]["metadata"]["labels"]["team"] = json!("x"),
            "metadata.labels.team",
            "an extra label",
        ),
    ];
    for (kind, breakage, want, what) in breaks {
        let mut chart = template(&helm, &["namespace.create=true"]);
        let i = find(&mut chart, kind);
        breakage(&mut chart, i);
        let problems = drift(chart, kustomized.clone()).join("\n");
        assert!(
            problems.contains(want),
            "{what} not reported; got:\n{problems}"
        );
    }
}

#[test]
fn helm_lint_passes() {
    let Some(helm) = tools::helm() else {
        return;
    };
    let chart = chart();
    let chart = chart.to_str().expect("utf-8 path");
    tools::ok(&helm, &["lint", "--strict", chart]);
    tools::ok(
        &helm,
        &[
            "lint", "--strict", chart,
            "--set", "certificate.source=certManager,bootonce=compat,mode=warn,namespace.create=true",
            "--set", "monitoring.prometheusRule.enabled=true,monitoring.serviceMonitor.enabled=true,monitoring.dashboard.enabled=true",
        ],
    );
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn container(objs: &[Value]) -> &Value {
    &one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

/// The Deployment's arguments, parsed by the binary's own flag parser.
fn parsed_args(objs: &[Value]) -> kubevirt_reboot_webhook::cli::ServeArgs {
    let args: Vec<&str> = container(objs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    support::serve_args(&args).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn values_reach_the_objects_and_the_flags_parse() {
    let Some(helm) = tools::helm() else {
        return;
    };
    let defaults = template(&helm, &[]);
    let a = parsed_args(&defaults);
    assert_eq!(a.mode, Mode::Enforce);
    assert_eq!(a.decision.bootonce, BootOnceMode::Native);
    assert_eq!(
        a.feature_gates, None,
        "gates come from the KubeVirt resource by default"
    );

    let objs = template(
        &helm,
        &[
            "mode=warn",
            "bootonce=compat",
            "featureGates.static=true",
            "featureGates.enabled={RecreateVMIOnReboot,Other}",
            "kubevirtNamespace=virt",
            "trustedUsers={system:serviceaccount:ops:bot,alice}",
            "trustedGroups={vm-admins}",
            "logFormat=text",
            "extraArgs={--watch-namespace=vms}",
            "replicas=3",
            "image.repository=registry.example/kvrw",
            "image.tag=v1.2.3",
            "webhooks.failurePolicy=Ignore",
            "webhooks.timeoutSeconds=20",
            "webhooks.excludedNamespaces={kube-system,monitoring}",
            "podDisruptionBudget.enabled=false",
        ],
    );
    let a = parsed_args(&objs);
    assert_eq!(a.mode, Mode::Warn);
    assert_eq!(a.decision.bootonce, BootOnceMode::Compat);
    assert_eq!(
        a.feature_gates.as_deref(),
        Some("RecreateVMIOnReboot,Other")
    );
    assert_eq!(a.decision.kubevirt_namespace, "virt");
    assert_eq!(
        a.decision.trusted_users,
        ["system:serviceaccount:ops:bot", "alice"]
    );
    assert_eq!(a.decision.trusted_groups, ["vm-admins"]);
    assert_eq!(a.watch_namespaces, ["vms"]);
    assert_eq!(format!("{:?}", a.log_format), "Text");
    assert_eq!(one(&objs, "Deployment")["spec"]["replicas"], 3);
    assert_eq!(container(&objs)["image"], "registry.example/kvrw:v1.2.3");
    assert!(objs.iter().all(|o| o["kind"] != "PodDisruptionBudget"));
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let w = &one(&objs, kind)["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Ignore", "{kind}");
        assert_eq!(w["timeoutSeconds"], 20, "{kind}");
        assert_eq!(
            w["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system", "monitoring", NS]),
            "{kind}"
        );
    }
    // Compat mode widens the mutating webhook to VMs and pools.
    let rules = &one(&objs, "MutatingWebhookConfiguration")["webhooks"][0]["rules"];
    assert_eq!(rules.as_array().map(Vec::len), Some(3));

    // An empty static list means "all gates off", not "from the cluster".
    let off = template(&helm, &["featureGates.static=true"]);
    assert_eq!(parsed_args(&off).feature_gates.as_deref(), Some(""));
    let pinned = template(&helm, &["image.digest=sha256:0123abcd"]);
    assert_eq!(
        container(&pinned)["image"],
        "kubevirt-reboot-webhook@sha256:0123abcd"
    );
}

#[test]
fn another_release_name_and_namespace_are_used_everywhere() {
    let Some(helm) = tools::helm() else {
        return;
    };
    let objs = template_as(
        &helm,
        "vmhooks",
        "virt-hooks",
        &[
            "certificate.source=certManager",
            "monitoring.serviceMonitor.enabled=true",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let name = "vmhooks-kubevirt-reboot-webhook";
    for o in &objs {
        assert_eq!(
            o["metadata"]["name"].as_str().map(|n| n.starts_with(name)),
            Some(true),
            "{o}"
        );
        if ![
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
        ]
        .contains(&o["kind"].as_str().unwrap_or(""))
        {
            assert_eq!(o["metadata"]["namespace"], "virt-hooks", "{o}");
        }
    }
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let conf = one(&objs, kind);
        let w = &conf["webhooks"][0];
        assert_eq!(w["clientConfig"]["service"]["name"], name);
        assert_eq!(w["clientConfig"]["service"]["namespace"], "virt-hooks");
        assert!(
            w["clientConfig"].get("caBundle").is_none(),
            "cainjector owns caBundle"
        );
        assert_eq!(
            conf["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("virt-hooks/{name}")
        );
        assert_eq!(
            w["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system", "virt-hooks"])
        );
    }
    let named = |kind: &str, n: &str| {
        objs.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == n)
            .unwrap_or_else(|| panic!("no {kind} {n}"))
    };
    // cert-manager's pattern for webhooks: a self-signed Issuer signs the
    // release's CA, which keeps its key; a CA Issuer signs the serving
    // certificate.
    let ca = named("Certificate", &format!("{name}-ca"));
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(ca["spec"]["privateKey"]["rotationPolicy"], "Never");
    assert_eq!(
        ca["spec"]["issuerRef"]["name"],
        format!("{name}-selfsigned")
    );
    assert!(named("Issuer", &format!("{name}-selfsigned"))["spec"]["selfSigned"].is_object());
    assert_eq!(
        named("Issuer", &format!("{name}-ca"))["spec"]["ca"]["secretName"],
        format!("{name}-ca")
    );
    let cert = named("Certificate", name);
    assert_eq!(cert["spec"]["issuerRef"]["name"], format!("{name}-ca"));
    assert_eq!(
        cert["spec"]["dnsNames"],
        json!([
            format!("{name}.virt-hooks.svc"),
            format!("{name}.virt-hooks.svc.cluster.local")
        ])
    );
    assert_eq!(cert["spec"]["secretName"], format!("{name}-tls"));
    assert_eq!(
        one(&objs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        format!("{name}-tls")
    );
    assert_eq!(
        one(&objs, "ClusterRoleBinding")["subjects"][0]["namespace"],
        "virt-hooks"
    );
    let sm = one(&objs, "ServiceMonitor");
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!(["virt-hooks"])
    );
    let svc = one(&objs, "Service");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        svc["spec"]["selector"]
    );
    // Two releases must not select each other's pods.
    assert_eq!(
        svc["spec"]["selector"]["app.kubernetes.io/instance"],
        "vmhooks"
    );
}

#[test]
fn ca_cert_value_fills_the_ca_bundle() {
    let Some(helm) = tools::helm() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = vec!["kubevirt-reboot-webhook.kubevirt-reboot-webhook.svc".to_owned()];
    kubevirt_reboot_webhook::certs::write(dir.path(), &hosts).expect("certs");
    let ca_path = dir.path().join("ca.crt");
    let ca = std::fs::read(&ca_path).expect("ca");
    let arg = format!("file:certificate.caCert={}", ca_path.display());
    let objs = template(&helm, &[&arg]);
    let want = base64::engine::general_purpose::STANDARD.encode(&ca);
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        assert_eq!(
            one(&objs, kind)["webhooks"][0]["clientConfig"]["caBundle"],
            want.as_str()
        );
    }
}

#[test]
fn bad_values_are_refused_with_their_name() {
    let Some(helm) = tools::helm() else {
        return;
    };
    for (value, says) in [
        ("mode=enforcing", "/mode"),
        ("bootonce=Compat", "/bootonce"),
        ("certificate.source=vault", "/certificate/source"),
        ("webhooks.timeoutSeconds=31", "/webhooks/timeoutSeconds"),
        ("webhooks.failurePolicy=fail", "/webhooks/failurePolicy"),
        ("webhooks.timeoutSecond=5", "timeoutSecond"),
        (
            "terminationGracePeriodSeconds=30",
            "/terminationGracePeriodSeconds",
        ),
    ] {
        let err = template_as(&helm, RELEASE, NS, &[value]).expect_err(value);
        assert!(err.contains(says), "{value}: expected {says:?} in:\n{err}");
    }
}

/// What charts/kubevirt-reboot-webhook/files/ must hold, made from manifests/:
/// the monitoring files as they are, and the webhooks' matchConditions as
/// JSON (`{"validating": [...], "mutating": [...]}`).
fn chart_files_from_manifests() -> Vec<(&'static str, Vec<u8>)> {
    let manifests = tools::repo().join("manifests");
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let conditions = |file: &str| -> Value {
        let path = manifests.join("base").join(file);
        let text = String::from_utf8(read(&path)).expect("utf-8");
        let docs = tools::yaml_docs(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        docs[0]["webhooks"][0]["matchConditions"].clone()
    };
    let mut json = serde_json::to_vec_pretty(&json!({
        "validating": conditions("validating-webhook.yaml"),
        "mutating": conditions("mutating-webhook.yaml"),
    }))
    .expect("json");
    json.push(b'\n');
    vec![
        (
            "prometheusrule.yaml",
            read(&manifests.join("monitoring/prometheusrule.yaml")),
        ),
        (
            "dashboard.json",
            read(&manifests.join("monitoring/dashboard.json")),
        ),
        ("match-conditions.json", json),
    ]
}

/// The chart's files/ are generated from manifests/ (`make chart-files`,
/// which runs this test with UPDATE_CHART_FILES=1 to write them); a change
/// made only on one side fails here.
#[test]
fn chart_files_are_generated_from_manifests() {
    let update = std::env::var_os("UPDATE_CHART_FILES").is_some();
    let mut stale = Vec::new();
    for (name, want) in chart_files_from_manifests() {
        let path = chart().join("files").join(name);
        if std::fs::read(&path).ok().as_ref() == Some(&want) {
            continue;
        }
        if update {
            std::fs::write(&path, &want).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        stale.push(path.display().to_string());
    }
    assert!(
        stale.is_empty(),
        "{} from manifests/ (run `make chart-files` and commit): {}",
        if update { "rewritten" } else { "stale" },
        stale.join(", ")
    );
}

#[test]
fn latency_alert_follows_timeout_seconds() {
    let Some(helm) = tools::helm() else {
        return;
    };
    let rules = |timeout: &str| -> Value {
        let objs = template(
            &helm,
            &[
                "monitoring.prometheusRule.enabled=true",
                &format!("webhooks.timeoutSeconds={timeout}"),
            ],
        );
        one(&objs, "PrometheusRule")["spec"].clone()
    };
    let (ten, twenty) = (rules("10"), rules("20"));
    let mut diffs = Vec::new();
    differences(&twenty, &ten, "", &mut diffs);
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert!(
        diffs[0].contains("> 0.5 * 20 # half") && diffs[0].contains("> 0.5 * 10 # half"),
        "{diffs:#?}"
    );
}

/// A copy of the chart whose files/match-conditions.json holds `conditions`.
fn chart_with_conditions(conditions: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let path = entry.expect("entry").path();
            let target = to.join(path.file_name().expect("name"));
            if path.is_dir() {
                copy(&path, &target);
            } else {
                std::fs::copy(&path, &target).expect("copy");
            }
        }
    }
    let root = dir.path().join("kubevirt-reboot-webhook");
    copy(&chart(), &root);
    std::fs::write(
        root.join("files/match-conditions.json"),
        conditions.to_string(),
    )
    .expect("write");
    dir
}

/// The switch around the generated conditions: each list appears in its own
/// webhook, compat mode keeps them (as components/compat does), and
/// `webhooks.matchConditions=false` drops them (for clusters older than 1.28).
#[test]
fn match_conditions_switch() {
    let Some(helm) = tools::helm() else {
        return;
    };
    let dir = chart_with_conditions(&json!({
        "validating": [{"name": "uses-the-feature", "expression": "has(object.spec)"}],
        "mutating": [{"name": "owned-by-a-vm", "expression": "has(object.metadata.ownerReferences)"}],
    }));
    let chart = dir.path().join("kubevirt-reboot-webhook");
    let render = |values: &[&str]| -> BTreeMap<&'static str, Value> {
        let mut args = vec![
            "template",
            RELEASE,
            chart.to_str().expect("utf-8"),
            "-n",
            NS,
        ];
        for v in values {
            args.extend(["--set", v]);
        }
        let objs = tools::yaml_docs(&tools::ok(&helm, &args)).expect("helm template output");
        [
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
        ]
        .into_iter()
        .map(|k| (k, one(&objs, k)["webhooks"][0]["matchConditions"].clone()))
        .collect()
    };
    let on = render(&[]);
    assert_eq!(
        on["ValidatingWebhookConfiguration"],
        json!([{"name": "uses-the-feature", "expression": "has(object.spec)"}])
    );
    assert_eq!(
        on["MutatingWebhookConfiguration"],
        json!([{"name": "owned-by-a-vm", "expression": "has(object.metadata.ownerReferences)"}])
    );
    assert_eq!(render(&["bootonce=compat"]), on);
    let off = render(&["webhooks.matchConditions=false", "bootonce=compat"]);
    assert!(off.values().all(Value::is_null), "{off:?}");
}

/// One release number in three places: Cargo.toml's version (the binary
/// and `make image`'s tag), the chart's appVersion (its default image tag)
/// and the image tag of manifests/base.
#[test]
fn image_tag_is_the_release_everywhere() {
    let cargo = std::fs::read_to_string(tools::repo().join("Cargo.toml")).expect("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("version in Cargo.toml");
    let chart_yaml = std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml");
    let app: Value = serde_yaml_ng::from_str(&chart_yaml).expect("Chart.yaml");
    assert_eq!(app["appVersion"], version, "Chart.yaml appVersion");
    let deployment = std::fs::read_to_string(tools::repo().join("manifests/base/deployment.yaml"))
        .expect("read");
    let deployment: Value = serde_yaml_ng::from_str(&deployment).expect("deployment.yaml");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("kubevirt-reboot-webhook:{version}"),
        "manifests/base/deployment.yaml"
    );
    let Some(helm) = tools::helm() else {
        return;
    };
    assert_eq!(
        container(&template(&helm, &[]))["image"],
        format!("kubevirt-reboot-webhook:{version}"),
        "the chart's default image"
    );
}

/// What an operator expects of Pods on every VM start's path: a priority
/// class, replicas spread across nodes, and a schema that refuses fewer than
/// two replicas while the PodDisruptionBudget needs one available.
#[test]
fn pods_are_critical_spread_and_at_least_two() {
    let Some(helm) = tools::helm() else {
        return;
    };
    let objs = template(&helm, &[]);
    let pod = &one(&objs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread["whenUnsatisfiable"], "DoNotSchedule");
    assert_eq!(spread["maxSkew"], 1);
    assert_eq!(spread["matchLabelKeys"], json!(["pod-template-hash"]));
    assert_eq!(
        spread["labelSelector"]["matchLabels"],
        pod_selector(&objs),
        "the spread counts the webhook's own Pods"
    );
    assert!(pod.get("affinity").is_none(), "{pod}");

    let err = template_as(&helm, RELEASE, NS, &["replicas=1"]).expect_err("one replica");
    assert!(err.contains("/replicas"), "{err}");
    assert!(err.contains("minimum"), "{err}");
    let single = template(&helm, &["replicas=1", "podDisruptionBudget.enabled=false"]);
    assert_eq!(one(&single, "Deployment")["spec"]["replicas"], 1);

    let zones = template(
        &helm,
        &[
            "spreadAcrossNodes=false",
            "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
            "topologySpreadConstraints[0].maxSkew=1",
            "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
            "priorityClassName=",
        ],
    );
    let pod = &one(&zones, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["topologySpreadConstraints"],
        json!([{"topologyKey": "topology.kubernetes.io/zone", "maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway"}])
    );
    assert!(pod.get("priorityClassName").is_none(), "{pod}");
}

fn pod_selector(objs: &[Value]) -> Value {
    one(objs, "Deployment")["spec"]["selector"]["matchLabels"].clone()
}

/// The optional NetworkPolicy: the webhook and metrics ports in, the API
/// server out, nothing else; the Pods it selects are the webhook's.
#[test]
fn network_policy_allows_the_api_server_and_scrapes_only() {
    let Some(helm) = tools::helm() else {
        return;
    };
    assert!(template(&helm, &[])
        .iter()
        .all(|o| o["kind"] != "NetworkPolicy"));
    let objs = template(
        &helm,
        &[
            "networkPolicy.enabled=true",
            "networkPolicy.apiServer.cidrs={10.0.0.10/32}",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
        ],
    );
    let policy = &one(&objs, "NetworkPolicy")["spec"];
    assert_eq!(policy["podSelector"]["matchLabels"], pod_selector(&objs));
    assert_eq!(policy["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        policy["ingress"],
        json!([
            {"ports": [{"port": 8443, "protocol": "TCP"}]},
            {"ports": [{"port": 8080, "protocol": "TCP"}],
             "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        ])
    );
    assert_eq!(
        policy["egress"],
        json!([{"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}]}])
    );
    let err = template_as(
        &helm,
        RELEASE,
        NS,
        &[
            "networkPolicy.enabled=true",
            "networkPolicy.apiServer.cidrs={10.0.0.10}",
        ],
    )
    .expect_err("a CIDR without a prefix length");
    assert!(err.contains("/networkPolicy/apiServer/cidrs/0"), "{err}");
}
