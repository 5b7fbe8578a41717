//! Realistic AdmissionReview bodies, generated in code.
//!
//! Shared by the load benchmark (this crate) and the decision
//! micro-benchmark (`src/bin/decide.rs`), so both measure the same bytes. Only `serde_json` is used here.
//!
//! The objects look like what a real cluster sends: the VMI as virt-controller
//! creates it from a VM template (labels, annotations, finalizers, owner
//! reference, `managedFields`, disks, volumes, networks, cloud-init), and a VM
//! as `kubectl apply` creates it (with `last-applied-configuration`).

use serde_json::{json, Map, Value};

/// Namespace of every object.
pub const NAMESPACE: &str = "tenant-a";
/// Name of the owner VM (and of its VMI).
pub const VM_NAME: &str = "fedora-installer";
/// `metadata.uid` of the owner VM; the VMI's owner reference points at it.
pub const VM_UID: &str = "6b1c0c9e-8f43-4c39-9d1a-6a0e3c6a1b01";
/// The placeholder request uid; [`with_uid`] swaps it for another of the same length.
pub const UID_TEMPLATE: &str = "00000000-0000-4000-8000-000000000000";

/// Size of the realistic VMI body.
pub const VMI_SMALL: usize = 6 * 1024;
/// Size of the VMI with a large cloud-init userData.
pub const VMI_LARGE: usize = 500 * 1024;

/// One request body, where it goes, and the exact answer it must get.
#[derive(Clone, Debug)]
pub struct Payload {
    /// Short name for tables: `vmi-6k`, `vm`, `vm-denied`, `vmi-500k`.
    pub name: &'static str,
    /// `/mutate` or `/validate`.
    pub path: &'static str,
    /// Whether the webhook answers with a JSON Patch.
    pub mutates: bool,
    /// The AdmissionReview as the API server sends it (compact JSON).
    pub body: Vec<u8>,
    /// The webhook's exact `response`, without `uid`, with `patch` decoded
    /// (see [`check_answer`]). Written here by hand from the admission
    /// contract, not computed by the webhook's code.
    pub expected: Value,
}

/// The JSON Patch a BootOnce owner's VMI gets: the reserved annotation
/// added to its existing annotations, and `rebootPolicy: Terminate`.
fn stamp_patch() -> Value {
    json!([
        {"op": "add", "path": "/metadata/annotations/runstrategy.kubevirt.io", "value": "BootOnce"},
        {"op": "add", "path": "/spec/domain/rebootPolicy", "value": "Terminate"}
    ])
}

/// The answer to a BootOnce owner's VMI: the patch, and the audit
/// annotation that records what it changed.
fn stamped() -> Value {
    json!({
        "allowed": true, "patchType": "JSONPatch", "patch": stamp_patch(),
        "auditAnnotations": {"stamped": "metadata.annotations[runstrategy.kubevirt.io]=BootOnce, spec.domain.rebootPolicy=Terminate"}
    })
}

/// The four benchmark payloads: ~6 KB VMI CREATE of a BootOnce VM
/// (`/mutate`), a VM CREATE (`/validate`), the same VM with an invalid
/// `rebootPolicy` that must be denied (`/validate`), ~500 KB VMI CREATE
/// (`/mutate`).
pub fn all() -> Vec<Payload> {
    let unsupported =
        "Unsupported value: \"terminate\": supported values: \"Reboot\", \"Terminate\"";
    let field = "spec.template.spec.domain.rebootPolicy";
    vec![
        Payload {
            name: "vmi-6k",
            path: "/mutate",
            mutates: true,
            body: to_bytes(&review(
                "VirtualMachineInstance",
                "virtualmachineinstances",
                controller_user(),
                vmi_sized(VMI_SMALL),
            )),
            expected: stamped(),
        },
        Payload {
            name: "vm",
            path: "/validate",
            mutates: false,
            body: to_bytes(&review(
                "VirtualMachine",
                "virtualmachines",
                human_user(),
                vm(),
            )),
            expected: json!({"allowed": true}),
        },
        Payload {
            name: "vm-denied",
            path: "/validate",
            mutates: false,
            body: to_bytes(&review(
                "VirtualMachine",
                "virtualmachines",
                human_user(),
                vm_denied(),
            )),
            expected: json!({"allowed": false,
                "auditAnnotations": {"denied": format!("{field}: FieldValueNotSupported")},
                "status": {
                "code": 422, "reason": "Invalid", "status": "Failure",
                "message": format!("{field}: {unsupported}"),
                "details": {"causes": [
                    {"field": field, "reason": "FieldValueNotSupported", "message": unsupported}
                ]}
            }}),
        },
        Payload {
            name: "vmi-500k",
            path: "/mutate",
            mutates: true,
            body: to_bytes(&review(
                "VirtualMachineInstance",
                "virtualmachineinstances",
                controller_user(),
                vmi_sized(VMI_LARGE),
            )),
            expected: stamped(),
        },
    ]
}

