//! Static checks of the kustomize manifests in `manifests/`.
//!
//! Every entry point is rendered by the real `kubectl kustomize` (a missing
//! kubectl skips these tests locally and fails them in CI), and the
//! container's arguments are read by the binary's own flag parser. Every
//! check reports a problem string; `checks_catch_broken_manifests` breaks
//! the real manifests one way at a time and asserts that the matching
//! problem is reported.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use kubevirt_reboot_webhook::admission::BootOnceMode;
use kubevirt_reboot_webhook::cli::{LogFormat, ServeArgs};
use serde_json::{json, Value};
use support::tools;

const NS: &str = "kubevirt-reboot-webhook";
const SVC: &str = "kubevirt-reboot-webhook";
const TLS_SECRET: &str = "kubevirt-reboot-webhook-tls";
const KUBEVIRT: &str = "kubevirt.io";
const POOL: &str = "pool.kubevirt.io";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Base,
    CertManager,
    Compat,
    /// For clusters without webhook matchConditions (Kubernetes before 1.28).
    NoMatchConditions,
}

/// Entry points (relative to `manifests/`) and what they must produce.
const ENTRY_POINTS: &[(&str, Variant)] = &[
    ("", Variant::Base),
    ("base", Variant::Base),
    ("overlays/cert-manager", Variant::CertManager),
    ("overlays/compat", Variant::Compat),
    ("overlays/no-match-conditions", Variant::NoMatchConditions),
];

fn manifests_dir() -> PathBuf {
    tools::repo().join("manifests")
}

/// `kubectl kustomize manifests/DIR`, or `None` (after a note) when there
/// is no kubectl outside CI.
fn render(dir: &str) -> Option<Vec<Value>> {
    Some(tools::kustomize(
        &tools::kubectl()?,
        &manifests_dir().join(dir),
    ))
}

// ---------------------------------------------------------------- parsing

