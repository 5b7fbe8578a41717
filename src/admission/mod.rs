//! The admission decisions: pure functions from a decoded request, the gate
//! state and the resolved owner to a [`Verdict`].
//!
//! Nothing in this module performs I/O, reads a clock or touches globals; the
//! server and the offline `check` command both call [`decide`], so they cannot
//! disagree.
//!
//! Rules read an object only through its facts (`facts.rs`); whether a VM is
//! BootOnce is decided there, in [`bootonce_form`]. The rules themselves:
//! `validate.rs` (numbered as the README's Behaviour table) and `mutate.rs`.

mod facts;
mod kinds;
mod mutate;
mod patch;
pub mod review;
mod validate;

pub use facts::{bootonce_form, BootOnceForm, RunStrategy, VmInfo};
pub use kinds::{is_kubevirt_vm, Kind, Layout};
pub use review::{AdmissionRequest, DecodeError, Operation};

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// The reserved annotation that carries `runStrategy: BootOnce` to a VMI.
pub const BOOTONCE_ANNOTATION: &str = "runstrategy.kubevirt.io";
/// The only value the reserved annotation may hold.
pub const BOOTONCE: &str = "BootOnce";
/// Set by virt-controller on every VMI it creates: the `metadata.generation`
/// of the VM it built the VMI from.
pub const VM_GENERATION_ANNOTATION: &str = "kubevirt.io/vm-generation";
/// The VEP's name of the feature gate.
pub const GATE: &str = "RecreateVMIOnReboot";
/// Upstream KubeVirt's name of the same gate.
pub const GATE_UPSTREAM: &str = "RebootPolicy";
/// KubeVirt's own service accounts, trusted when they live in the KubeVirt namespace.
pub const KUBEVIRT_SERVICE_ACCOUNTS: [&str; 4] = [
    "kubevirt-controller",
    "kubevirt-apiserver",
    "kubevirt-handler",
    "kubevirt-synchronization-controller",
];

/// Which of the two webhooks is being asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// `--mode`: enforce denials, or turn them into warnings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    #[default]
    Enforce,
    Warn,
}

/// `--bootonce`: how BootOnce reaches KubeVirt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BootOnceMode {
    /// KubeVirt knows `runStrategy: BootOnce` itself (VEP 0171 implemented).
    #[default]
    Native,
    /// Stock KubeVirt: BootOnce VMs are stored as `Once` + `Terminate` + annotation.
    Compat,
}

/// Who may set reserved fields: KubeVirt's service accounts and configured extras.
#[derive(Clone, Debug, Default)]
pub struct Trusted {
    service_accounts: HashSet<String>,
    users: HashSet<String>,
    groups: HashSet<String>,
}

impl Trusted {
    pub fn new(kubevirt_namespace: &str, users: &[String], groups: &[String]) -> Self {
        Trusted {
            service_accounts: KUBEVIRT_SERVICE_ACCOUNTS
                .iter()
                .map(|sa| format!("system:serviceaccount:{kubevirt_namespace}:{sa}"))
                .collect(),
            users: users.iter().cloned().collect(),
            groups: groups.iter().cloned().collect(),
        }
    }

    pub fn contains(&self, user: &review::UserInfo) -> bool {
        let name = user.username.as_deref().unwrap_or_default();
        self.service_accounts.contains(name)
            || self.users.contains(name)
            || user.groups.iter().any(|g| self.groups.contains(g))
    }
}

/// Everything configured once at start-up that the decisions depend on.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub trusted: Trusted,
    pub mode: Mode,
    pub bootonce: BootOnceMode,
}

/// A VMI's controller owner reference, as far as the decisions care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    /// The VMI's [`VM_GENERATION_ANNOTATION`]: an owner read from a cache
    /// must be at least this generation. `None` without the annotation
    /// (older KubeVirt, or a VMI not created by virt-controller); a value
    /// that is not a number reads as `i64::MAX`, which no cached VM reaches,
    /// so the API answers.
    pub vm_generation: Option<i64>,
}

/// The result of resolving a VMI's controller owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The request has no VM controller owner to resolve (or none was asked for).
    None,
    /// The owner VM exists and its uid matches.
    Found(VmInfo),
    /// No VM as the reference names it: the API server (or the files) has
    /// no VM of that name, or one with another uid (deleted and
    /// re-created). A cache that disagrees is not enough to say so.
    NotFound,
    /// The owner could not be read; the string says why.
    Unavailable(String),
}

/// The context of one decision.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub policy: &'a Policy,
    /// Whether `RecreateVMIOnReboot` (alias `RebootPolicy`) is on.
    pub gate: bool,
}

/// One reason for a denial, in Kubernetes' `StatusCause` terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub reason: CauseReason,
    pub field: String,
    pub message: String,
}

/// The `StatusCause.reason` values this webhook uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CauseReason {
    FieldValueInvalid,
    FieldValueNotSupported,
    FieldValueForbidden,
    /// The decision could not be taken (owner unreadable): retry.
    InternalError,
}

impl CauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CauseReason::FieldValueInvalid => "FieldValueInvalid",
            CauseReason::FieldValueNotSupported => "FieldValueNotSupported",
            CauseReason::FieldValueForbidden => "FieldValueForbidden",
            CauseReason::InternalError => "InternalError",
        }
    }
}

/// What the webhook answers, before it is put into an AdmissionResponse.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    pub causes: Vec<Cause>,
    pub warnings: Vec<String>,
    pub patch: Vec<json_patch::PatchOperation>,
    /// Causes that `--mode warn` turned into warnings: the request passes,
    /// but the audit log and the metrics still say why it would not have.
    pub waived: Vec<Cause>,
    /// What the patch does, in words, for the audit log.
    pub mutation: Option<Mutation>,
}

