//! Static checks of the kustomize manifests in `manifests/`.
//!
//! The manifests are rendered by a small kustomize subset (resources,
//! components, JSON 6902 and merge patches) so the checks run without any
//! tool; when `kubectl` is on PATH, `kubectl kustomize` renders every
//! entry point too and must agree. Every check reports a problem string;
//! `checks_catch_broken_manifests` breaks the real manifests one way at a
//! time and asserts that the matching problem is reported.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

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
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

// ---------------------------------------------------------------- parsing

fn parse_docs(text: &str, origin: &Path) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc)
            .map_err(|e| format!("{}: document {i}: {e}", origin.display()))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn read_docs(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_docs(&text, path)
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

// ------------------------------------------------------- mini kustomize

fn render(dir: &Path) -> Result<Vec<Value>, String> {
    let k = load_kustomization(dir)?;
    if k["kind"].as_str().unwrap_or("Kustomization") != "Kustomization" {
        return Err(format!("{}: not a Kustomization", dir.display()));
    }
    let mut objs = Vec::new();
    build(dir, &k, &mut objs)?;
    Ok(objs)
}

const SUPPORTED_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "components",
    "patches",
];

fn build(dir: &Path, k: &Value, objs: &mut Vec<Value>) -> Result<(), String> {
    for key in k.as_object().into_iter().flat_map(|m| m.keys()) {
        if !SUPPORTED_FIELDS.contains(&key.as_str()) {
            return Err(format!(
                "{}: field {key} is not supported by this test's kustomize subset; extend tests/manifests.rs",
                dir.display()
            ));
        }
    }
    for entry in str_list(&k["resources"]) {
        let path = normalize(&dir.join(entry));
        if path.is_dir() {
            objs.extend(render(&path)?);
        } else {
            objs.extend(read_docs(&path)?);
        }
    }
    for entry in str_list(&k["components"]) {
        let path = normalize(&dir.join(entry));
        let component = load_kustomization(&path)?;
        if component["kind"] != "Component" {
            return Err(format!("{}: not a Component", path.display()));
        }
        build(&path, &component, objs)?;
    }
    for patch in k["patches"].as_array().into_iter().flatten() {
        let docs = match (patch["path"].as_str(), patch["patch"].as_str()) {
            (Some(p), None) => read_docs(&normalize(&dir.join(p)))?,
            (None, Some(text)) => parse_docs(text, dir)?,
            _ => return Err(format!("{}: patch needs path or patch", dir.display())),
        };
        for doc in docs {
            apply_patch(dir, &doc, &patch["target"], objs)?;
        }
    }
    Ok(())
}

fn group_of(obj: &Value) -> (&str, &str) {
    let api = obj["apiVersion"].as_str().unwrap_or("");
    api.rsplit_once('/').unwrap_or(("", api))
}

fn matches_target(obj: &Value, target: &Value) -> bool {
    let (group, version) = group_of(obj);
    let fields = [
        ("group", group),
        ("version", version),
        ("kind", obj["kind"].as_str().unwrap_or("")),
        ("name", obj["metadata"]["name"].as_str().unwrap_or("")),
        (
            "namespace",
            obj["metadata"]["namespace"].as_str().unwrap_or(""),
        ),
    ];
    fields
        .iter()
        .all(|(key, actual)| target[key].as_str().is_none_or(|want| want == *actual))
}