fn read_docs(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    tools::yaml_docs(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// `a/b/../c` -> `a/c` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

fn load_kustomization(dir: &Path) -> Result<Value, String> {
    let file = kustomization_file(dir)
        .ok_or_else(|| format!("{}: no kustomization.yaml", dir.display()))?;
    let mut docs = read_docs(&file)?;
    if docs.len() != 1 {
        return Err(format!("{}: expected one document", file.display()));
    }
    Ok(docs.remove(0))
}

fn str_list(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

// ------------------------------------------------ kustomization references

/// Every `resources`, `components` and `patches` path of every
/// kustomization under `root` must exist, and every other YAML file must be
/// referenced by one of them.
fn kustomization_problems(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    yaml_files(root, &mut files);
    let mut referenced = BTreeSet::new();
    for file in &files {
        let is_kustomization = file
            .file_name()
            .is_some_and(|n| n == "kustomization.yaml" || n == "kustomization.yml");
        let docs = match read_docs(file) {
            Ok(d) => d,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if !is_kustomization {
            continue;
        }
        let dir = file.parent().expect("file has a parent");
        let Some(k) = docs.first() else {
            problems.push(format!("{}: empty kustomization", file.display()));
            continue;
        };
        let kind = k["kind"].as_str().unwrap_or("Kustomization");
        if kind != "Kustomization" && kind != "Component" {
            problems.push(format!("{}: unexpected kind {kind}", file.display()));
        }
        for key in ["patchesStrategicMerge", "patchesJson6902", "bases"] {
            if !k[key].is_null() {
                problems.push(format!(
                    "{}: deprecated field {key}; use patches/resources",
                    file.display()
                ));
            }
        }
        for key in ["resources", "components"] {
            for entry in str_list(&k[key]) {
                let path = normalize(&dir.join(entry));
                if path.is_dir() {
                    match load_kustomization(&path) {
                        Ok(sub) => {
                            let sub_kind = sub["kind"].as_str().unwrap_or("Kustomization");
                            let want = if key == "components" {
                                "Component"
                            } else {
                                "Kustomization"
                            };
                            if sub_kind != want {
                                problems.push(format!(
                                    "{}: {key} entry {entry} is a {sub_kind}, not a {want}",
                                    file.display()
                                ));
                            }
                        }
                        Err(e) => {
                            problems.push(format!("{}: {key} entry {entry}: {e}", file.display()))
                        }
                    }
                } else if path.is_file() && key == "resources" {
                    referenced.insert(path);
                } else {
                    problems.push(format!(
                        "{}: {key} entry {entry} does not exist",
                        file.display()
                    ));
                }
            }
        }
        for patch in k["patches"].as_array().into_iter().flatten() {
            match (patch["path"].as_str(), patch["patch"].as_str()) {
                (Some(p), None) => {
                    let path = normalize(&dir.join(p));
                    if path.is_file() {
                        referenced.insert(path);
                    } else {
                        problems.push(format!("{}: patch {p} does not exist", file.display()));
                    }
                }
                (None, Some(_)) => {}
                _ => problems.push(format!(
                    "{}: patch needs exactly one of path and patch",
                    file.display()
                )),
            }
        }
    }
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("kustomization.") && !referenced.contains(&normalize(file)) {
            problems.push(format!(
                "{}: not referenced by any kustomization",
                file.display()
            ));
        }
    }
    problems
}

// ------------------------------------------------------------- checks

macro_rules! ensure {
    ($p:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $p.push(format!($($fmt)+));
        }
    };
}

fn kind_of(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn all<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| kind_of(o) == kind).collect()
}

fn one<'a>(objs: &'a [Value], kind: &str) -> Result<&'a Value, String> {
    match all(objs, kind).as_slice() {
        [o] => Ok(o),
        found => Err(format!(
            "expected exactly one {kind}, found {}",
            found.len()
        )),
    }
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The container's arguments parsed by the binary's own flag parser (the
/// process environment left out; the container's `env` is checked apart).
fn serve_args(container: &Value) -> Result<ServeArgs, String> {
    let args = array(&container["args"]);
    let args: Vec<&str> = args.iter().filter_map(Value::as_str).collect();
    if args.len() != array(&container["args"]).len() {
        return Err("container args must all be strings".into());
    }
    support::serve_args(&args).map_err(|e| format!("container args: {e}"))
}

/// The serving certificate and key files, with their flags.
fn tls_files(a: &ServeArgs) -> [(&'static str, &Path); 2] {
    [("tls-cert", &a.tls.cert), ("tls-key", &a.tls.key)]
}

/// A port given as a number or as the name of one of the container's ports.
fn resolve_port(container: &Value, port: &Value) -> Option<u64> {
    port.as_u64().or_else(|| {
        let name = port.as_str()?;
        array(&container["ports"])
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    })
}

/// Every key/value of `selector` is among `labels`, and there is at least one.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

fn has(list: &Value, item: &str) -> bool {
    array(list).iter().any(|v| v == item || v == "*")
}

fn covers(rule: &Value, group: &str, version: &str, resource: &str, op: &str) -> bool {
    has(&rule["apiGroups"], group)
        && has(&rule["apiVersions"], version)
        && has(&rule["resources"], resource)
        && has(&rule["operations"], op)
}

fn any_covers(webhooks: &[&Value], group: &str, version: &str, resource: &str, op: &str) -> bool {
    webhooks
        .iter()
        .flat_map(|w| array(&w["rules"]))
        .any(|r| covers(r, group, version, resource, op))
}

fn check(objs: &[Value], variant: Variant) -> Vec<String> {
    let mut p = Vec::new();
    check_objects(&mut p, objs);
    let dep = match one(objs, "Deployment") {
        Ok(d) => d,
        Err(e) => {
            p.push(e);
            return p;
        }
    };
    let containers = array(&dep["spec"]["template"]["spec"]["containers"]);
    let [container] = containers else {
        p.push(format!(
            "expected one container, found {}",
            containers.len()
        ));
        return p;
    };
    check_pod(&mut p, dep, container);
    check_env(&mut p, container);
    let args = serve_args(container).map_err(|e| p.push(e)).ok();
    if let Some(args) = &args {
        check_args(&mut p, dep, container, args, variant);
    }
    check_service(&mut p, objs, container, args.as_ref());
    check_rbac(&mut p, objs, dep);
    check_webhooks(&mut p, objs, variant);
    if variant == Variant::CertManager {
        check_cert_manager(&mut p, objs);
    } else {
        ensure!(
            p,
            all(objs, "Certificate").is_empty(),
            "only the cert-manager overlay has a Certificate"
        );
    }
    p
}

fn check_objects(p: &mut Vec<String>, objs: &[Value]) {
    const CLUSTER_SCOPED: &[&str] = &[
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    let mut seen = BTreeSet::new();
    for o in objs {
        let id = (
            kind_of(o),
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            name_of(o),
        );
        ensure!(
            p,
            !id.0.is_empty() && !id.2.is_empty(),
            "object without kind or name: {o}"
        );
        ensure!(p, seen.insert(id), "duplicate object {id:?}");
        if CLUSTER_SCOPED.contains(&id.0) {
            ensure!(
                p,
                id.1.is_empty(),
                "cluster-scoped {} {} has a namespace",
                id.0,
                id.2
            );
        } else {
            ensure!(
                p,
                id.1 == NS,
                "{} {} is in namespace {:?}, not {NS}",
                id.0,
                id.2,
                id.1
            );
        }
    }
    ensure!(
        p,
        all(objs, "Namespace").iter().any(|n| name_of(n) == NS),
        "Namespace {NS} missing"
    );
}

/// The Deployment and its pod, apart from what the arguments say.
fn check_pod(p: &mut Vec<String>, dep: &Value, c: &Value) {
    let spec = &dep["spec"];
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    ensure!(
        p,
        spec["replicas"].as_u64().is_some_and(|r| r >= 2),
        "Deployment needs at least 2 replicas"
    );
    ensure!(
        p,
        selects(&spec["selector"]["matchLabels"], labels),
        "Deployment selector does not match its pods"
    );
    // Spread across nodes for real: a node's loss or drain takes one
    // replica at most (a preferred anti-affinity does not promise that).
    let spread = array(&pod["topologySpreadConstraints"]);
    ensure!(
        p,
        spread
            .iter()
            .any(|t| t["topologyKey"] == "kubernetes.io/hostname"
                && t["whenUnsatisfiable"] == "DoNotSchedule"
                && t["maxSkew"] == 1
                && selects(&t["labelSelector"]["matchLabels"], labels)),
        "topology spread across nodes (kubernetes.io/hostname, DoNotSchedule) missing"
    );
    ensure!(
        p,
        pod["priorityClassName"] == "system-cluster-critical",
        "priorityClassName must be system-cluster-critical (every VM start waits for these Pods)"
    );

    ensure!(
        p,
        c["command"].is_null(),
        "container must not override the image entrypoint"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        ensure!(
            p,
            get["path"] == path,
            "{probe} must GET {path}, not {}",
            get["path"]
        );
        ensure!(
            p,
            get["scheme"].as_str().unwrap_or("HTTP") == "HTTP",
            "{probe} must use HTTP"
        );
    }
    if let Some(m) = tls_mount(pod, c) {
        ensure!(
            p,
            m["subPath"].is_null(),
            "the TLS mount must not use subPath (breaks rotation)"
        );
        ensure!(p, m["readOnly"] == true, "the TLS mount must be read-only");
    }

    // Security: container settings win over pod settings.
    let psc = &pod["securityContext"];
    let csc = &c["securityContext"];
    let eff = |k: &str| {
        if csc[k].is_null() {
            psc[k].clone()
        } else {
            csc[k].clone()
        }
    };
    ensure!(p, eff("runAsNonRoot") == true, "runAsNonRoot must be true");
    ensure!(
        p,
        eff("runAsUser").as_u64().is_some_and(|u| u > 0),
        "runAsUser must be a non-root numeric uid"
    );
    ensure!(
        p,
        eff("seccompProfile")["type"] == "RuntimeDefault",
        "seccompProfile must be RuntimeDefault"
    );
    ensure!(
        p,
        csc["readOnlyRootFilesystem"] == true,
        "readOnlyRootFilesystem must be true"
    );
    ensure!(
        p,
        csc["allowPrivilegeEscalation"] == false,
        "allowPrivilegeEscalation must be false"
    );
    ensure!(
        p,
        csc["privileged"] != true,
        "container must not be privileged"
    );
    ensure!(
        p,
        has_exact(&csc["capabilities"]["drop"], "ALL"),
        "capabilities must drop ALL"
    );
    ensure!(
        p,
        array(&csc["capabilities"]["add"]).is_empty(),
        "no capabilities may be added"
    );
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            ensure!(
                p,
                !c["resources"][kind][res].is_null(),
                "resources.{kind}.{res} missing"
            );
        }
    }
}

/// The volume mount of the TLS Secret.
fn tls_mount<'a>(pod: &Value, c: &'a Value) -> Option<&'a Value> {
    let volume = array(&pod["volumes"])
        .iter()
        .find(|v| v["secret"]["secretName"] == TLS_SECRET)?;
    array(&c["volumeMounts"])
        .iter()
        .find(|m| m["name"] == volume["name"])
}

