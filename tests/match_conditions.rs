//! The webhooks' `matchConditions` are never too narrow: whenever the
//! expressions in `manifests/` tell the API server to skip a webhook, the
//! webhook's own answer would have been "allowed", with no patch and no
//! warning, in both BootOnce modes, with the gate on and off, in enforce and
//! warn mode, and for every owner the owner lookup could return.
//!
//! Checked over every AdmissionReview fixture, over named plain and
//! feature-using writes (which must be skipped and sent respectively, so the
//! conditions are not vacuous), and over generated requests with objects and
//! old objects of every kind and of odd shapes. The decision table's rows are
//! checked by the same rule in `src/admission/tests.rs`. Every expression
//! must also evaluate without error on every input: a CEL error is a failed
//! call under `failurePolicy: Fail`.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/match_conditions.rs"]
mod conditions;
mod support;

use std::collections::BTreeMap;

use conditions::{base_webhook, Outcome, Webhook};
use kubevirt_reboot_webhook::admission::review::{
    self, AdmissionRequest, Gvk, Operation, UserInfo,
};
use kubevirt_reboot_webhook::admission::{
    decide, owner_to_resolve, BootOnceMode, Context, Endpoint, Mode, Owner, Policy, RunStrategy,
    Trusted, VmInfo, BOOTONCE_ANNOTATION,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

use support::CONTROLLER;

/// The two webhooks of `manifests/`, by endpoint.
struct Hooks {
    validate: Webhook,
    mutate: Webhook,
}

impl Hooks {
    fn load() -> Hooks {
        Hooks {
            validate: base_webhook("/validate"),
            mutate: base_webhook("/mutate"),
        }
    }

    fn get(&self, endpoint: Endpoint) -> &Webhook {
        match endpoint {
            Endpoint::Validate => &self.validate,
            Endpoint::Mutate => &self.mutate,
        }
    }

    /// The API server's decision for `req` at `endpoint`.
    fn outcome(&self, endpoint: Endpoint, req: &AdmissionRequest) -> Result<Outcome, String> {
        let json = serde_json::to_value(req).map_err(|e| e.to_string())?;
        self.get(endpoint).evaluate(&json)
    }
}

/// Every owner the server can pass for `req`: `Owner::None` when it resolves
/// none, else every answer the owner lookup can give.
fn owners(endpoint: Endpoint, req: &AdmissionRequest, policy: &Policy) -> Vec<Owner> {
    if owner_to_resolve(endpoint, req, policy).is_none() {
        return vec![Owner::None];
    }
    let found = |run_strategy, annotated| {
        Owner::Found(VmInfo {
            uid: Some("vm-uid".into()),
            run_strategy,
            annotated,
        })
    };
    vec![
        found(RunStrategy::BootOnce, false),
        found(RunStrategy::Once, true),
        found(RunStrategy::Once, false),
        found(RunStrategy::Other, false),
        found(RunStrategy::Other, true),
        Owner::NotFound,
        Owner::Unavailable("connection refused".into()),
    ]
}

/// The claim behind a skip: in every configuration the webhook would have
/// allowed `req` unchanged and without a warning. Returns the first
/// configuration where it would not have.
fn untouched_everywhere(endpoint: Endpoint, req: &AdmissionRequest) -> Result<(), String> {
    for bootonce in [BootOnceMode::Native, BootOnceMode::Compat] {
        for mode in [Mode::Enforce, Mode::Warn] {
            let policy = Policy {
                trusted: Trusted::new("kubevirt", &["ops-bot".into()], &["kubevirt-admins".into()]),
                mode,
                bootonce,
            };
            for gate in [true, false] {
                for owner in owners(endpoint, req, &policy) {
                    let verdict = decide(
                        endpoint,
                        req,
                        Context {
                            policy: &policy,
                            gate,
                        },
                        &owner,
                    );
                    let response = review::response(&req.uid, &verdict);
                    if !response.allowed
                        || response.patch.is_some()
                        || !response.warnings.is_empty()
                    {
                        return Err(format!(
                            "skipped by the conditions, but /{} with {bootonce:?}, {mode:?}, gate {gate}, owner {owner:?} answers {}",
                            endpoint.as_str(),
                            serde_json::to_string(&response).unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Evaluates both webhooks' conditions for `req` and, for each skip, checks
/// the decision. Returns the outcomes (validate, mutate).
fn judge(hooks: &Hooks, req: &AdmissionRequest) -> Result<(Outcome, Outcome), String> {
    let at = |endpoint| {
        let outcome = hooks.outcome(endpoint, req)?;
        if matches!(outcome, Outcome::Skip(_)) {
            untouched_everywhere(endpoint, req).map_err(|e| format!("{outcome:?}: {e}"))?;
        }
        Ok::<_, String>(outcome)
    };
    Ok((at(Endpoint::Validate)?, at(Endpoint::Mutate)?))
}

#[test]
fn both_webhooks_have_conditions_that_compile() {
    let hooks = Hooks::load();
    for (w, want) in [
        (&hooks.validate, 4), // one per kind
        (&hooks.mutate, 3),   // VMI, and VM and pool for compat mode
    ] {
        assert_eq!(w.conditions.len(), want, "{}", w.name);
        for c in &w.conditions {
            assert!(
                c.expression.contains("request.kind.kind"),
                "{}: {} must pass other kinds",
                w.name,
                c.name
            );
        }
    }
}

/// Every AdmissionReview fixture under `dir` (JSON, not an expected response).
fn review_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        let name = path.to_string_lossy();
        if path.is_dir() {
            review_files(&path, out);
        } else if name.ends_with(".json") && !name.ends_with(".expected.json") {
            out.push(path);
        }
    }
}

#[test]
fn fixtures_are_skipped_only_when_the_webhook_would_not_act() {
    let hooks = Hooks::load();
    let mut files = Vec::new();
    review_files(&support::fixtures(), &mut files);
    files.sort();
    assert!(files.len() >= 20, "fixtures not found: {files:?}");
    let mut skipped: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut own_endpoint_skips = 0;
    for path in &files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let body = std::fs::read(path).expect("read");
        let req = review::decode(&body)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .request;
        let (v, m) = judge(&hooks, &req).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (endpoint, outcome) in [("validate", v), ("mutate", m)] {
            if let Outcome::Skip(why) = outcome {
                skipped
                    .entry(endpoint)
                    .or_default()
                    .push(format!("{name} ({why})"));
                // A fixture skipped at the endpoint it was written for: its
                // recorded answer must be the untouched one too.
                if name.contains(&format!(".{endpoint}.")) {
                    own_endpoint_skips += 1;
                    let expected = support::read_json(&path.with_extension("expected.json"));
                    let r = &expected["response"];
                    assert!(
                        r["allowed"] == true
                            && r["patch"].is_null()
                            && r.get("warnings").is_none_or(|w| w == &json!([])),
                        "{name}: skipped at /{endpoint} but its expected response is {r}"
                    );
                }
            }
        }
    }
    println!(
        "{} fixtures; skipped at the endpoint they were written for: {own_endpoint_skips}",
        files.len()
    );
    for (endpoint, names) in &skipped {
        println!("skipped by /{endpoint}'s conditions: {}", names.len());
        for n in names {
            println!("  {n}");
        }
    }
}

// ------------------------------------------------------ named writes

fn request(
    kind: (&str, &str, &str),
    op: Operation,
    user: &str,
    object: Option<Value>,
    old: Option<Value>,
) -> AdmissionRequest {
    AdmissionRequest {
        uid: "u".into(),
        kind: Gvk {
            group: kind.0.into(),
            version: kind.1.into(),
            kind: kind.2.into(),
        },
        sub_resource: None,
        name: "x".into(),
        namespace: Some("ns".into()),
        operation: op,
        user_info: UserInfo {
            username: Some(user.into()),
            groups: vec!["system:authenticated".into()],
        },
        object,
        old_object: old,
        dry_run: false,
    }
}

const VMI: (&str, &str, &str) = ("kubevirt.io", "v1", "VirtualMachineInstance");
const VM: (&str, &str, &str) = ("kubevirt.io", "v1", "VirtualMachine");
const VMIRS: (&str, &str, &str) = ("kubevirt.io", "v1", "VirtualMachineInstanceReplicaSet");
const POOL: (&str, &str, &str) = ("pool.kubevirt.io", "v1beta1", "VirtualMachinePool");

fn plain_vm() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "x", "namespace": "ns", "annotations": {"note": "plain"}},
        "spec": {"runStrategy": "Always", "template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}},
        "status": {"created": true, "ready": true, "printableStatus": "Running"}
    })
}

fn plain_vmi(owner: bool) -> Value {
    let mut v = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {"domain": {"devices": {}}}
    });
    if owner {
        v["metadata"]["ownerReferences"] = json!([{"apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine", "name": "x", "uid": "vm-uid", "controller": true}]);
    }
    v
}

fn plain_pool() -> Value {
    json!({
        "apiVersion": "pool.kubevirt.io/v1beta1", "kind": "VirtualMachinePool",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {"replicas": 2, "virtualMachineTemplate": {"metadata": {"labels": {"a": "b"}},
            "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {}}}}}}
    })
}

fn with(mut v: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{parent} is not an object"))
        .insert(key.replace("~1", "/"), value);
    v
}

fn without(mut v: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove(key))
        .unwrap_or_else(|| panic!("{pointer} absent"));
    v
}

#[test]
fn plain_writes_are_skipped_and_feature_writes_are_sent() {
    use Outcome::Call;
    let hooks = Hooks::load();
    let skip = |name: &str| Outcome::Skip(name.to_owned());
    let vm_rp = "/spec/template/spec/domain/rebootPolicy";
    let ann = "/metadata/annotations/runstrategy.kubevirt.io";
    let tmpl_ann = "/spec/template/metadata/annotations";
    let pool_vm = "/spec/virtualMachineTemplate";
    let (sv, sm) = (
        skip("virtualmachine-uses-the-feature"),
        skip("virtualmachine-uses-bootonce"),
    );
    let (svmi, smvmi) = (
        skip("virtualmachineinstance-uses-the-feature"),
        skip("virtualmachineinstance-has-a-virtualmachine-controller"),
    );
    let (spool, smpool) = (
        skip("virtualmachinepool-uses-the-feature"),
        skip("virtualmachinepool-uses-bootonce"),
    );
    use Operation::{Create, Delete, Update};
    #[rustfmt::skip]
    let rows: Vec<(&str, AdmissionRequest, Outcome, Outcome)> = vec![
        ("plain VM create", request(VM, Create, "alice", Some(plain_vm()), None), sv.clone(), sm.clone()),
        ("plain VM update", request(VM, Update, "alice", Some(with(plain_vm(), "/spec/runStrategy", json!("Halted"))), Some(plain_vm())), sv.clone(), sm.clone()),
        ("plain VM by the controller", request(VM, Update, CONTROLLER, Some(plain_vm()), Some(plain_vm())), sv.clone(), sm.clone()),
        ("plain VM delete", request(VM, Delete, "alice", None, Some(plain_vm())), sv.clone(), sm.clone()),
        ("VM without runStrategy", request(VM, Create, "alice", Some(without(plain_vm(), "/spec/runStrategy")), None), sv.clone(), sm.clone()),
        ("VM rebootPolicy", request(VM, Create, "alice", Some(with(plain_vm(), vm_rp, json!("Terminate"))), None), Call, sm.clone()),
        ("VM rebootPolicy null", request(VM, Create, "alice", Some(with(plain_vm(), vm_rp, Value::Null)), None), Call, sm.clone()),
        ("VM rebootPolicy removed", request(VM, Update, "alice", Some(plain_vm()), Some(with(plain_vm(), vm_rp, json!("Terminate")))), Call, sm.clone()),
        ("VM BootOnce", request(VM, Create, "alice", Some(with(plain_vm(), "/spec/runStrategy", json!("BootOnce"))), None), Call, Call),
        ("VM bootonce", request(VM, Create, "alice", Some(with(plain_vm(), "/spec/runStrategy", json!("bootonce"))), None), Call, Call),
        ("VM runStrategy 7", request(VM, Create, "alice", Some(with(plain_vm(), "/spec/runStrategy", json!(7))), None), Call, Call),
        ("VM left BootOnce", request(VM, Update, "alice", Some(plain_vm()), Some(with(plain_vm(), "/spec/runStrategy", json!("BootOnce")))), Call, sm.clone()),
        ("VM annotation", request(VM, Create, "alice", Some(with(plain_vm(), ann, json!("BootOnce"))), None), Call, Call),
        ("VM template annotation", request(VM, Create, "alice", Some(with(plain_vm(), tmpl_ann, json!({BOOTONCE_ANNOTATION: "x"}))), None), Call, Call),
        ("VM leaving compat BootOnce", request(VM, Update, "alice", Some(with(plain_vm(), tmpl_ann, json!({BOOTONCE_ANNOTATION: "BootOnce"}))), Some(stored_as_compat_bootonce(&plain_vm()))), Call, Call),
        ("VMI without owner", request(VMI, Create, "alice", Some(plain_vmi(false)), None), svmi.clone(), smvmi.clone()),
        ("VMI of a VM", request(VMI, Create, CONTROLLER, Some(plain_vmi(true)), None), svmi.clone(), Call),
        ("VMI of a VM, not controller", request(VMI, Create, CONTROLLER, Some(with(plain_vmi(true), "/metadata/ownerReferences/0/controller", json!(false))), None), svmi.clone(), smvmi.clone()),
        ("VMI update", request(VMI, Update, CONTROLLER, Some(plain_vmi(true)), Some(plain_vmi(true))), svmi.clone(), Call),
        ("VMI forged annotation", request(VMI, Create, "alice", Some(with(plain_vmi(false), "/metadata/annotations", json!({BOOTONCE_ANNOTATION: "BootOnce"}))), None), Call, smvmi.clone()),
        ("VMI annotation removed", request(VMI, Update, "alice", Some(plain_vmi(true)), Some(with(plain_vmi(true), "/metadata/annotations", json!({BOOTONCE_ANNOTATION: "BootOnce"})))), Call, Call),
        ("VMI rebootPolicy", request(VMI, Create, "alice", Some(with(plain_vmi(false), "/spec/domain/rebootPolicy", json!("Reboot"))), None), Call, smvmi.clone()),
        ("plain VMIRS", request(VMIRS, Create, "alice", Some(json!({"spec": {"template": {"spec": {"domain": {}}}}})), None), skip("virtualmachineinstancereplicaset-uses-the-feature"), Call),
        ("VMIRS rebootPolicy", request(VMIRS, Create, "alice", Some(json!({"spec": {"template": {"spec": {"domain": {"rebootPolicy": "Terminate"}}}}})), None), Call, Call),
        ("plain pool", request(POOL, Create, "alice", Some(plain_pool()), None), spool.clone(), smpool.clone()),
        ("pool BootOnce", request(POOL, Create, "alice", Some(with(plain_pool(), &format!("{pool_vm}/spec/runStrategy"), json!("BootOnce"))), None), Call, Call),
        ("pool rebootPolicy", request(POOL, Update, "alice", Some(with(plain_pool(), &format!("{pool_vm}/spec/template/spec/domain/rebootPolicy"), json!("Terminate"))), Some(plain_pool())), Call, smpool.clone()),
        ("pool's own annotation", request(POOL, Create, "alice", Some(with(plain_pool(), "/metadata/annotations", json!({BOOTONCE_ANNOTATION: "BootOnce"}))), None), Call, smpool.clone()),
        ("pool VM template annotation", request(POOL, Create, "alice", Some(with(plain_pool(), &format!("{pool_vm}/metadata/annotations"), json!({BOOTONCE_ANNOTATION: "BootOnce"}))), None), Call, Call),
        ("odd pool", request(POOL, Create, "alice", Some(json!({"metadata": [], "spec": {"virtualMachineTemplate": "x"}})), Some(json!({"spec": null}))), spool.clone(), smpool.clone()),
        ("another kind", request(("apps", "v1", "Deployment"), Create, "alice", Some(json!({"spec": {}})), None), Call, Call),
    ];
    for (name, req, want_v, want_m) in rows {
        let (v, m) = judge(&hooks, &req).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((&v, &m), (&want_v, &want_m), "{name}: (validate, mutate)");
    }
}

// ------------------------------------------------ generated requests

/// A value of the wrong type for whatever field it lands in.
fn odd() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        Just(json!(1.5)),
        "[a-z]{0,3}".prop_map(Value::from),
        Just(json!([])),
        Just(json!(["BootOnce", {"a": 1}])),
        Just(json!({})),
    ]
    .boxed()
}

