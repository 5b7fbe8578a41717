//! manifests/monitoring, checked with the programs that users run:
//!
//! - the PrometheusRule's rules pass `promtool check rules`, and the unit
//!   tests in tests/monitoring/alerts.test.yaml pass `promtool test rules`;
//!   each alert has a firing and a silent case, and removing any alert makes
//!   the unit tests fail;
//! - every PromQL expression of the Grafana dashboard passes `promtool check
//!   rules` (as recording rules) and names only metrics and labels that the
//!   real binary exports: the test starts it on loopback against the fake
//!   API server, drives one of everything through it and reads `/metrics`.
//!   Every metric the binary exports is on the dashboard, too.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use promql_parser::parser::{self, Expr, LabelModifier};
use serde_json::{json, Value};
use support::fake_api::{realistic_vm, FakeApi, Res};
use support::tools;
use support::{post_json, review, serve_command, Certs, Spawned};

/// Labels Prometheus attaches to every scraped series (target labels of the
/// ServiceMonitor: job, namespace, pod, service, container, endpoint, instance).
const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "container",
    "endpoint",
];

fn monitoring() -> std::path::PathBuf {
    tools::repo().join("manifests/monitoring")
}

/// `spec` of manifests/monitoring/prometheusrule.yaml: a Prometheus rules file.
fn rules_spec() -> Value {
    let path = monitoring().join("prometheusrule.yaml");
    let text = std::fs::read_to_string(&path).expect("prometheusrule.yaml");
    let rule: Value = serde_yaml_ng::from_str(&text).expect("PrometheusRule YAML");
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"].clone()
}

fn alerts(spec: &Value) -> Vec<&Value> {
    spec["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

/// Writes `spec` as rules.yaml beside a copy of the unit tests and runs
/// `promtool check rules` and `promtool test rules` there.
fn promtool_rules(promtool: &Path, spec: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, serde_yaml_ng::to_string(spec).expect("yaml")).expect("write");
    let tests = dir.path().join("alerts.test.yaml");
    std::fs::copy(
        tools::repo().join("tests/monitoring/alerts.test.yaml"),
        &tests,
    )
    .expect("copy");
    let check = tools::run(
        promtool,
        &["check", "rules", rules.to_str().expect("utf-8")],
    )?;
    let test = tools::run(promtool, &["test", "rules", tests.to_str().expect("utf-8")])?;
    Ok(check + &test)
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = tools::promtool() else {
        return;
    };
    let out = promtool_rules(&promtool, &rules_spec()).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
}

#[test]
fn every_alert_fires_and_stays_silent_in_the_unit_tests() {
    let text = std::fs::read_to_string(tools::repo().join("tests/monitoring/alerts.test.yaml"))
        .expect("alerts.test.yaml");
    let tests: Value = serde_yaml_ng::from_str(&text).expect("unit test YAML");
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for case in tests["tests"].as_array().expect("tests") {
        for t in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = t["alertname"].as_str().expect("alertname").to_owned();
            match t["exp_alerts"].as_array().map(Vec::len) {
                Some(0) | None => silent.insert(name),
                Some(_) => fires.insert(name),
            };
        }
    }
    let spec = rules_spec();
    let names: BTreeSet<String> = alerts(&spec)
        .iter()
        .map(|a| a["alert"].as_str().expect("alert name").to_owned())
        .collect();
    assert_eq!(names.len(), 8, "{names:?}");
    for name in &names {
        assert!(fires.contains(name), "no unit test in which {name} fires");
        assert!(
            silent.contains(name),
            "no unit test in which {name} stays silent"
        );
    }
    for a in alerts(&spec) {
        for key in ["summary", "description"] {
            assert!(
                a["annotations"][key].is_string(),
                "{}: no {key}",
                a["alert"]
            );
        }
        assert!(
            ["critical", "warning"].contains(&a["labels"]["severity"].as_str().unwrap_or("")),
            "{}: severity",
            a["alert"]
        );
    }
}