/// The flags are all in `args`, where [`serve_args`] reads them: no
/// environment variable of the container may set one.
fn check_env(p: &mut Vec<String>, c: &Value) {
    let flag_vars = support::serve_flag_env_names();
    for e in array(&c["env"]) {
        let name = e["name"].as_str().unwrap_or("");
        ensure!(
            p,
            !flag_vars.contains(name),
            "container env {name} sets a flag; put it in args"
        );
    }
    ensure!(
        p,
        array(&c["envFrom"]).is_empty(),
        "container envFrom may set flags (REBOOT_WEBHOOK_*); put them in args"
    );
}

/// The arguments against the pod: ports, probes, TLS files, the shutdown
/// budget, and the settings every entry point fixes.
fn check_args(p: &mut Vec<String>, dep: &Value, c: &Value, args: &ServeArgs, variant: Variant) {
    let pod = &dep["spec"]["template"]["spec"];
    let (listen, metrics) = (args.listen.port(), args.metrics_listen.port());
    ensure!(p, metrics == 8080, "metrics port is {metrics}, not 8080");
    for (port, what) in [(listen, "--listen"), (metrics, "--metrics-listen")] {
        ensure!(
            p,
            array(&c["ports"])
                .iter()
                .any(|cp| cp["containerPort"].as_u64() == Some(port.into())),
            "no containerPort for {what} {port}"
        );
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = &c[probe]["httpGet"]["port"];
        ensure!(
            p,
            resolve_port(c, port) == Some(metrics.into()),
            "{probe} port {port} is not the metrics port {metrics}"
        );
    }

    // TLS: the Secret mounted as a directory, the flags pointing into it.
    match tls_mount(pod, c) {
        None => p.push(format!("Secret {TLS_SECRET} is not mounted")),
        Some(m) => {
            let dir = Path::new(m["mountPath"].as_str().unwrap_or(""));
            for ((flag, path), file) in tls_files(args).into_iter().zip(["tls.crt", "tls.key"]) {
                let want = dir.join(file);
                ensure!(
                    p,
                    path == want,
                    "--{flag} is {path:?}, not {want:?} in the TLS mount"
                );
            }
        }
    }
    ensure!(
        p,
        args.log_format == LogFormat::Json,
        "--log-format must be json"
    );
    match variant {
        Variant::Compat => ensure!(
            p,
            args.decision.bootonce == BootOnceMode::Compat,
            "compat needs --bootonce=compat"
        ),
        _ => ensure!(
            p,
            args.decision.bootonce == BootOnceMode::Native,
            "--bootonce must be native outside compat"
        ),
    }
    let (delay, drain) = (args.shutdown.delay, args.shutdown.drain);
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    ensure!(
        p,
        Duration::from_secs(grace) > delay + drain,
        "terminationGracePeriodSeconds {grace} must exceed shutdown delay {delay:?} + drain timeout {drain:?}"
    );
}

fn has_exact(list: &Value, item: &str) -> bool {
    array(list).iter().any(|v| v == item)
}

fn check_service(p: &mut Vec<String>, objs: &[Value], c: &Value, args: Option<&ServeArgs>) {
    let Some(svc) = all(objs, "Service").into_iter().find(|s| name_of(s) == SVC) else {
        return p.push(format!("Service {SVC} missing"));
    };
    let dep = one(objs, "Deployment").expect("checked by caller");
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    ensure!(
        p,
        selects(&svc["spec"]["selector"], labels),
        "Service selector does not match the pods"
    );
    let ports = array(&svc["spec"]["ports"]);
    let target = |sp: &Value| {
        resolve_port(
            c,
            if sp["targetPort"].is_null() {
                &sp["port"]
            } else {
                &sp["targetPort"]
            },
        )
    };
    let https = ports.iter().find(|sp| sp["port"] == 443);
    match https {
        None => p.push("Service has no port 443".into()),
        Some(sp) => ensure!(
            p,
            sp["name"] == "https",
            "Service port 443 must be named https"
        ),
    }
    // Where the ports lead, once the arguments say where the server listens.
    let Some(args) = args else { return };
    let listen = u64::from(args.listen.port());
    if let Some(sp) = https {
        ensure!(
            p,
            target(sp) == Some(listen),
            "Service port 443 targets {:?}, but the webhook listens on {listen}",
            target(sp)
        );
    }
    let metrics = u64::from(args.metrics_listen.port());
    ensure!(
        p,
        ports
            .iter()
            .any(|sp| sp["name"] == "metrics" && target(sp) == Some(metrics)),
        "Service has no port named metrics targeting {metrics}"
    );
}