/// A patch described for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    /// The audit annotation key: `stamped`, `unstamped` or `compat-rewrite`.
    pub action: &'static str,
    /// `field=value` per field set, `field removed` per field removed.
    pub changes: Vec<String>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.causes.is_empty()
    }

    /// `status.message`: every cause as `field: message`, joined.
    pub fn message(&self) -> String {
        self.causes
            .iter()
            .map(|c| match c.field.as_str() {
                "" => c.message.clone(),
                f => format!("{f}: {}", c.message),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `auditAnnotations` of the response: why a request was denied
    /// (`denied`) or would have been in warn mode (`would-deny`), each cause
    /// as `field: reason`, and what a patch changed (`stamped`, `unstamped`,
    /// `compat-rewrite`). The API server records them in its audit log under
    /// `<webhook name>/<key>`.
    pub fn audit_annotations(&self) -> BTreeMap<String, String> {
        fn summary(causes: &[Cause]) -> String {
            causes
                .iter()
                .map(|c| match c.field.as_str() {
                    "" => c.reason.as_str().to_owned(),
                    f => format!("{f}: {}", c.reason.as_str()),
                })
                .collect::<Vec<_>>()
                .join("; ")
        }
        let mut audit = BTreeMap::new();
        if !self.allowed() {
            audit.insert("denied".to_owned(), summary(&self.causes));
            return audit;
        }
        if !self.waived.is_empty() {
            audit.insert("would-deny".to_owned(), summary(&self.waived));
        }
        if let Some(m) = self.mutation.as_ref().filter(|_| !self.patch.is_empty()) {
            audit.insert(m.action.to_owned(), m.changes.join(", "));
        }
        audit
    }

    /// Applies `--mode warn`: causes become warnings and the request passes.
    ///
    /// Except a mutation that could not read the VMI's owner: warn mode
    /// softens policy, not the mechanism, and passing it would let a
    /// BootOnce VM boot without its annotation (and reboot in place). It
    /// stays a "retry" denial. Validation has no such stake: a forged
    /// annotation it could have judged would pass in warn mode anyway.
    pub fn apply_mode(mut self, mode: Mode, endpoint: Endpoint) -> Verdict {
        let undecided_mutation = endpoint == Endpoint::Mutate
            && self
                .causes
                .iter()
                .any(|c| c.reason == CauseReason::InternalError);
        if mode == Mode::Warn && !self.causes.is_empty() && !undecided_mutation {
            for c in &self.causes {
                self.warnings.push(match c.field.as_str() {
                    "" => format!("would be denied (warn mode): {}", c.message),
                    f => format!("would be denied (warn mode): {f}: {}", c.message),
                });
            }
            self.waived = std::mem::take(&mut self.causes);
            // A denied mutation has nothing trustworthy to patch with.
            self.patch.clear();
            self.mutation = None;
        }
        self
    }
}

/// The owner reference a request needs resolved before [`decide`], if any.
///
/// Mutation needs the owner of every VMI CREATE; validation needs it only to
/// judge a reserved annotation set by an untrusted requester.
pub fn owner_to_resolve(
    endpoint: Endpoint,
    req: &AdmissionRequest,
    policy: &Policy,
) -> Option<OwnerRef> {
    if req.kind() != Some(Kind::Vmi) || req.operation != Operation::Create || req.is_subresource() {
        return None;
    }
    let obj = req.object.as_ref()?;
    if endpoint == Endpoint::Validate
        && (facts::Facts::of(Kind::Vmi, obj).own_annotation().is_none()
            || policy.trusted.contains(&req.user_info))
    {
        return None;
    }
    kinds::controller_vm_owner(obj, req.namespace.as_deref())
}

/// The decision: pure, total, and the same for the server and `check`.
pub fn decide(
    endpoint: Endpoint,
    req: &AdmissionRequest,
    ctx: Context<'_>,
    owner: &Owner,
) -> Verdict {
    let Some(kind) = req.kind() else {
        return Verdict::default();
    };
    if req.is_subresource() || !matches!(req.operation, Operation::Create | Operation::Update) {
        return Verdict::default();
    }
    let Some(obj) = req.object.as_ref() else {
        return Verdict::default();
    };
    let verdict = match endpoint {
        Endpoint::Validate => validate::validate(kind, req, obj, ctx, owner),
        Endpoint::Mutate => mutate::mutate(kind, req, obj, ctx, owner),
    };
    verdict.apply_mode(ctx.policy.mode, endpoint)
}

/// The verdict when no decision came before the API server's `timeout`: a
/// "retry" denial, softened like the decision's own "owner unreadable" (a
/// warning on /validate in warn mode; still a denial on /mutate).
pub fn late_verdict(timeout: Duration, mode: Mode, endpoint: Endpoint) -> Verdict {
    Verdict {
        causes: vec![Cause {
            reason: CauseReason::InternalError,
            field: String::new(),
            message: format!(
                "the reboot webhook could not decide within the API server's timeout ({}s), usually because the owner VirtualMachine could not be read; retry the request",
                timeout.as_secs_f64()
            ),
        }],
        ..Verdict::default()
    }
    .apply_mode(mode, endpoint)
}

/// The gate's names as users read them in messages.
pub(crate) fn gate_names() -> String {
    format!("{GATE} (upstream KubeVirt: {GATE_UPSTREAM})")
}

#[cfg(test)]
mod tests;