/// The unit tests must be able to fail: without any one alert, or with an
/// alert whose threshold moved, promtool reports a failure.
#[test]
fn unit_tests_catch_a_missing_or_changed_alert() {
    let Some(promtool) = tools::promtool() else {
        return;
    };
    let spec = rules_spec();
    for name in alerts(&spec).iter().map(|a| a["alert"].clone()) {
        let mut broken = spec.clone();
        for g in broken["groups"].as_array_mut().expect("groups") {
            g["rules"]
                .as_array_mut()
                .expect("rules")
                .retain(|r| r["alert"] != name);
        }
        let err = promtool_rules(&promtool, &broken).expect_err(&format!("without {name}"));
        assert!(err.contains(name.as_str().expect("name")), "{name}: {err}");
    }
    for (alert, from, to) in [
        ("KubevirtRebootWebhookErrors", "> 0.05", "> 0.5"),
        (
            "KubevirtRebootWebhookLatencyNearTimeout",
            "> 0.5 * 10",
            "> 0.5 * 30",
        ),
        (
            "KubevirtRebootWebhookCertificateExpiring",
            "< 7 * 24 * 3600",
            "< 1 * 24 * 3600",
        ),
        (
            "KubevirtRebootWebhookErrors",
            "class!~\"certificate_reload|owner_unavailable\"",
            "class!=\"certificate_reload\"",
        ),
        (
            "KubevirtRebootWebhookVmCacheStale",
            "cache=\"virtualmachines\"} == 1",
            "cache=\"virtualmachines\"} >= 0",
        ),
    ] {
        let mut broken = spec.clone();
        let mut hits = 0;
        for g in broken["groups"].as_array_mut().expect("groups") {
            for r in g["rules"].as_array_mut().expect("rules") {
                if r["alert"] == alert {
                    let expr = r["expr"].as_str().expect("expr");
                    assert!(expr.contains(from), "{alert}: {from:?} not in {expr}");
                    r["expr"] = json!(expr.replace(from, to));
                    hits += 1;
                }
            }
        }
        assert_eq!(hits, 1);
        let err = promtool_rules(&promtool, &broken).expect_err(&format!("{alert} with {to}"));
        assert!(err.contains(alert), "{alert}: {err}");
    }
}

// ------------------------------------------------------------ dashboard

/// Every PromQL expression of the dashboard, with a name for messages:
/// panel targets and the inner query of `label_values(...)` variables.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = monitoring().join("dashboard.json");
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard.json"))
            .expect("dashboard JSON");
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(
            !targets.is_empty() || p["type"] == "row",
            "panel {} has no query",
            p["title"]
        );
        for t in targets {
            out.push((
                format!("panel {:?} target {}", p["title"], t["refId"]),
                t["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if v["type"] != "query" {
            continue;
        }
        let q = v["definition"].as_str().expect("definition");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.rsplit_once(','))
            .map(|(query, _label)| query.trim())
            .unwrap_or_else(|| {
                panic!(
                    "variable {}: only label_values(query, label) is used",
                    v["name"]
                )
            });
        out.push((format!("variable {}", v["name"]), inner.to_owned()));
    }
    assert!(out.len() >= 10, "{out:?}");
    out
}

/// Grafana's variables as PromQL: `$__rate_interval` a range, others a regex.
fn substitute_variables(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let var = &rest[i + 1..];
        let (name, len) = match var.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').expect("closing brace");
                (&braced[..end], end + 2)
            }
            None => {
                let end = var
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(var.len());
                (&var[..end], end)
            }
        };
        out.push_str(match name {
            "__rate_interval" | "__interval" | "__range" => "5m",
            _ => ".*",
        });
        rest = &var[len..];
    }
    out.push_str(rest);
    out
}

/// Metric names and label names that an expression uses.
#[derive(Default, Debug)]
struct Uses {
    /// metric name -> label names in its matchers
    metrics: BTreeMap<String, BTreeSet<String>>,
    /// labels of by/without/on/ignoring clauses
    grouping: BTreeSet<String>,
}

