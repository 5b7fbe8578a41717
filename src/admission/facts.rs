//! The facts the rules read, extracted once per object (and once per old
//! object), each with the field path its causes name; and the one place that
//! decides whether a VM is BootOnce ([`bootonce_form`]).
//!
//! Validation, mutation, the compat rewrite and the owner lookup (files and
//! the cluster cache, through [`VmInfo`]) all read these and nothing else of
//! a VM's runStrategy or reserved annotation.

use serde_json::Value;

use super::kinds::{annotation, field, get, Kind};
use super::{BootOnceMode, BOOTONCE};

/// The runStrategy classes the decisions tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStrategy {
    BootOnce,
    Once,
    Other,
}

impl RunStrategy {
    pub fn parse(s: Option<&str>) -> RunStrategy {
        match s {
            Some(BOOTONCE) => RunStrategy::BootOnce,
            Some("Once") => RunStrategy::Once,
            _ => RunStrategy::Other,
        }
    }
}

/// How a VM is BootOnce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootOnceForm {
    /// `runStrategy: BootOnce`.
    Native,
    /// Compat mode's stored form: `runStrategy: Once` with the reserved
    /// annotation on the VM-level metadata.
    Compat,
}

/// Whether a VM with this runStrategy, and the reserved annotation on its
/// VM-level metadata or not, is BootOnce under `mode`, and in which form.
/// Every "is this VM BootOnce" in the program is this function.
pub fn bootonce_form(
    run_strategy: RunStrategy,
    annotated: bool,
    mode: BootOnceMode,
) -> Option<BootOnceForm> {
    match run_strategy {
        RunStrategy::BootOnce => Some(BootOnceForm::Native),
        RunStrategy::Once if mode == BootOnceMode::Compat && annotated => {
            Some(BootOnceForm::Compat)
        }
        RunStrategy::Once | RunStrategy::Other => None,
    }
}

/// How a VM is known to the owner lookup: only what the decisions need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmInfo {
    /// `metadata.uid`; `None` for file-sourced VMs that carry none (then any
    /// owner uid matches).
    pub uid: Option<String>,
    pub run_strategy: RunStrategy,
    /// The VM's own `metadata.annotations` holds `runstrategy.kubevirt.io: BootOnce`.
    pub annotated: bool,
}

impl VmInfo {
    /// Builds the lean view from a VirtualMachine object.
    pub fn from_object(vm: &Value) -> VmInfo {
        let uid = vm.pointer("/metadata/uid").and_then(Value::as_str);
        Facts::of(Kind::Vm, vm).vm_info(uid.map(str::to_owned))
    }

    /// Builds the lean view from a VM's decoded fields: its runStrategy and
    /// the reserved annotation's value in its metadata (the cluster cache).
    pub fn from_fields(
        uid: Option<String>,
        run_strategy: Option<&str>,
        annotation: Option<&str>,
    ) -> VmInfo {
        VmInfo {
            uid,
            run_strategy: RunStrategy::parse(run_strategy),
            annotated: annotation == Some(BOOTONCE),
        }
    }

    /// Whether VMIs of this VM must carry the BootOnce annotation.
    pub fn is_bootonce(&self, mode: BootOnceMode) -> bool {
        bootonce_form(self.run_strategy, self.annotated, mode).is_some()
    }
}

/// One field a rule reads: where it lives and its value, if present.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fact<'v> {
    /// The object holding the field, as a key path from the root.
    pub parent: &'static [&'static str],
    pub key: &'static str,
    /// The value; `None` when the key is missing or null. The API server
    /// prunes nulls from KubeVirt objects before any webhook sees them, so
    /// `rebootPolicy: null` and `running: null` are both absent: `check`
    /// judges a manifest as the cluster will.
    pub value: Option<&'v Value>,
}

impl<'v> Fact<'v> {
    fn at(obj: &'v Value, parent: &'static [&'static str], key: &'static str) -> Fact<'v> {
        Fact {
            parent,
            key,
            value: get(obj, parent)
                .and_then(|p| p.get(key))
                .filter(|v| !v.is_null()),
        }
    }

