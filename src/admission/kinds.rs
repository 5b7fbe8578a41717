//! The KubeVirt object kinds this webhook judges, and where their fields live.

use serde_json::Value;

use super::{OwnerRef, BOOTONCE_ANNOTATION, VM_GENERATION_ANNOTATION};

/// A kind this webhook judges; every other kind is allowed untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Vmi,
    Vm,
    Vmirs,
    Pool,
}

/// Field layout of one kind, as JSON key paths from the object root.
#[derive(Debug)]
pub struct Layout {
    /// The VMI spec's `domain` (holding `rebootPolicy`).
    pub domain: &'static [&'static str],
    /// The VM spec (holding `runStrategy` and `running`), for VMs and pools.
    pub vm_spec: Option<&'static [&'static str]>,
    /// The VM-level metadata (a VM's own, or a pool's VM template's).
    pub vm_meta: Option<&'static [&'static str]>,
    /// The VMI template metadata (whose annotations VMIs inherit).
    pub vmi_template_meta: Option<&'static [&'static str]>,
    /// Every metadata object whose annotations may hold the reserved key.
    pub metas: &'static [&'static [&'static str]],
}

const META: &[&str] = &["metadata"];
const TEMPLATE_META: &[&str] = &["spec", "template", "metadata"];
const POOL_VM_META: &[&str] = &["spec", "virtualMachineTemplate", "metadata"];
const POOL_TEMPLATE_META: &[&str] = &[
    "spec",
    "virtualMachineTemplate",
    "spec",
    "template",
    "metadata",
];

impl Kind {
    /// Recognises a kind from the request's `kind` (group, version, kind).
    pub fn from_gvk(group: &str, version: &str, kind: &str) -> Option<Kind> {
        match (group, version, kind) {
            ("kubevirt.io", "v1" | "v1alpha3", "VirtualMachineInstance") => Some(Kind::Vmi),
            ("kubevirt.io", "v1" | "v1alpha3", "VirtualMachine") => Some(Kind::Vm),
            ("kubevirt.io", "v1" | "v1alpha3", "VirtualMachineInstanceReplicaSet") => {
                Some(Kind::Vmirs)
            }
            ("pool.kubevirt.io", "v1alpha1" | "v1beta1", "VirtualMachinePool") => Some(Kind::Pool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Vmi => "VirtualMachineInstance",
            Kind::Vm => "VirtualMachine",
            Kind::Vmirs => "VirtualMachineInstanceReplicaSet",
            Kind::Pool => "VirtualMachinePool",
        }
    }

    pub fn layout(self) -> &'static Layout {
        match self {
            Kind::Vmi => &Layout {
                domain: &["spec", "domain"],
                vm_spec: None,
                vm_meta: None,
                vmi_template_meta: None,
                metas: &[META],
            },
            Kind::Vm => &Layout {
                domain: &["spec", "template", "spec", "domain"],
                vm_spec: Some(&["spec"]),
                vm_meta: Some(META),
                vmi_template_meta: Some(TEMPLATE_META),
                metas: &[META, TEMPLATE_META],
            },
            Kind::Vmirs => &Layout {
                domain: &["spec", "template", "spec", "domain"],
                vm_spec: None,
                vm_meta: None,
                vmi_template_meta: Some(TEMPLATE_META),
                metas: &[META, TEMPLATE_META],
            },
            Kind::Pool => &Layout {
                domain: &[
                    "spec",
                    "virtualMachineTemplate",
                    "spec",
                    "template",
                    "spec",
                    "domain",
                ],
                vm_spec: Some(&["spec", "virtualMachineTemplate", "spec"]),
                vm_meta: Some(POOL_VM_META),
                vmi_template_meta: Some(POOL_TEMPLATE_META),
                metas: &[META, POOL_VM_META, POOL_TEMPLATE_META],
            },
        }
    }
}

/// Follows `path` through nested objects.
pub fn get<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(*k))
}

/// A dotted field path for causes: `spec.template.spec.domain.rebootPolicy`.
pub fn field(path: &[&str], leaf: &[&str]) -> String {
    path.iter()
        .chain(leaf)
        .copied()
        .collect::<Vec<_>>()
        .join(".")
}

/// The reserved annotation's value in the metadata object at `meta`.
pub fn annotation<'v>(obj: &'v Value, meta: &[&str]) -> Option<&'v Value> {
    get(obj, meta)?.get("annotations")?.get(BOOTONCE_ANNOTATION)
}

/// Whether `obj` (an object, or an owner reference: both carry `apiVersion`
/// and `kind`) names a KubeVirt VirtualMachine, in any `kubevirt.io` version.
/// The owner lookup and the VM files both ask this.
pub fn is_kubevirt_vm(obj: &Value) -> bool {
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    text("kind") == Some("VirtualMachine")
        && text("apiVersion").is_some_and(|v| v.starts_with("kubevirt.io/"))
}

/// The VMI's controller owner if it is a KubeVirt VirtualMachine.
pub fn controller_vm_owner(vmi: &Value, request_namespace: Option<&str>) -> Option<OwnerRef> {
    let meta = vmi.get("metadata")?;
    let owner = meta
        .get("ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))?;
    if !is_kubevirt_vm(owner) {
        return None;
    }
    let namespace = request_namespace
        .filter(|ns| !ns.is_empty())
        .or_else(|| meta.get("namespace").and_then(Value::as_str))
        .unwrap_or("default");
    let vm_generation = meta
        .get("annotations")
        .and_then(|a| a.get(VM_GENERATION_ANNOTATION))
        .map(|g| g.as_str().and_then(|g| g.parse().ok()).unwrap_or(i64::MAX));
    Some(OwnerRef {
        namespace: namespace.to_owned(),
        name: owner.get("name").and_then(Value::as_str)?.to_owned(),
        uid: owner.get("uid").and_then(Value::as_str).map(str::to_owned),
        vm_generation,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kubevirt_vms_in_any_kubevirt_io_version() {
        #[rustfmt::skip]
        let rows = [
            (json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine"}), true),
            (json!({"apiVersion": "kubevirt.io/v1alpha3", "kind": "VirtualMachine"}), true),
            (json!({"apiVersion": "pool.kubevirt.io/v1alpha1", "kind": "VirtualMachine"}), false),
            (json!({"apiVersion": "example.com/v1", "kind": "VirtualMachine"}), false),
            (json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance"}), false),
            (json!({"kind": "VirtualMachine"}), false),
            (json!({"apiVersion": 1, "kind": "VirtualMachine"}), false),
        ];
        for (obj, want) in rows {
            assert_eq!(is_kubevirt_vm(&obj), want, "{obj}");
        }
    }
}