fn check_rbac(p: &mut Vec<String>, objs: &[Value], dep: &Value) {
    let sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    ensure!(
        p,
        all(objs, "ServiceAccount").iter().any(|s| name_of(s) == sa),
        "ServiceAccount {sa} missing"
    );
    ensure!(
        p,
        all(objs, "Role").is_empty() && all(objs, "RoleBinding").is_empty(),
        "unexpected Role/RoleBinding"
    );
    let role = match one(objs, "ClusterRole") {
        Ok(r) => r,
        Err(e) => return p.push(e),
    };
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in array(&role["rules"]) {
        ensure!(
            p,
            rule["nonResourceURLs"].is_null(),
            "ClusterRole must not grant nonResourceURLs"
        );
        ensure!(
            p,
            rule["resourceNames"].is_null(),
            "ClusterRole rules must not use resourceNames"
        );
        for g in str_list(&rule["apiGroups"]) {
            for r in str_list(&rule["resources"]) {
                granted
                    .entry((g.to_owned(), r.to_owned()))
                    .or_default()
                    .extend(str_list(&rule["verbs"]).into_iter().map(str::to_owned));
            }
        }
    }
    let want: BTreeSet<(String, String)> = ["virtualmachines", "kubevirts"]
        .iter()
        .map(|r| (KUBEVIRT.to_owned(), (*r).to_owned()))
        .collect();
    let got: BTreeSet<_> = granted.keys().cloned().collect();
    ensure!(
        p,
        got == want,
        "ClusterRole grants {got:?}, must grant exactly {want:?}"
    );
    let read: BTreeSet<String> = ["get", "list", "watch"]
        .iter()
        .map(|v| (*v).to_owned())
        .collect();
    for (res, verbs) in &granted {
        ensure!(
            p,
            *verbs == read,
            "ClusterRole verbs on {res:?} are {verbs:?}, must be get/list/watch"
        );
    }
    let bound = all(objs, "ClusterRoleBinding").into_iter().any(|b| {
        b["roleRef"]["kind"] == "ClusterRole"
            && b["roleRef"]["name"] == name_of(role)
            && array(&b["subjects"])
                .iter()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == NS)
    });
    ensure!(
        p,
        bound,
        "no ClusterRoleBinding binds {} to {NS}/{sa}",
        name_of(role)
    );
}