fn walk(e: &Expr, uses: &mut Uses) {
    let labels = |m: &Option<LabelModifier>, uses: &mut Uses| {
        if let Some(m) = m {
            uses.grouping.extend(m.labels().labels.iter().cloned());
        }
    };
    match e {
        Expr::Aggregate(a) => {
            labels(&a.modifier, uses);
            walk(&a.expr, uses);
            if let Some(p) = &a.param {
                walk(p, uses);
            }
        }
        Expr::Unary(u) => walk(&u.expr, uses),
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier {
                labels(&m.matching, uses);
            }
            walk(&b.lhs, uses);
            walk(&b.rhs, uses);
        }
        Expr::Paren(p) => walk(&p.expr, uses),
        Expr::Subquery(s) => walk(&s.expr, uses),
        Expr::VectorSelector(vs) => selector(vs, uses),
        Expr::MatrixSelector(ms) => selector(&ms.vs, uses),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, uses)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector(vs: &promql_parser::parser::VectorSelector, uses: &mut Uses) {
    let matchers = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten());
    let name = vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__")
            .map(|m| m.value.clone())
    });
    let name = name.unwrap_or_else(|| panic!("selector without a metric name: {vs}"));
    let labels = uses.metrics.entry(name).or_default();
    labels.extend(matchers.map(|m| m.name.clone()).filter(|n| n != "__name__"));
}

fn uses_of(expr: &str) -> Uses {
    let parsed = parser::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut uses = Uses::default();
    walk(&parsed, &mut uses);
    uses
}

/// Sample names and their label names, from a Prometheus text exposition;
/// and the families its `# TYPE` lines declare.
fn exposition(text: &str) -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            families.insert(t.split_whitespace().next().expect("family").to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).expect("sample line");
        let labels = samples.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            // name="value" pairs; values may hold escaped quotes.
            let mut rest = &line[end + 1..];
            while let Some(eq) = rest.find("=\"") {
                labels.insert(rest[..eq].trim_start_matches(',').trim().to_owned());
                let mut chars = rest[eq + 2..].char_indices();
                let mut close = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => {
                            close = Some(eq + 2 + i);
                            break;
                        }
                        _ => {}
                    }
                }
                rest = &rest[close.expect("closing quote") + 1..];
            }
        }
    }
    (samples, families)
}

/// `/metrics` of the real binary in cluster mode after one request of each
/// kind: a denial, a stamp (owner lookup), a bad request.
async fn live_metrics() -> String {
    let fake = FakeApi::start().await;
    fake.enable_gate();
    fake.apply(
        Res::Vm,
        realistic_vm("vms", "installer", "vm-uid-1", "BootOnce"),
    );
    let kubeconfig = fake.kubeconfig();
    let certs = Certs::new();
    let mut cmd = serve_command(&certs);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig.path())
        .args(["--shutdown-delay", "0s"]);
    let log = certs.dir.path().join("server.log");
    let mut server = Spawned::start_logged(&mut cmd, Duration::from_secs(30), &log);
    server.wait_ready(Duration::from_secs(30)).await;
    let (port, metrics_port) = (server.addr.port(), server.metrics_addr.port());
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let metrics = format!("http://127.0.0.1:{metrics_port}");

    let client = support::client(&certs.ca_pem, false);
    let base = format!("https://localhost:{port}");
    let mut bad_vm = realistic_vm("vms", "bad", "vm-uid-2", "Always");
    bad_vm["spec"]["template"]["spec"]["domain"]["rebootPolicy"] = json!("terminate");
    let (status, denied) = post_json(
        &client,
        &format!("{base}/validate"),
        review("VirtualMachine", "CREATE", &bad_vm, None).to_string(),
    )
    .await;
    assert_eq!(
        (status, &denied["response"]["allowed"]),
        (200, &json!(false)),
        "{denied}"
    );
    let vmi = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "installer", "namespace": "vms", "ownerReferences": [{
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "installer",
            "uid": "vm-uid-1", "controller": true}]},
        "spec": {"domain": {"devices": {}}},
    });
    let (status, stamped) = post_json(
        &client,
        &format!("{base}/mutate"),
        review("VirtualMachineInstance", "CREATE", &vmi, None).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{stamped}");
    assert!(
        stamped["response"]["patch"].is_string(),
        "not stamped: {stamped}"
    );
    let (status, _) = post_json(&client, &format!("{base}/validate"), "not json".into()).await;
    assert_eq!(status, 400);

    let text = http
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics body");
    drop(server);
    text
}