/// Checks an answer of the webhook to `p` sent with request uid `uid`: an
/// `admission.k8s.io/v1` AdmissionReview whose `response` echoes `uid` and
/// is otherwise exactly `p.expected` (the base64 `patch` decoded first).
pub fn check_answer(p: &Payload, uid: &str, body: &[u8]) -> Result<(), String> {
    use base64::Engine as _;
    let short = || String::from_utf8_lossy(&body[..body.len().min(600)]).into_owned();
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("answer is not JSON ({e}): {}", short()))?;
    if v["apiVersion"] != "admission.k8s.io/v1" || v["kind"] != "AdmissionReview" {
        return Err(format!(
            "not an admission.k8s.io/v1 AdmissionReview: {}",
            short()
        ));
    }
    let mut r = v["response"].clone();
    let Some(fields) = r.as_object_mut() else {
        return Err(format!("no response: {}", short()));
    };
    if fields.remove("uid").as_ref().and_then(Value::as_str) != Some(uid) {
        return Err(format!("uid {uid} not echoed: {}", short()));
    }
    if let Some(patch) = fields.get_mut("patch") {
        let decoded = patch
            .as_str()
            .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
            .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
            .ok_or_else(|| format!("patch is not base64 JSON: {patch}"))?;
        *patch = decoded;
    }
    if r != p.expected {
        return Err(format!(
            "{}: wrong answer: got {r}, want {}",
            p.name, p.expected
        ));
    }
    Ok(())
}

/// A copy of `body` whose request uid is `uid` (same length as [`UID_TEMPLATE`]).
pub fn with_uid(body: &[u8], uid: &str) -> Vec<u8> {
    assert_eq!(uid.len(), UID_TEMPLATE.len(), "uid length");
    let needle = UID_TEMPLATE.as_bytes();
    let at = body
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("body carries the template uid");
    let mut out = body.to_vec();
    out[at..at + needle.len()].copy_from_slice(uid.as_bytes());
    out
}

/// The owner VirtualMachine, for the webhook's `--objects` directory.
pub fn owner_vm() -> Value {
    let mut vm = vm();
    vm["metadata"]["name"] = VM_NAME.into();
    vm["metadata"]["uid"] = VM_UID.into();
    vm
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialise payload")
}

fn controller_user() -> Value {
    json!({
        "username": "system:serviceaccount:kubevirt:kubevirt-controller",
        "uid": "3f6f1e2a-5a57-4d3c-9a0e-2c1f7e9b8d10",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kubevirt", "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/pod-name": ["virt-controller-7d9c8b6f5-x2k4q"],
            "authentication.kubernetes.io/pod-uid": ["e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b"]
        }
    })
}

fn human_user() -> Value {
    json!({
        "username": "alice@example.com",
        "groups": ["platform-team", "system:authenticated"],
        "extra": {"scopes.authorization.openshift.io": ["user:full"]}
    })
}

/// The AdmissionReview envelope around `object`.
fn review(kind: &str, resource: &str, user: Value, object: Value) -> Value {
    let gvk = json!({"group": "kubevirt.io", "version": "v1", "kind": kind});
    let gvr = json!({"group": "kubevirt.io", "version": "v1", "resource": resource});
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": UID_TEMPLATE,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": object["metadata"]["name"],
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": user,
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "virt-controller"}
        }
    })
}