fn check_webhooks(p: &mut Vec<String>, objs: &[Value], variant: Variant) {
    let mut by_path: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for (kind, path) in [
        ("ValidatingWebhookConfiguration", "/validate"),
        ("MutatingWebhookConfiguration", "/mutate"),
    ] {
        let config = match one(objs, kind) {
            Ok(c) => c,
            Err(e) => {
                p.push(e);
                continue;
            }
        };
        let webhooks = array(&config["webhooks"]);
        ensure!(p, !webhooks.is_empty(), "{kind} has no webhooks");
        for w in webhooks {
            let name = w["name"].as_str().unwrap_or("");
            ensure!(
                p,
                name.matches('.').count() >= 2,
                "{kind}: webhook name {name:?} is not fully qualified"
            );
            let svc = &w["clientConfig"]["service"];
            ensure!(
                p,
                w["clientConfig"]["url"].is_null(),
                "{name}: must call the Service, not a URL"
            );
            ensure!(
                p,
                svc["namespace"] == NS && svc["name"] == SVC,
                "{name}: must call Service {NS}/{SVC}"
            );
            ensure!(
                p,
                svc["port"] == 443,
                "{name}: must call port 443, not {}",
                svc["port"]
            );
            ensure!(
                p,
                svc["path"] == path,
                "{name}: path must be {path}, not {}",
                svc["path"]
            );
            ensure!(
                p,
                w["sideEffects"] == "None",
                "{name}: sideEffects must be None"
            );
            ensure!(
                p,
                has_exact(&w["admissionReviewVersions"], "v1"),
                "{name}: admissionReviewVersions must contain v1"
            );
            ensure!(
                p,
                w["failurePolicy"] == "Fail",
                "{name}: failurePolicy must be set to Fail"
            );
            ensure!(
                p,
                w["timeoutSeconds"]
                    .as_u64()
                    .is_some_and(|t| (1..=30).contains(&t)),
                "{name}: timeoutSeconds must be set, at most 30"
            );
            ensure!(
                p,
                w["matchPolicy"] == "Equivalent",
                "{name}: matchPolicy must be Equivalent"
            );
            let exempt = array(&w["namespaceSelector"]["matchExpressions"])
                .iter()
                .any(|e| {
                    e["key"] == "kubernetes.io/metadata.name"
                        && e["operator"] == "NotIn"
                        && has_exact(&e["values"], "kube-system")
                        && has_exact(&e["values"], NS)
                });
            ensure!(
                p,
                exempt,
                "{name}: namespaceSelector must exclude kube-system and {NS}"
            );
            for rule in array(&w["rules"]) {
                ensure!(
                    p,
                    !has_exact(&rule["resources"], "*"),
                    "{name}: rules must name resources"
                );
            }
            // `make deploy` replaces the empty caBundle placeholder with the
            // dev CA; with cert-manager the field belongs to cainjector.
            if variant == Variant::CertManager {
                ensure!(
                    p,
                    w["clientConfig"]["caBundle"].is_null(),
                    "{name}: caBundle must be absent with cert-manager (cainjector owns it)"
                );
            } else {
                ensure!(
                    p,
                    w["clientConfig"]["caBundle"] == "",
                    "{name}: caBundle placeholder \"\" for make deploy missing"
                );
            }
            // tests/match_conditions.rs proves the conditions of the base's
            // files against the decisions: every entry point must carry
            // exactly those, or none where the cluster has no matchConditions.
            let base = manifests_dir().join(format!(
                "base/{}-webhook.yaml",
                if path == "/validate" {
                    "validating"
                } else {
                    "mutating"
                }
            ));
            let proven = read_docs(&base).map(|d| d[0]["webhooks"][0]["matchConditions"].clone());
            if variant == Variant::NoMatchConditions {
                ensure!(
                    p,
                    w.get("matchConditions").is_none(),
                    "{name}: matchConditions must be removed in the variant for clusters without them"
                );
            } else {
                ensure!(
                    p,
                    !array(&w["matchConditions"]).is_empty()
                        && proven.as_ref().ok() == Some(&w["matchConditions"]),
                    "{name}: matchConditions must be exactly those of {} (proven by tests/match_conditions.rs)",
                    base.display()
                );
            }
            if path == "/mutate" {
                ensure!(
                    p,
                    w["reinvocationPolicy"] == "IfNeeded",
                    "{name}: reinvocationPolicy must be IfNeeded"
                );
            }
            by_path.entry(path).or_default().push(w);
        }
    }

    let validating = by_path.get("/validate").cloned().unwrap_or_default();
    let judged = [
        (KUBEVIRT, &["v1"][..], "virtualmachines"),
        (KUBEVIRT, &["v1"][..], "virtualmachineinstances"),
        (KUBEVIRT, &["v1"][..], "virtualmachineinstancereplicasets"),
        (POOL, &["v1alpha1", "v1beta1"][..], "virtualmachinepools"),
    ];
    for (group, versions, resource) in judged {
        for version in versions {
            for op in ["CREATE", "UPDATE"] {
                ensure!(
                    p,
                    any_covers(&validating, group, version, resource, op),
                    "validating webhook misses {op} {group}/{version} {resource}"
                );
            }
        }
    }
    let judged_resources: Vec<&str> = judged.iter().map(|j| j.2).collect();
    for rule in validating.iter().flat_map(|w| array(&w["rules"])) {
        for r in str_list(&rule["resources"]) {
            ensure!(
                p,
                judged_resources.contains(&r),
                "validating webhook must not match {r}"
            );
        }
    }

    let mutating = by_path.get("/mutate").cloned().unwrap_or_default();
    ensure!(
        p,
        any_covers(
            &mutating,
            KUBEVIRT,
            "v1",
            "virtualmachineinstances",
            "CREATE"
        ),
        "mutating webhook misses CREATE kubevirt.io/v1 virtualmachineinstances"
    );
    let mut allowed = vec!["virtualmachineinstances"];
    if variant == Variant::Compat {
        allowed.extend(["virtualmachines", "virtualmachinepools"]);
        for (group, version, resource) in [
            (KUBEVIRT, "v1", "virtualmachines"),
            (POOL, "v1alpha1", "virtualmachinepools"),
            (POOL, "v1beta1", "virtualmachinepools"),
        ] {
            for op in ["CREATE", "UPDATE"] {
                ensure!(
                    p,
                    any_covers(&mutating, group, version, resource, op),
                    "compat: mutating webhook misses {op} {group}/{version} {resource}"
                );
            }
        }
    }
    for rule in mutating.iter().flat_map(|w| array(&w["rules"])) {
        let resources = str_list(&rule["resources"]);
        for r in &resources {
            ensure!(
                p,
                allowed.contains(r),
                "mutating webhook must not match {r} ({variant:?})"
            );
        }
        if resources.contains(&"virtualmachineinstances") {
            ensure!(
                p,
                str_list(&rule["operations"]) == ["CREATE"],
                "mutating webhook must only see CREATE of virtualmachineinstances"
            );
        }
    }
}

fn check_cert_manager(p: &mut Vec<String>, objs: &[Value]) {
    // cert-manager's pattern for webhooks: a self-signed Issuer signs a CA
    // that keeps its key on renewal, a CA Issuer signs the serving
    // certificate; a renewal of the latter leaves the trust anchor alone.
    let certs = all(objs, "Certificate");
    let (cas, serving): (Vec<&Value>, Vec<&Value>) =
        certs.iter().partition(|c| c["spec"]["isCA"] == true);
    let issuer_of = |c: &Value| {
        all(objs, "Issuer")
            .into_iter()
            .find(|i| name_of(i) == c["spec"]["issuerRef"]["name"])
    };
    let [ca] = cas.as_slice() else {
        return p.push(format!(
            "expected one CA Certificate (isCA: true), found {}",
            cas.len()
        ));
    };
    ensure!(
        p,
        ca["spec"]["privateKey"]["rotationPolicy"] == "Never",
        "the CA Certificate must keep its key on renewal (privateKey.rotationPolicy: Never)"
    );
    ensure!(
        p,
        issuer_of(ca).is_some_and(|i| i["spec"]["selfSigned"].is_object()),
        "the CA Certificate must be issued by a selfSigned Issuer of the overlay"
    );
    let [cert] = serving.as_slice() else {
        return p.push(format!(
            "expected one serving Certificate, found {}",
            serving.len()
        ));
    };
    let cert = *cert;
    ensure!(
        p,
        issuer_of(cert).is_some_and(|i| i["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]),
        "the serving Certificate must be issued by a CA Issuer signing with the CA's Secret"
    );
    ensure!(
        p,
        cert["spec"]["secretName"] == TLS_SECRET,
        "Certificate must write Secret {TLS_SECRET}"
    );
    let dns = format!("{SVC}.{NS}.svc");
    ensure!(
        p,
        has_exact(&cert["spec"]["dnsNames"], &dns),
        "Certificate dnsNames must contain {dns}"
    );
    let issuer = &cert["spec"]["issuerRef"];
    ensure!(
        p,
        issuer["kind"].as_str().unwrap_or("Issuer") == "Issuer"
            && all(objs, "Issuer")
                .iter()
                .any(|i| name_of(i) == issuer["name"]),
        "Certificate issuerRef {issuer} does not name an Issuer of the overlay"
    );
    let want = format!("{NS}/{}", name_of(cert));
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        for config in all(objs, kind) {
            ensure!(
                p,
                config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
                    == want.as_str(),
                "{kind} lacks cert-manager.io/inject-ca-from: {want}"
            );
        }
    }
}

// ------------------------------------------------------------- tests

fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn kustomizations_reference_existing_files() {
    assert_no_problems("manifests/", &kustomization_problems(&manifests_dir()));
}

#[test]
fn kustomization_check_catches_missing_and_orphaned_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("kustomization.yaml"),
        "resources: [present.yaml, missing.yaml, nodir]\npatches:\n  - path: nopatch.yaml\n",
    )
    .expect("write");
    std::fs::write(tmp.path().join("present.yaml"), "kind: ConfigMap\n").expect("write");
    std::fs::write(tmp.path().join("orphan.yaml"), "kind: ConfigMap\n").expect("write");
    let problems = kustomization_problems(tmp.path()).join("\n");
    for want in [
        "missing.yaml does not exist",
        "nodir does not exist",
        "nopatch.yaml does not exist",
        "orphan.yaml: not referenced",
    ] {
        assert!(
            problems.contains(want),
            "{want:?} not reported in:\n{problems}"
        );
    }
    assert!(
        !problems.contains("present.yaml"),
        "present.yaml wrongly reported:\n{problems}"
    );
}