#[tokio::test]
async fn dashboard_queries_parse_and_name_only_exported_metrics() {
    let queries = dashboard_queries();
    // Every expression as promtool sees it: recording rules, checked.
    if let Some(promtool) = tools::promtool() {
        let rules: Vec<Value> = queries
            .iter()
            .enumerate()
            .map(|(i, (_, q))| json!({"record": format!("dashboard:query_{i}"), "expr": substitute_variables(q)}))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("dashboard.rules.yaml");
        let doc = json!({"groups": [{"name": "dashboard", "rules": rules}]});
        std::fs::write(&file, serde_yaml_ng::to_string(&doc).expect("yaml")).expect("write");
        let out = tools::ok(
            &promtool,
            &["check", "rules", file.to_str().expect("utf-8")],
        );
        assert!(
            out.contains(&format!("SUCCESS: {} rules found", queries.len())),
            "{out}"
        );
    }

    let text = live_metrics().await;
    let (samples, families) = exposition(&text);
    assert!(families.len() >= 10, "{text}");
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (what, q) in &queries {
        let uses = uses_of(&substitute_variables(q));
        let mut known: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
        for (metric, labels) in &uses.metrics {
            used.insert(metric.clone());
            match samples.get(metric) {
                None => problems.push(format!("{what}: {metric} is not exported by the webhook")),
                Some(live) => {
                    known.extend(live.iter().map(String::as_str));
                    for l in labels
                        .iter()
                        .filter(|l| !live.contains(*l) && !TARGET_LABELS.contains(&l.as_str()))
                    {
                        problems.push(format!("{what}: {metric} has no label {l}"));
                    }
                }
            }
        }
        for l in uses.grouping.iter().filter(|l| !known.contains(l.as_str())) {
            problems.push(format!(
                "{what}: grouping by {l}, which none of its metrics has"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\n/metrics was:\n{text}",
        problems.join("\n")
    );
    // And the other way round: the dashboard shows every exported family.
    for family in &families {
        assert!(
            used.iter().any(|m| m == family
                || m.strip_prefix(family.as_str())
                    .is_some_and(|s| ["_total", "_bucket", "_sum", "_count"].contains(&s))),
            "{family} is exported but not on the dashboard"
        );
    }
}

#[tokio::test]
async fn alert_expressions_name_only_exported_metrics() {
    let text = live_metrics().await;
    let (samples, _) = exposition(&text);
    let spec = rules_spec();
    for a in alerts(&spec) {
        let uses = uses_of(a["expr"].as_str().expect("expr"));
        for (metric, labels) in &uses.metrics {
            // `up` is Prometheus' own series about the scrape.
            let live = match (metric.as_str(), samples.get(metric)) {
                ("up", _) => continue,
                (_, Some(live)) => live,
                (_, None) => panic!("{}: {metric} is not exported by the webhook", a["alert"]),
            };
            for l in labels {
                assert!(
                    live.contains(l) || TARGET_LABELS.contains(&l.as_str()),
                    "{}: {metric} has no label {l}",
                    a["alert"]
                );
            }
        }
    }
}

#[test]
fn the_checks_catch_unknown_metrics_and_labels() {
    let text = "# TYPE kubevirt_reboot_webhook_errors counter\nkubevirt_reboot_webhook_errors_total{class=\"bad_request\"} 1\n";
    let (samples, families) = exposition(text);
    assert_eq!(
        families.into_iter().collect::<Vec<_>>(),
        ["kubevirt_reboot_webhook_errors"]
    );
    assert_eq!(
        samples["kubevirt_reboot_webhook_errors_total"],
        BTreeSet::from(["class".to_owned()])
    );
    let uses = uses_of(&substitute_variables(
        "sum by (klass) (rate(kubevirt_reboot_webhook_error_total{namespace=~\"$namespace\", clas=\"x\"}[$__rate_interval]))",
    ));
    assert_eq!(uses.grouping, BTreeSet::from(["klass".to_owned()]));
    assert_eq!(
        uses.metrics["kubevirt_reboot_webhook_error_total"],
        BTreeSet::from(["namespace".to_owned(), "clas".to_owned()])
    );
    assert!(!samples.contains_key("kubevirt_reboot_webhook_error_total"));
    assert_eq!(
        substitute_variables("x{a=~\"${ns}\"}[$__rate_interval]"),
        "x{a=~\".*\"}[5m]"
    );
}