fn labels() -> Value {
    json!({
        "app": VM_NAME,
        "kubevirt.io/vm": VM_NAME,
        "kubevirt.io/domain": VM_NAME,
        "vm.kubevirt.io/name": VM_NAME,
        "flavor.template.kubevirt.io/medium": "true",
        "os.template.kubevirt.io/fedora40": "true",
        "workload.template.kubevirt.io/server": "true"
    })
}

fn template_annotations() -> Value {
    json!({
        "vm.kubevirt.io/flavor": "medium",
        "vm.kubevirt.io/os": "fedora",
        "vm.kubevirt.io/workload": "server",
        "descheduler.alpha.kubernetes.io/evict": "true"
    })
}

/// The VMI spec of the VM template (and of the VMI created from it).
fn vmi_spec(user_data: &str) -> Value {
    json!({
        "architecture": "amd64",
        "domain": {
            "cpu": {"cores": 2, "sockets": 1, "threads": 1, "model": "host-model"},
            "memory": {"guest": "4Gi"},
            "machine": {"type": "q35"},
            "firmware": {
                "uuid": "5d307ca9-b3ef-428c-8861-06e72d69f223",
                "bootloader": {"efi": {"secureBoot": false}}
            },
            "features": {"acpi": {"enabled": true}, "smm": {"enabled": true}},
            "devices": {
                "disks": [
                    {"name": "installcd", "bootOrder": 1, "cdrom": {"bus": "sata", "readonly": true}},
                    {"name": "rootdisk", "bootOrder": 2, "disk": {"bus": "virtio"}},
                    {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}
                ],
                "interfaces": [
                    {"name": "default", "masquerade": {}, "model": "virtio", "macAddress": "02:6b:3c:00:00:0a"}
                ],
                "rng": {},
                "networkInterfaceMultiqueue": true
            },
            "resources": {
                "requests": {"memory": "4Gi", "cpu": "2"},
                "limits": {"memory": "4Gi", "cpu": "2"}
            }
        },
        "networks": [
            {"name": "default", "pod": {}}
        ],
        "volumes": [
            {"name": "installcd", "containerDisk": {"image": "quay.io/containerdisks/fedora:40", "imagePullPolicy": "IfNotPresent"}},
            {"name": "rootdisk", "dataVolume": {"name": "fedora-installer-root"}},
            {"name": "cloudinitdisk", "cloudInitNoCloud": {
                "userData": user_data
            }}
        ],
        "terminationGracePeriodSeconds": 180,
        "evictionStrategy": "LiveMigrate",
        "nodeSelector": {"kubernetes.io/arch": "amd64"}
    })
}

/// A cloud-config of about the usual size; `blob` base64 bytes of an
/// installer kickstart are appended as a `write_files` entry.
fn user_data(blob_lines: &[String]) -> String {
    let mut s = String::from(
        "#cloud-config\n\
         hostname: fedora-installer\n\
         fqdn: fedora-installer.tenant-a.example.com\n\
         users:\n\
         \x20 - name: fedora\n\
         \x20   sudo: ALL=(ALL) NOPASSWD:ALL\n\
         \x20   groups: wheel\n\
         \x20   shell: /bin/bash\n\
         \x20   ssh_authorized_keys:\n\
         \x20     - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk2Zq0xQ1m8cRr3pVdJ6b7Yx4tKcW2nF5uL9sA0eP1d alice@laptop\n\
         \x20     - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO8pQ3vX7nR2sT6yU1wZ4aB9cD0eF5gH2iJ3kL4mN5oP ci@bastion\n\
         chpasswd:\n\
         \x20 expire: false\n\
         ssh_pwauth: false\n\
         package_update: true\n\
         packages: [qemu-guest-agent, cloud-utils-growpart, nfs-utils, chrony]\n\
         runcmd:\n\
         \x20 - [systemctl, enable, --now, qemu-guest-agent]\n\
         \x20 - [sh, -c, 'echo installer ready > /dev/ttyS0']\n\
         write_files:\n\
         \x20 - path: /root/ks.cfg.gz.b64\n\
         \x20   permissions: '0600'\n\
         \x20   content: |\n",
    );
    for line in blob_lines {
        s.push_str("      ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// Deterministic base64-alphabet lines standing in for a compressed file.
fn blob_lines(total_json_bytes: usize) -> Vec<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    // Each line costs its characters, six spaces and "\n" (two bytes in JSON).
    const PER_LINE: usize = 76 + 6 + 2;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ALPHABET[(state % 64) as usize] as char
    };
    let mut lines = Vec::new();
    let mut left = total_json_bytes;
    while left >= PER_LINE {
        lines.push((0..76).map(|_| next()).collect());
        left -= PER_LINE;
    }
    if left > 8 {
        lines.push((0..left - 8).map(|_| next()).collect());
    }
    lines
}

/// `managedFields` `fieldsV1` for `v`, as the API server records it.
fn fields_v1(v: &Value, root: bool) -> Value {
    let mut out = Map::new();
    match v {
        Value::Object(m) => {
            if !root {
                out.insert(".".into(), json!({}));
            }
            for (k, child) in m {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                    continue;
                }
                out.insert(format!("f:{k}"), fields_v1(child, false));
            }
        }
        Value::Array(items) => {
            for item in items {
                let key = item
                    .get("name")
                    .map(|n| format!("k:{{\"name\":{n}}}"))
                    .or_else(|| item.get("uid").map(|u| format!("k:{{\"uid\":{u}}}")));
                match key {
                    Some(k) => {
                        out.insert(k, fields_v1(item, false));
                    }
                    None => {
                        out.insert(format!("v:{item}"), json!({}));
                    }
                }
            }
        }
        _ => {}
    }
    Value::Object(out)
}