#[test]
fn entry_points_render_and_pass_all_checks() {
    for (dir, variant) in ENTRY_POINTS {
        let Some(objs) = render(dir) else { return };
        assert_no_problems(
            &format!("kubectl kustomize manifests/{dir} ({variant:?})"),
            &check(&objs, *variant),
        );
    }
}

#[test]
fn manifests_root_is_the_base() {
    let Some(root) = render("") else { return };
    assert_eq!(root, render("base").expect("render manifests/base"));
}

#[test]
fn compat_component_only_adds_the_compat_pieces() {
    let Some(base) = render("base") else { return };
    let compat = render("overlays/compat").expect("compat");
    let differing: Vec<&str> = base
        .iter()
        .zip(&compat)
        .filter(|(b, c)| b != c)
        .map(|(b, _)| kind_of(b))
        .collect();
    assert_eq!(base.len(), compat.len());
    assert_eq!(differing, ["Deployment", "MutatingWebhookConfiguration"]);
    // The base itself must fail the compat checks, so they test something.
    let problems = check(&base, Variant::Compat).join("\n");
    assert!(problems.contains("--bootonce=compat"), "{problems}");
    assert!(
        problems.contains("compat: mutating webhook misses CREATE kubevirt.io/v1 virtualmachines"),
        "{problems}"
    );
}

#[test]
fn no_match_conditions_component_only_removes_the_conditions() {
    let Some(mut base) = render("base") else {
        return;
    };
    let stripped = render("overlays/no-match-conditions").expect("no-match-conditions");
    // The base itself must fail this variant's check, so it tests something.
    let problems = check(&base, Variant::NoMatchConditions).join("\n");
    assert_eq!(
        problems.matches("matchConditions must be removed").count(),
        2,
        "{problems}"
    );
    for kind in [V, M] {
        let removed = webhook(&mut base, kind)
            .as_object_mut()
            .expect("webhook")
            .remove("matchConditions");
        assert!(removed.is_some(), "{kind} has no matchConditions");
    }
    assert_eq!(base, stripped);
}

fn find_mut<'a>(objs: &'a mut [Value], kind: &str) -> &'a mut Value {
    objs.iter_mut().find(|o| kind_of(o) == kind).expect(kind)
}

fn container(objs: &mut [Value]) -> &mut Value {
    &mut find_mut(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn set_arg(objs: &mut [Value], prefix: &str, value: &str) {
    let args = container(objs)["args"].as_array_mut().expect("args");
    args.retain(|a| !a.as_str().is_some_and(|s| s.starts_with(prefix)));
    args.push(value.into());
}

fn webhook<'a>(objs: &'a mut [Value], kind: &str) -> &'a mut Value {
    &mut find_mut(objs, kind)["webhooks"][0]
}

const V: &str = "ValidatingWebhookConfiguration";
const M: &str = "MutatingWebhookConfiguration";

type Breakage = (&'static str, fn(&mut [Value]), &'static str);