    /// The dotted field path for causes.
    pub fn field(&self) -> String {
        field(self.parent, &[self.key])
    }

    pub fn as_str(&self) -> Option<&'v str> {
        self.value.and_then(Value::as_str)
    }
}

/// The reserved annotation in one metadata object that may hold it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Annotation<'v> {
    /// The metadata object (`metadata`, `spec.template.metadata`, …).
    pub meta: &'static [&'static str],
    pub value: Option<&'v Value>,
    /// The VM-level or VMI template metadata: where the compat rewrite
    /// writes the annotation itself (a pool's own metadata is neither).
    pub compat_written: bool,
}

impl Annotation<'_> {
    /// The annotations map that holds it: where its causes sit.
    pub fn field(&self) -> String {
        field(self.meta, &["annotations"])
    }
}

/// Everything the rules read of one object of `kind`.
#[derive(Clone, Debug)]
pub(crate) struct Facts<'v> {
    /// `rebootPolicy` in the VMI spec (the object's or its template's).
    pub reboot_policy: Fact<'v>,
    /// `runStrategy`, for VMs and pools.
    pub run_strategy: Option<Fact<'v>>,
    /// `running`, for VMs and pools.
    pub running: Option<Fact<'v>>,
    /// The reserved annotation in every metadata object that may hold it,
    /// object first, then the templates.
    pub annotations: Vec<Annotation<'v>>,
    /// The reserved annotation in the VM-level metadata, for VMs and pools.
    pub vm_annotation: Option<Annotation<'v>>,
    /// The VM reports a running VMI (`status.created`, `ready` or
    /// `printableStatus: Running`).
    pub reports_running: bool,
}

impl<'v> Facts<'v> {
    pub fn of(kind: Kind, obj: &'v Value) -> Facts<'v> {
        let layout = kind.layout();
        let vm_fact = |key| layout.vm_spec.map(|s| Fact::at(obj, s, key));
        let status = |key| obj.get("status").and_then(|s| s.get(key));
        Facts {
            reboot_policy: Fact::at(obj, layout.domain, "rebootPolicy"),
            run_strategy: vm_fact("runStrategy"),
            running: vm_fact("running"),
            annotations: layout
                .metas
                .iter()
                .map(|meta| Annotation {
                    meta,
                    value: annotation(obj, meta),
                    compat_written: layout.vm_meta == Some(*meta)
                        || layout.vmi_template_meta == Some(*meta),
                })
                .collect(),
            vm_annotation: layout.vm_meta.map(|meta| Annotation {
                meta,
                value: annotation(obj, meta),
                compat_written: true,
            }),
            reports_running: status("created").and_then(Value::as_bool) == Some(true)
                || status("ready").and_then(Value::as_bool) == Some(true)
                || status("printableStatus").and_then(Value::as_str) == Some("Running"),
        }
    }

    /// The reserved annotation on the object's own metadata.
    pub fn own_annotation(&self) -> Option<&'v Value> {
        // `Layout::metas` lists the object's own metadata first.
        self.annotations.first().and_then(|a| a.value)
    }

    /// The runStrategy as a string, if it is one.
    pub fn run_strategy_str(&self) -> Option<&'v str> {
        self.run_strategy.as_ref().and_then(Fact::as_str)
    }

    /// Whether this VM or pool is BootOnce under `mode`, and in which form;
    /// never for VMIs and VMIRS, which have no runStrategy.
    pub fn bootonce(&self, mode: BootOnceMode) -> Option<BootOnceForm> {
        self.run_strategy.as_ref()?;
        let vm = self.vm_info(None);
        bootonce_form(vm.run_strategy, vm.annotated, mode)
    }

    /// The lean view of a VirtualMachine the owner lookup keeps.
    pub fn vm_info(&self, uid: Option<String>) -> VmInfo {
        VmInfo::from_fields(
            uid,
            self.run_strategy_str(),
            self.vm_annotation.and_then(|a| a.value?.as_str()),
        )
    }
}