/// A map of optional members: structure (`Node`) is usually there, the
/// fields the conditions look for (`Leaf`) less often, so that both plain
/// objects and each feature at any depth are common.
fn object_of(members: Vec<(&'static str, Presence, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    members
        .into_iter()
        .map(|(k, presence, s)| {
            let p = match presence {
                Presence::Node => 0.85,
                Presence::Leaf => 0.2,
            };
            proptest::option::weighted(p, s).prop_map(move |v| (k, v))
        })
        .collect::<Vec<_>>()
        .prop_map(|members| {
            Value::Object(
                members
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                    .collect::<Map<_, _>>(),
            )
        })
        .boxed()
}

#[derive(Clone, Copy)]
enum Presence {
    Node,
    Leaf,
}
use Presence::{Leaf, Node};

/// Mostly `good`, sometimes a value of the wrong type.
fn or_odd(good: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![12 => good, 1 => odd()].boxed()
}

fn strings(values: &'static [&'static str]) -> BoxedStrategy<Value> {
    or_odd(
        proptest::sample::select(values)
            .prop_map(Value::from)
            .boxed(),
    )
}

fn metadata() -> BoxedStrategy<Value> {
    let annotations = or_odd(object_of(vec![
        (
            BOOTONCE_ANNOTATION,
            Leaf,
            strings(&["BootOnce", "bootonce", "Once", ""]),
        ),
        ("note", Node, strings(&["x"])),
    ]));
    let owner_ref = or_odd(object_of(vec![
        (
            "controller",
            Node,
            or_odd(any::<bool>().prop_map(Value::from).boxed()),
        ),
        (
            "kind",
            Node,
            strings(&[
                "VirtualMachine",
                "VirtualMachineInstanceReplicaSet",
                "ReplicaSet",
            ]),
        ),
        (
            "apiVersion",
            Node,
            strings(&["kubevirt.io/v1", "kubevirt.io/v1alpha3", "apps/v1"]),
        ),
        ("name", Node, strings(&["vm", "other"])),
        ("uid", Node, strings(&["vm-uid"])),
    ]));
    let owner_refs = or_odd(
        proptest::collection::vec(owner_ref, 0..3)
            .prop_map(Value::from)
            .boxed(),
    );
    or_odd(object_of(vec![
        ("annotations", Node, annotations),
        ("ownerReferences", Node, owner_refs),
        ("name", Node, strings(&["x"])),
    ]))
}