fn managed_fields(manager: &str, operation: &str, obj: &Value) -> Value {
    let mut fields = fields_v1(obj, true);
    if let Some(meta) = fields.get_mut("f:metadata").and_then(Value::as_object_mut) {
        for k in ["f:name", "f:namespace", "f:uid", "f:creationTimestamp"] {
            meta.remove(k);
        }
    }
    json!([{
        "manager": manager,
        "operation": operation,
        "apiVersion": "kubevirt.io/v1",
        "time": "2025-06-02T09:14:07Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields
    }])
}

/// A VMI as virt-controller creates it from [`owner_vm`], padded through
/// the cloud-init userData to `size` bytes of AdmissionReview.
fn vmi_sized(size: usize) -> Value {
    let bare = to_bytes(&review(
        "VirtualMachineInstance",
        "virtualmachineinstances",
        controller_user(),
        vmi(&[]),
    ))
    .len();
    // managedFields do not include userData, so the padding lands once.
    let pad = size.saturating_sub(bare);
    vmi(&blob_lines(pad))
}

fn vmi(blob: &[String]) -> Value {
    let mut annotations = template_annotations();
    annotations["kubevirt.io/latest-observed-api-version"] = "v1".into();
    annotations["kubevirt.io/storage-observed-api-version"] = "v1".into();
    annotations["kubevirt.io/vm-generation"] = "1".into();
    let mut vmi = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": VM_NAME,
            "namespace": NAMESPACE,
            "uid": "0f2a6c1e-93d4-4b8e-a5f7-1c2d3e4f5a6b",
            "creationTimestamp": "2025-06-02T09:14:07Z",
            "labels": labels(),
            "annotations": annotations,
            "finalizers": ["kubevirt.io/virtualMachineControllerFinalize", "foregroundDeleteVirtualMachine"],
            "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachine",
                "name": VM_NAME,
                "uid": VM_UID,
                "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "spec": vmi_spec(&user_data(&[]))
    });
    vmi["metadata"]["managedFields"] = managed_fields("virt-controller", "Update", &vmi);
    vmi["spec"]["volumes"][2]["cloudInitNoCloud"]["userData"] = user_data(blob).into();
    vmi
}

/// [`vm`] with `rebootPolicy: terminate` (wrong case) in its template:
/// the validating webhook must deny it.
fn vm_denied() -> Value {
    let mut vm = vm();
    vm["spec"]["template"]["spec"]["domain"]["rebootPolicy"] = "terminate".into();
    vm
}