const BREAKAGES: &[Breakage] = &[
    (
        "validate path",
        |o| webhook(o, V)["clientConfig"]["service"]["path"] = "/mutate".into(),
        "path must be /validate",
    ),
    (
        "mutate path",
        |o| webhook(o, M)["clientConfig"]["service"]["path"] = "/validate".into(),
        "path must be /mutate",
    ),
    (
        "webhook port",
        |o| webhook(o, V)["clientConfig"]["service"]["port"] = 8443.into(),
        "must call port 443",
    ),
    (
        "webhook service",
        |o| webhook(o, M)["clientConfig"]["service"]["name"] = "other".into(),
        "must call Service",
    ),
    (
        "caBundle",
        |o| {
            webhook(o, M)["clientConfig"]
                .as_object_mut()
                .expect("clientConfig")
                .remove("caBundle");
        },
        "caBundle placeholder",
    ),
    (
        "no matchConditions",
        |o| {
            webhook(o, M)
                .as_object_mut()
                .expect("webhook")
                .remove("matchConditions");
        },
        "matchConditions must be exactly",
    ),
    (
        "narrowed matchConditions",
        |o| webhook(o, V)["matchConditions"][1]["expression"] = "false".into(),
        "matchConditions must be exactly",
    ),
    (
        "sideEffects",
        |o| webhook(o, V)["sideEffects"] = "Unknown".into(),
        "sideEffects must be None",
    ),
    (
        "review versions",
        |o| webhook(o, M)["admissionReviewVersions"] = json!(["v1beta1"]),
        "must contain v1",
    ),
    (
        "no failurePolicy",
        |o| {
            webhook(o, V)
                .as_object_mut()
                .expect("webhook")
                .remove("failurePolicy");
        },
        "failurePolicy must be set",
    ),
    (
        "Ignore",
        |o| webhook(o, M)["failurePolicy"] = "Ignore".into(),
        "failurePolicy must be set to Fail",
    ),
    (
        "no timeout",
        |o| {
            webhook(o, M)
                .as_object_mut()
                .expect("webhook")
                .remove("timeoutSeconds");
        },
        "timeoutSeconds must be set",
    ),
    (
        "long timeout",
        |o| webhook(o, V)["timeoutSeconds"] = 31.into(),
        "timeoutSeconds must be set, at most 30",
    ),
    (
        "kube-system",
        |o| {
            webhook(o, V)["namespaceSelector"]["matchExpressions"][0]["values"] = json!([NS]);
        },
        "must exclude kube-system",
    ),
    (
        "own namespace",
        |o| {
            webhook(o, M)["namespaceSelector"]["matchExpressions"][0]["values"] =
                json!(["kube-system"]);
        },
        "must exclude kube-system and kubevirt-reboot-webhook",
    ),
    (
        "reinvocation",
        |o| webhook(o, M)["reinvocationPolicy"] = "Never".into(),
        "reinvocationPolicy must be IfNeeded",
    ),
    (
        "vmi update",
        |o| webhook(o, M)["rules"][0]["operations"] = json!(["CREATE", "UPDATE"]),
        "only see CREATE",
    ),
    (
        "mutate vms",
        |o| {
            webhook(o, M)["rules"][0]["resources"] =
                json!(["virtualmachineinstances", "virtualmachines"])
        },
        "must not match virtualmachines",
    ),
    (
        "no pools",
        |o| {
            webhook(o, V)["rules"]
                .as_array_mut()
                .expect("rules")
                .retain(|r| !has_exact(&r["resources"], "virtualmachinepools"));
        },
        "misses CREATE pool.kubevirt.io/v1alpha1 virtualmachinepools",
    ),
    (
        "no vm update",
        |o| webhook(o, V)["rules"][0]["operations"] = json!(["CREATE"]),
        "misses UPDATE kubevirt.io/v1 virtualmachines",
    ),
    (
        "validate pods",
        |o| {
            webhook(o, V)["rules"][0]["resources"] =
                json!(["virtualmachines", "virtualmachineinstances", "pods"])
        },
        "must not match pods",
    ),
    (
        "target port",
        |o| find_mut(o, "Service")["spec"]["ports"][0]["targetPort"] = 9443.into(),
        "Service port 443 targets",
    ),
    (
        "listen",
        |o| set_arg(o, "--listen", "--listen=0.0.0.0:9443"),
        "no containerPort for --listen",
    ),
    (
        "metrics listen",
        |o| set_arg(o, "--metrics-listen", "--metrics-listen=0.0.0.0:9090"),
        "metrics port is 9090",
    ),
    (
        "unknown flag",
        |o| set_arg(o, "--no-such-flag", "--no-such-flag=1"),
        "unexpected argument '--no-such-flag'",
    ),
    (
        "duration without unit",
        |o| set_arg(o, "--drain-timeout", "--drain-timeout=25"),
        "--drain-timeout=25` does not parse",
    ),
    (
        "not serve",
        |o| container(o)["args"] = json!(["certs", "--out=/tmp"]),
        "`certs --out=/tmp` is not `serve`",
    ),
    (
        "flag in env",
        |o| container(o)["env"] = json!([{"name": "REBOOT_WEBHOOK_BOOTONCE", "value": "compat"}]),
        "container env REBOOT_WEBHOOK_BOOTONCE sets a flag",
    ),
    (
        "envFrom",
        |o| container(o)["envFrom"] = json!([{"configMapRef": {"name": "flags"}}]),
        "envFrom may set flags",
    ),
    (
        "readiness path",
        |o| container(o)["readinessProbe"]["httpGet"]["path"] = "/healthz".into(),
        "readinessProbe must GET /readyz",
    ),
    (
        "liveness path",
        |o| container(o)["livenessProbe"]["httpGet"]["path"] = "/metrics".into(),
        "livenessProbe must GET /healthz",
    ),
    (
        "probe port",
        |o| container(o)["livenessProbe"]["httpGet"]["port"] = 8443.into(),
        "livenessProbe port 8443 is not the metrics port",
    ),
    (
        "tls cert",
        |o| set_arg(o, "--tls-cert", "--tls-cert=/tmp/tls.crt"),
        "--tls-cert is \"/tmp/tls.crt\"",
    ),
    (
        "tls key",
        |o| set_arg(o, "--tls-key", "--tls-key=/etc/webhook/tls/key.pem"),
        "--tls-key is",
    ),
    (
        "subPath",
        |o| container(o)["volumeMounts"][0]["subPath"] = "tls.crt".into(),
        "must not use subPath",
    ),
    (
        "secret",
        |o| {
            find_mut(o, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]
                ["secretName"] = "x".into()
        },
        "is not mounted",
    ),
    (
        "log format",
        |o| set_arg(o, "--log-format", "--log-format=text"),
        "--log-format must be json",
    ),
    (
        "bootonce",
        |o| set_arg(o, "--bootonce", "--bootonce=compat"),
        "--bootonce must be native",
    ),
    (
        "grace",
        |o| {
            find_mut(o, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] =
                30.into()
        },
        "must exceed shutdown delay",
    ),
    (
        "drain",
        |o| set_arg(o, "--drain-timeout", "--drain-timeout=1m"),
        "must exceed shutdown delay 5s + drain timeout 60s",
    ),
    (
        "replicas",
        |o| find_mut(o, "Deployment")["spec"]["replicas"] = 1.into(),
        "at least 2 replicas",
    ),
    (
        "spread",
        |o| {
            find_mut(o, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
                ["whenUnsatisfiable"] = "ScheduleAnyway".into();
        },
        "topology spread across nodes",
    ),
    (
        "priority",
        |o| {
            find_mut(o, "Deployment")["spec"]["template"]["spec"]["priorityClassName"] =
                Value::Null;
        },
        "priorityClassName",
    ),
    (
        "root",
        |o| container(o)["securityContext"]["runAsNonRoot"] = false.into(),
        "runAsNonRoot must be true",
    ),
    (
        "uid 0",
        |o| container(o)["securityContext"]["runAsUser"] = 0.into(),
        "runAsUser must be a non-root",
    ),
    (
        "rw root",
        |o| container(o)["securityContext"]["readOnlyRootFilesystem"] = false.into(),
        "readOnlyRootFilesystem",
    ),
    (
        "escalation",
        |o| {
            container(o)["securityContext"]
                .as_object_mut()
                .expect("sc")
                .remove("allowPrivilegeEscalation");
        },
        "allowPrivilegeEscalation",
    ),
    (
        "caps",
        |o| container(o)["securityContext"]["capabilities"]["drop"] = json!(["NET_RAW"]),
        "drop ALL",
    ),
    (
        "cap add",
        |o| container(o)["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"]),
        "no capabilities may be added",
    ),
    (
        "seccomp",
        |o| container(o)["securityContext"]["seccompProfile"]["type"] = "Unconfined".into(),
        "seccompProfile",
    ),
    (
        "limits",
        |o| container(o)["resources"]["limits"] = Value::Null,
        "resources.limits.cpu missing",
    ),
    (
        "rbac secrets",
        |o| {
            find_mut(o, "ClusterRole")["rules"][0]["resources"] =
                json!(["virtualmachines", "kubevirts", "secrets"])
        },
        "must grant exactly",
    ),
    (
        "rbac missing",
        |o| find_mut(o, "ClusterRole")["rules"][0]["resources"] = json!(["virtualmachines"]),
        "must grant exactly",
    ),
    (
        "rbac write",
        |o| {
            find_mut(o, "ClusterRole")["rules"][0]["verbs"] =
                json!(["get", "list", "watch", "update"])
        },
        "must be get/list/watch",
    ),
    (
        "rbac core",
        |o| find_mut(o, "ClusterRole")["rules"][0]["apiGroups"] = json!(["", "kubevirt.io"]),
        "must grant exactly",
    ),
    (
        "binding",
        |o| find_mut(o, "ClusterRoleBinding")["subjects"][0]["namespace"] = "default".into(),
        "no ClusterRoleBinding binds",
    ),
    (
        "namespace",
        |o| find_mut(o, "Service")["metadata"]["namespace"] = "default".into(),
        "not kubevirt-reboot-webhook",
    ),
    (
        "svc selector",
        |o| find_mut(o, "Service")["spec"]["selector"] = json!({"app": "other"}),
        "Service selector",
    ),
];