fn vmi_spec() -> BoxedStrategy<Value> {
    let domain = or_odd(object_of(vec![
        (
            "rebootPolicy",
            Leaf,
            strings(&["Reboot", "Terminate", "terminate", ""]),
        ),
        ("devices", Node, Just(json!({})).boxed()),
    ]));
    or_odd(object_of(vec![("domain", Node, domain)]))
}

fn vmi_template() -> BoxedStrategy<Value> {
    or_odd(object_of(vec![
        ("metadata", Node, metadata()),
        ("spec", Node, vmi_spec()),
    ]))
}

const RUN_STRATEGIES: &[&str] = &[
    "Always",
    "RerunOnFailure",
    "Manual",
    "Halted",
    "Once",
    "WaitAsReceiver",
    "BootOnce",
    "bootonce",
    "BOOTONCE",
    "Unknown",
];

fn status() -> BoxedStrategy<Value> {
    or_odd(object_of(vec![
        (
            "created",
            Node,
            or_odd(any::<bool>().prop_map(Value::from).boxed()),
        ),
        (
            "ready",
            Node,
            or_odd(any::<bool>().prop_map(Value::from).boxed()),
        ),
        ("printableStatus", Node, strings(&["Running", "Stopped"])),
    ]))
}

fn vm_like() -> BoxedStrategy<Value> {
    let spec = or_odd(object_of(vec![
        ("runStrategy", Leaf, strings(RUN_STRATEGIES)),
        (
            "running",
            Leaf,
            or_odd(any::<bool>().prop_map(Value::from).boxed()),
        ),
        ("template", Node, vmi_template()),
    ]));
    or_odd(object_of(vec![
        ("metadata", Node, metadata()),
        ("spec", Node, spec),
        ("status", Node, status()),
    ]))
}