/// A BootOnce VM as `kubectl apply` creates it.
fn vm() -> Value {
    let mut vm = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": "fedora-builder",
            "namespace": NAMESPACE,
            "uid": "7c4e2a10-5b3d-4f6e-8a9b-0c1d2e3f4a5b",
            "creationTimestamp": "2025-06-02T09:13:58Z",
            "generation": 1,
            "labels": labels(),
            "annotations": {"description": "Fedora installer; boots once from the CD-ROM"}
        },
        "spec": {
            "runStrategy": "BootOnce",
            "dataVolumeTemplates": [{
                "metadata": {"name": "fedora-installer-root"},
                "spec": {
                    "storage": {
                        "accessModes": ["ReadWriteMany"],
                        "volumeMode": "Block",
                        "resources": {"requests": {"storage": "40Gi"}},
                        "storageClassName": "ceph-rbd-virtualization"
                    },
                    "source": {"blank": {}}
                }
            }],
            "template": {
                "metadata": {"labels": labels(), "annotations": template_annotations()},
                "spec": vmi_spec(&user_data(&[]))
            }
        }
    });
    let mut applied = vm.clone();
    if let Some(meta) = applied["metadata"].as_object_mut() {
        for k in ["uid", "creationTimestamp", "generation"] {
            meta.remove(k);
        }
    }
    vm["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        format!("{applied}\n").into();
    vm["metadata"]["managedFields"] = managed_fields("kubectl-client-side-apply", "Update", &vm);
    vm
}

#[cfg(test)]
mod tests {
    use kubevirt_reboot_webhook::admission::{
        self, review, Context, Endpoint, Owner, Policy, RunStrategy, Trusted, VmInfo,
    };

    use super::*;

    /// The payloads are what the benchmark says they are: their nominal
    /// size, and the webhook's decision on each is exactly the answer the
    /// load benchmark requires (one of them a denial).
    #[test]
    fn payloads_have_their_size_and_expected_verdicts() {
        let policy = Policy {
            trusted: Trusted::new("kubevirt", &[], &[]),
            ..Policy::default()
        };
        let ctx = Context {
            policy: &policy,
            gate: true,
        };
        let all = all();
        let names: Vec<_> = all.iter().map(|p| p.name).collect();
        assert_eq!(names, ["vmi-6k", "vm", "vm-denied", "vmi-500k"]);
        for p in &all {
            let (lo, hi) = match p.name {
                "vmi-6k" => (VMI_SMALL, VMI_SMALL + 1024),
                "vm" | "vm-denied" => (8 * 1024, 12 * 1024),
                _ => (VMI_LARGE, VMI_LARGE + 16 * 1024),
            };
            assert!(
                (lo..hi).contains(&p.body.len()),
                "{}: {} bytes",
                p.name,
                p.body.len()
            );
            let endpoint = match p.path {
                "/mutate" => Endpoint::Mutate,
                "/validate" => Endpoint::Validate,
                other => panic!("{}: unexpected path {other}", p.name),
            };
            let r = review::decode(&p.body).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            let owner = match admission::owner_to_resolve(endpoint, &r.request, &policy) {
                Some(o) => {
                    assert_eq!((o.name.as_str(), o.uid.as_deref()), (VM_NAME, Some(VM_UID)));
                    Owner::Found(VmInfo {
                        uid: Some(VM_UID.to_owned()),
                        run_strategy: RunStrategy::BootOnce,
                        annotated: false,
                    })
                }
                None => Owner::None,
            };
            let v = admission::decide(endpoint, &r.request, ctx, &owner);
            assert_eq!(!v.patch.is_empty(), p.mutates, "{}: {v:?}", p.name);
            let answer = review::encode(&r.api_version, &review::response(&r.request.uid, &v));
            check_answer(p, UID_TEMPLATE, &answer).unwrap_or_else(|e| panic!("{e}"));
        }
        // And the check refuses what it must: another uid, another verdict.
        let vm = &all[1];
        let ok = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u","allowed":true}}"#;
        assert!(check_answer(vm, "u", ok).is_ok());
        assert!(check_answer(vm, "v", ok).is_err(), "uid not echoed");
        assert!(
            check_answer(&all[2], "u", ok).is_err(),
            "allowed instead of denied"
        );
        assert!(check_answer(&all[0], "u", ok).is_err(), "no patch");
    }
}