#[test]
fn checks_catch_broken_manifests() {
    let Some(base) = render("base") else { return };
    assert_no_problems("base", &check(&base, Variant::Base));
    for (what, breakage, want) in BREAKAGES {
        let mut objs = base.clone();
        breakage(&mut objs);
        let problems = check(&objs, Variant::Base);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "breaking {what}: expected a problem containing {want:?}, got {problems:#?}"
        );
    }
    // Environment variables that set no flag are the container's business.
    let mut objs = base;
    container(&mut objs)["env"] = json!([{"name": "RUST_LOG", "value": "debug"}]);
    assert_no_problems("base with RUST_LOG", &check(&objs, Variant::Base));
}

#[test]
fn cert_manager_checks_catch_missing_injection() {
    let Some(good) = render("overlays/cert-manager") else {
        return;
    };
    let mut objs = good.clone();
    find_mut(&mut objs, V)["metadata"]["annotations"] = json!({});
    let problems = check(&objs, Variant::CertManager).join("\n");
    assert!(
        problems.contains("ValidatingWebhookConfiguration lacks cert-manager.io/inject-ca-from"),
        "{problems}"
    );
    let mut objs = good.clone();
    webhook(&mut objs, M)["clientConfig"]["caBundle"] = "".into();
    let problems = check(&objs, Variant::CertManager).join("\n");
    assert!(problems.contains("caBundle must be absent"), "{problems}");
    let mut objs = good.clone();
    serving_certificate(&mut objs)["spec"]["secretName"] = "other".into();
    let problems = check(&objs, Variant::CertManager).join("\n");
    assert!(problems.contains("must write Secret"), "{problems}");
    // A self-signed serving certificate (the overlay's former pattern):
    // every renewal would change the trust anchor.
    let mut objs = good.clone();
    serving_certificate(&mut objs)["spec"]["issuerRef"]["name"] =
        "kubevirt-reboot-webhook-selfsigned".into();
    let problems = check(&objs, Variant::CertManager).join("\n");
    assert!(
        problems.contains("must be issued by a CA Issuer"),
        "{problems}"
    );
    let mut objs = good;
    for c in objs
        .iter_mut()
        .filter(|o| o["kind"] == "Certificate" && o["spec"]["isCA"] == true)
    {
        c["spec"]["privateKey"]["rotationPolicy"] = "Always".into();
    }
    let problems = check(&objs, Variant::CertManager).join("\n");
    assert!(problems.contains("keep its key on renewal"), "{problems}");
}

fn serving_certificate(objs: &mut [Value]) -> &mut Value {
    objs.iter_mut()
        .find(|o| o["kind"] == "Certificate" && o["spec"]["isCA"] != true)
        .expect("a serving Certificate")
}