fn apply_patch(
    dir: &Path,
    patch: &Value,
    target: &Value,
    objs: &mut [Value],
) -> Result<(), String> {
    let target = if target.is_null() {
        if patch.is_array() {
            return Err(format!(
                "{}: a JSON 6902 patch needs a target",
                dir.display()
            ));
        }
        json!({"kind": patch["kind"], "name": patch["metadata"]["name"]})
    } else {
        target.clone()
    };
    let mut hits = 0;
    for obj in objs.iter_mut().filter(|o| matches_target(o, &target)) {
        hits += 1;
        if let Some(ops) = patch.as_array() {
            for op in ops {
                json6902(obj, op).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
        } else {
            merge(obj, patch).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    if hits == 0 {
        return Err(format!(
            "{}: patch target {target} matches nothing",
            dir.display()
        ));
    }
    Ok(())
}

/// JSON merge patch for maps; lists would need strategic-merge keys, so
/// refuse them instead of merging them wrongly.
fn merge(obj: &mut Value, patch: &Value) -> Result<(), String> {
    match patch {
        Value::Object(map) => {
            if !obj.is_object() {
                *obj = json!({});
            }
            for (k, v) in map {
                if v.is_null() {
                    obj.as_object_mut().expect("object").remove(k);
                } else {
                    merge(&mut obj[k], v)?;
                }
            }
            Ok(())
        }
        Value::Array(_) => Err(
            "strategic merge of lists is not supported by this test; use a JSON 6902 patch".into(),
        ),
        other => {
            *obj = other.clone();
            Ok(())
        }
    }
}

fn json6902(obj: &mut Value, op: &Value) -> Result<(), String> {
    let path = op["path"].as_str().ok_or("JSON 6902 op without path")?;
    let tokens: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = tokens.split_last().ok_or("empty path")?;
    let mut parent = &mut *obj;
    for t in parents {
        parent = match parent {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("{path}: {t} not found"))?;
    }
    let value = op["value"].clone();
    match (op["op"].as_str(), parent) {
        (Some("add" | "replace"), Value::Object(m)) => {
            if op["op"] == "replace" && !m.contains_key(last) {
                return Err(format!("{path}: nothing to replace"));
            }
            m.insert(last.clone(), value);
        }
        (Some("add"), Value::Array(a)) if last == "-" => a.push(value),
        (Some(kind @ ("add" | "replace")), Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
            match kind {
                "add" if i <= a.len() => a.insert(i, value),
                "replace" if i < a.len() => a[i] = value,
                _ => return Err(format!("{path}: index out of range")),
            }
        }
        (Some("remove"), Value::Object(m)) => {
            m.remove(last)
                .ok_or_else(|| format!("{path}: nothing to remove"))?;
        }
        (Some("remove"), Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
            if i >= a.len() {
                return Err(format!("{path}: index out of range"));
            }
            a.remove(i);
        }
        (other, _) => return Err(format!("{path}: unsupported op {other:?}")),
    }
    Ok(())
}

/// Whether the tests run in CI (`CI` set to anything but empty, `0` or `false`,
/// as CI systems set it).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "False" | "FALSE"))
}

fn kubectl_kustomize(dir: &Path) -> Option<Result<Vec<Value>, String>> {
    // `KUBECTL` names another binary, as in the Makefile.
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = match Command::new(&kubectl).arg("kustomize").arg(dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("{kubectl}: {e}"))),
    };
    if !out.status.success() {
        return Some(Err(format!(
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Some(parse_docs(&String::from_utf8_lossy(&out.stdout), dir))
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

/// Port of an address like `0.0.0.0:8443` or `[::]:8443`.
fn addr_port(addr: &str) -> Option<u64> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// Seconds of a Go-style duration such as `5s`, `1m30s`, `500ms`, read as
/// the binary reads it (kube's parser).
fn duration_secs(s: &str) -> Option<f64> {
    kubevirt_reboot_webhook::cli::parse_go_duration(s).map(|d| d.as_secs_f64())
}

/// The `serve` flags of a container: command line first, then
/// `REBOOT_WEBHOOK_<FLAG>` environment variables, like clap does.
struct Flags {
    subcommand: Option<String>,
    cli: Vec<(String, Option<String>)>,
    env: BTreeMap<String, String>,
}

impl Flags {
    fn of(container: &Value) -> Flags {
        let args = str_list(&container["args"]);
        let mut cli = Vec::new();
        let mut i = 1;
        while i < args.len() {
            if let Some(flag) = args[i].strip_prefix("--") {
                match flag.split_once('=') {
                    Some((k, v)) => cli.push((k.to_owned(), Some(v.to_owned()))),
                    None => {
                        let value = args.get(i + 1).filter(|v| !v.starts_with("--"));
                        if value.is_some() {
                            i += 1;
                        }
                        cli.push((flag.to_owned(), value.map(|v| (*v).to_owned())));
                    }
                }
            }
            i += 1;
        }
        let env = array(&container["env"])
            .iter()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect();
        Flags {
            subcommand: args.first().map(|s| (*s).to_owned()),
            cli,
            env,
        }
    }

    fn get(&self, flag: &str) -> Option<&str> {
        self.cli
            .iter()
            .rev()
            .find(|(k, _)| k == flag)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
            .or_else(|| {
                let var = format!("REBOOT_WEBHOOK_{}", flag.replace('-', "_").to_uppercase());
                self.env.get(&var).map(String::as_str)
            })
    }
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
    let flags = Flags::of(container);
    check_deployment(&mut p, dep, container, &flags, variant);
    check_service(&mut p, objs, container, &flags);
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

fn check_deployment(p: &mut Vec<String>, dep: &Value, c: &Value, flags: &Flags, variant: Variant) {
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
    let anti = array(
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"],
    );
    ensure!(
        p,
        anti.iter().any(
            |t| t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
                && selects(
                    &t["podAffinityTerm"]["labelSelector"]["matchLabels"],
                    labels
                )
        ),
        "pod anti-affinity preferring different nodes missing"
    );

    ensure!(
        p,
        c["command"].is_null(),
        "container must not override the image entrypoint"
    );
    ensure!(
        p,
        flags.subcommand.as_deref() == Some("serve"),
        "container args must start with serve"
    );
    let listen = addr_port(flags.get("listen").unwrap_or("0.0.0.0:8443"));
    let metrics = addr_port(flags.get("metrics-listen").unwrap_or("0.0.0.0:8080"));
    ensure!(
        p,
        metrics == Some(8080),
        "metrics port is {metrics:?}, not 8080"
    );
    for (port, what) in [(listen, "--listen"), (metrics, "--metrics-listen")] {
        ensure!(
            p,
            array(&c["ports"])
                .iter()
                .any(|cp| cp["containerPort"].as_u64() == port),
            "no containerPort for {what} {port:?}"
        );
    }
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
            resolve_port(c, &get["port"]).is_some() && resolve_port(c, &get["port"]) == metrics,
            "{probe} port {} is not the metrics port {metrics:?}",
            get["port"]
        );
        ensure!(
            p,
            get["scheme"].as_str().unwrap_or("HTTP") == "HTTP",
            "{probe} must use HTTP"
        );
    }

    // TLS: the Secret mounted as a directory, the flags pointing into it.
    let volume = array(&pod["volumes"])
        .iter()
        .find(|v| v["secret"]["secretName"] == TLS_SECRET);
    let mount = volume.and_then(|v| {
        array(&c["volumeMounts"])
            .iter()
            .find(|m| m["name"] == v["name"])
    });
    match mount {
        None => p.push(format!("Secret {TLS_SECRET} is not mounted")),
        Some(m) => {
            ensure!(
                p,
                m["subPath"].is_null(),
                "the TLS mount must not use subPath (breaks rotation)"
            );
            ensure!(p, m["readOnly"] == true, "the TLS mount must be read-only");
            let dir = m["mountPath"].as_str().unwrap_or("").trim_end_matches('/');
            for (flag, file) in [("tls-cert", "tls.crt"), ("tls-key", "tls.key")] {
                let want = format!("{dir}/{file}");
                ensure!(
                    p,
                    flags.get(flag) == Some(want.as_str()),
                    "--{flag} is {:?}, not {want} in the TLS mount",
                    flags.get(flag)
                );
            }
        }
    }
    ensure!(
        p,
        flags.get("log-format") == Some("json"),
        "--log-format must be json"
    );
    match variant {
        Variant::Compat => ensure!(
            p,
            flags.get("bootonce") == Some("compat"),
            "compat needs --bootonce=compat"
        ),
        _ => ensure!(
            p,
            flags.get("bootonce").is_none_or(|m| m == "native"),
            "--bootonce must be native outside compat"
        ),
    }
    let shutdown = duration_secs(flags.get("shutdown-delay").unwrap_or("5s"));
    let drain = duration_secs(flags.get("drain-timeout").unwrap_or("25s"));
    let grace = pod["terminationGracePeriodSeconds"]
        .as_f64()
        .unwrap_or(30.0);
    match (shutdown, drain) {
        (Some(s), Some(d)) => {
            let enough = grace > s + d;
            ensure!(
                p,
                enough,
                "terminationGracePeriodSeconds {grace} must exceed shutdown delay {s}s + drain timeout {d}s"
            )
        }
        _ => p.push("unparsable --shutdown-delay or --drain-timeout".into()),
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

fn has_exact(list: &Value, item: &str) -> bool {
    array(list).iter().any(|v| v == item)
}

fn check_service(p: &mut Vec<String>, objs: &[Value], c: &Value, flags: &Flags) {
    let svc = match all(objs, "Service").into_iter().find(|s| name_of(s) == SVC) {
        Some(s) => s,
        None => return p.push(format!("Service {SVC} missing")),
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
    let listen = addr_port(flags.get("listen").unwrap_or("0.0.0.0:8443"));
    match ports.iter().find(|sp| sp["port"] == 443) {
        None => p.push("Service has no port 443".into()),
        Some(sp) => {
            ensure!(
                p,
                sp["name"] == "https",
                "Service port 443 must be named https"
            );
            ensure!(
                p,
                target(sp).is_some() && target(sp) == listen,
                "Service port 443 targets {:?}, but the webhook listens on {listen:?}",
                target(sp)
            );
        }
    }
    let metrics = addr_port(flags.get("metrics-listen").unwrap_or("0.0.0.0:8080"));
    ensure!(
        p,
        ports
            .iter()
            .any(|sp| sp["name"] == "metrics" && target(sp) == metrics),
        "Service has no port named metrics targeting {metrics:?}"
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
    let cert = match one(objs, "Certificate") {
        Ok(c) => c,
        Err(e) => return p.push(e),
    };
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
        let objs =
            render(&manifests_dir().join(dir)).unwrap_or_else(|e| panic!("render {dir:?}: {e}"));
        assert_no_problems(
            &format!("manifests/{dir} ({variant:?})"),
            &check(&objs, *variant),
        );
    }
}

#[test]
fn manifests_root_is_the_base() {
    let root = render(&manifests_dir()).expect("render manifests/");
    let base = render(&manifests_dir().join("base")).expect("render manifests/base");
    assert_eq!(root, base);
}

#[test]
fn compat_component_only_adds_the_compat_pieces() {
    let base = render(&manifests_dir().join("base")).expect("base");
    let compat = render(&manifests_dir().join("overlays/compat")).expect("compat");
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
    let mut base = render(&manifests_dir().join("base")).expect("base");
    let stripped =
        render(&manifests_dir().join("overlays/no-match-conditions")).expect("no-match-conditions");
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

#[test]
fn kubectl_kustomize_agrees() {
    let mut ran = false;
    for (dir, variant) in ENTRY_POINTS {
        let path = manifests_dir().join(dir);
        let Some(result) = kubectl_kustomize(&path) else {
            // CI must run the real kustomize: a missing tool there is a
            // failure, never a green skip. A developer's machine may skip.
            assert!(
                !in_ci(),
                "kubectl ($KUBECTL or PATH) not found but CI={:?}: the `kubectl kustomize` cross-check must run in CI \
                 (.ci/run installs kubectl; or put it on PATH)",
                std::env::var("CI").unwrap_or_default()
            );
            eprintln!(
                "SKIPPED kubectl_kustomize_agrees: kubectl is not on PATH (not in CI, so not a failure)"
            );
            return;
        };
        ran = true;
        let mut rendered = result.unwrap_or_else(|e| panic!("{e}"));
        assert_no_problems(
            &format!("kubectl kustomize manifests/{dir}"),
            &check(&rendered, *variant),
        );
        let mut ours = render(&path).expect("render");
        let key = |o: &Value| (kind_of(o).to_owned(), name_of(o).to_owned());
        rendered.sort_by_key(key);
        ours.sort_by_key(key);
        assert_eq!(
            rendered, ours,
            "kubectl kustomize manifests/{dir} differs from the test's rendering"
        );
    }
    assert!(ran);
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
        "metrics port is Some(9090)",
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
        "--tls-cert is Some(\"/tmp/tls.crt\")",
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
        "anti-affinity",
        |o| {
            find_mut(o, "Deployment")["spec"]["template"]["spec"]["affinity"] = Value::Null;
        },
        "anti-affinity",
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
    let base = render(&manifests_dir().join("base")).expect("base");
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
}

#[test]
fn cert_manager_checks_catch_missing_injection() {
    let good = render(&manifests_dir().join("overlays/cert-manager")).expect("cert-manager");
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
    let mut objs = good;
    find_mut(&mut objs, "Certificate")["spec"]["secretName"] = "other".into();
    let problems = check(&objs, Variant::CertManager).join("\n");
    assert!(problems.contains("must write Secret"), "{problems}");
}

#[test]
fn flags_and_durations_parse_like_the_binary() {
    let c = json!({
        "args": ["serve", "--listen", "[::]:9443", "--tls-cert=/a", "--log-format", "json", "--listen=0.0.0.0:7443"],
        "env": [{"name": "REBOOT_WEBHOOK_TLS_KEY", "value": "/b"}, {"name": "REBOOT_WEBHOOK_TLS_CERT", "value": "/ignored"}],
    });
    let flags = Flags::of(&c);
    assert_eq!(flags.subcommand.as_deref(), Some("serve"));
    assert_eq!(flags.get("listen"), Some("0.0.0.0:7443"));
    assert_eq!(flags.get("tls-cert"), Some("/a"));
    assert_eq!(flags.get("tls-key"), Some("/b"));
    assert_eq!(flags.get("log-format"), Some("json"));
    assert_eq!(flags.get("mode"), None);
    assert_eq!(addr_port("[::]:9443"), Some(9443));
    assert_eq!(duration_secs("1m30s"), Some(90.0));
    assert_eq!(duration_secs("500ms"), Some(0.5));
    assert_eq!(duration_secs("5"), None);
    assert_eq!(duration_secs(""), None);
}