/// An object of any of the four kinds' shapes (and mixtures of them): every
/// field any kind has, at every level, each maybe absent or oddly typed.
fn any_object() -> BoxedStrategy<Value> {
    let spec = or_odd(object_of(vec![
        (
            "domain",
            Node,
            vmi_spec().prop_map(|s| s["domain"].clone()).boxed(),
        ),
        ("runStrategy", Leaf, strings(RUN_STRATEGIES)),
        (
            "running",
            Leaf,
            or_odd(any::<bool>().prop_map(Value::from).boxed()),
        ),
        ("template", Node, vmi_template()),
        ("virtualMachineTemplate", Node, vm_like()),
    ]));
    object_of(vec![
        ("metadata", Node, metadata()),
        ("spec", Node, spec),
        ("status", Node, status()),
    ])
}

/// `v` with `value` at `path`, creating missing objects on the way; left as
/// it is where something other than an object is in the way.
fn set_path(v: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        let Some(m) = cur.as_object_mut() else { return };
        cur = m.entry(*p).or_insert_with(|| json!({}));
    }
    if let Some(m) = cur.as_object_mut() {
        m.insert((*last).to_owned(), value);
    }
}

/// `v` as compat mode stores BootOnce (runStrategy Once, the annotation on
/// the VM and its VMI template), at both the VM's and the pool's paths.
fn stored_as_compat_bootonce(v: &Value) -> Value {
    let mut old = v.clone();
    for vm in [&[][..], &["spec", "virtualMachineTemplate"][..]] {
        let at = |tail: &[&'static str]| [vm, tail].concat();
        set_path(&mut old, &at(&["spec", "runStrategy"]), json!("Once"));
        for meta in [&["metadata"][..], &["spec", "template", "metadata"][..]] {
            let path = [&at(meta)[..], &["annotations", BOOTONCE_ANNOTATION]].concat();
            set_path(&mut old, &path, json!("BootOnce"));
        }
    }
    old
}

fn any_request() -> impl Strategy<Value = AdmissionRequest> {
    let kind = proptest::sample::select(vec![
        ("kubevirt.io", "v1", "VirtualMachineInstance"),
        ("kubevirt.io", "v1alpha3", "VirtualMachineInstance"),
        ("kubevirt.io", "v1", "VirtualMachine"),
        ("kubevirt.io", "v1alpha3", "VirtualMachine"),
        ("kubevirt.io", "v1", "VirtualMachineInstanceReplicaSet"),
        (
            "kubevirt.io",
            "v1alpha3",
            "VirtualMachineInstanceReplicaSet",
        ),
        ("pool.kubevirt.io", "v1alpha1", "VirtualMachinePool"),
        ("pool.kubevirt.io", "v1beta1", "VirtualMachinePool"),
        ("apps", "v1", "Deployment"),
    ]);
    let op = prop_oneof![
        4 => Just(Operation::Create),
        4 => Just(Operation::Update),
        1 => Just(Operation::Delete),
    ];
    let user = proptest::sample::select(vec![
        (Some("alice"), vec![]),
        (Some(CONTROLLER), vec![]),
        (
            Some("system:serviceaccount:default:kubevirt-controller"),
            vec![],
        ),
        (Some("ops-bot"), vec![]),
        (Some("bob"), vec!["kubevirt-admins"]),
        (None, vec![]),
    ]);
    // The old object: none, the same, another, the new one's metadata over
    // another's spec (ratcheting: some fields kept, some changed), or the new
    // one as compat mode stores a BootOnce VM or pool (leaving BootOnce).
    let old_choice = 0..5u8;
    let sub = proptest::option::weighted(0.1, Just("status".to_owned()));
    (kind, op, user, any_object(), any_object(), old_choice, sub).prop_map(
        |(kind, op, (name, groups), object, other, old_choice, sub)| {
            let old = match old_choice {
                0 => None,
                1 => Some(object.clone()),
                2 => Some(other),
                3 => Some(stored_as_compat_bootonce(&object)),
                _ => {
                    let mut o = other;
                    if let (Some(m), Some(meta)) = (o.as_object_mut(), object.get("metadata")) {
                        m.insert("metadata".into(), meta.clone());
                    }
                    Some(o)
                }
            };
            let (object, old) = match op {
                Operation::Delete => (None, old.or(Some(object))),
                _ => (Some(object), old),
            };
            AdmissionRequest {
                uid: "p".into(),
                kind: Gvk {
                    group: kind.0.into(),
                    version: kind.1.into(),
                    kind: kind.2.into(),
                },
                sub_resource: sub,
                name: "x".into(),
                namespace: Some("ns".into()),
                operation: op,
                user_info: UserInfo {
                    username: name.map(str::to_owned),
                    groups: groups.into_iter().map(str::to_owned).collect(),
                },
                object,
                old_object: old,
                dry_run: false,
            }
        },
    )
}

#[test]
fn generated_requests_are_skipped_only_when_the_webhook_would_not_act() {
    let hooks = Hooks::load();
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        failure_persistence: None,
        ..Config::default()
    });
    let counts = std::cell::RefCell::new(BTreeMap::<(&str, bool), u32>::new());
    let result = runner.run(&any_request(), |req| {
        let (v, m) = judge(&hooks, &req).map_err(TestCaseError::fail)?;
        for (endpoint, outcome) in [("validate", v), ("mutate", m)] {
            *counts
                .borrow_mut()
                .entry((endpoint, matches!(outcome, Outcome::Skip(_))))
                .or_default() += 1;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let counts = counts.into_inner();
    println!("generated requests (endpoint, skipped) -> count: {counts:?}");
    // Both outcomes must be common, or the property says little.
    for endpoint in ["validate", "mutate"] {
        for skipped in [true, false] {
            let n = counts.get(&(endpoint, skipped)).copied().unwrap_or(0);
            assert!(
                n >= 300,
                "/{endpoint}: only {n} generated requests were {} by the conditions",
                if skipped { "skipped" } else { "sent" }
            );
        }
    }
}
