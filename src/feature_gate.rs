//! The feature gate: whether `RecreateVMIOnReboot` (alias `RebootPolicy`) is on.
//!
//! Two sources: a static list from `--feature-gates`, and the KubeVirt custom
//! resource watched in cluster mode (`cluster::kubevirt_gate`). The precedence rules
//! for the resource are pure functions here so they are tested without a
//! cluster.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::admission::{GATE, GATE_UPSTREAM};

/// Where the decisions read the gate from.
pub trait GateSource: Send + Sync {
    fn enabled(&self) -> bool;
}

/// A gate fixed at start-up (`--feature-gates`), or flipped by a watcher.
#[derive(Debug, Default)]
pub struct GateFlag(AtomicBool);

impl GateFlag {
    pub fn new(on: bool) -> Self {
        GateFlag(AtomicBool::new(on))
    }

    /// Sets the state; returns the previous one.
    pub fn set(&self, on: bool) -> bool {
        self.0.swap(on, Ordering::Relaxed)
    }
}

impl GateSource for GateFlag {
    fn enabled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn is_gate_name(s: &str) -> bool {
    s == GATE || s == GATE_UPSTREAM
}

/// `--feature-gates A,B,C`: on when either gate name is listed. Empty means off.
pub fn parse_list(list: &str) -> bool {
    list.split(',').map(str::trim).any(is_gate_name)
}

/// The first KubeVirt version where upstream's `RebootPolicy` gate is Beta
/// (on by default).
const BETA_SINCE: (u64, u64, u64) = (1, 9, 0);

/// Upstream's precedence for the KubeVirt resource:
/// enable list, then disable list, then the Beta default by observed version.
pub fn from_kubevirt(kv: &Value) -> bool {
    let dev = kv.pointer("/spec/configuration/developerConfiguration");
    let listed = |key: &str| {
        dev.and_then(|d| d.get(key))
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().filter_map(Value::as_str).any(is_gate_name))
    };
    if listed("featureGates") {
        return true;
    }
    if listed("disabledFeatureGates") {
        return false;
    }
    kv.pointer("/status/observedKubeVirtVersion")
        .and_then(Value::as_str)
        .and_then(parse_version)
        .is_some_and(|v| v >= BETA_SINCE)
}

/// `v1.9.0`, `1.9.0-rc.1`, `v1.10.2+abc` → (major, minor, patch).
/// Pre-releases of the Beta version count as that version: upstream ships
/// the gate default in its release candidates too.
fn parse_version(s: &str) -> Option<(u64, u64, u64)> {
    let s = s.trim().trim_start_matches('v');
    let core = s.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn static_list_accepts_both_names() {
        for (list, on) in [
            ("RecreateVMIOnReboot", true),
            ("RebootPolicy", true),
            ("LiveMigration, RebootPolicy", true),
            ("", false),
            ("recreatevmionreboot", false),
            ("Snapshot,HotplugVolumes", false),
        ] {
            assert_eq!(parse_list(list), on, "{list:?}");
        }
    }

    #[test]
    fn kubevirt_precedence() {
        let kv = |enabled: &[&str], disabled: &[&str], version: Option<&str>| {
            json!({
                "spec": {"configuration": {"developerConfiguration": {
                    "featureGates": enabled, "disabledFeatureGates": disabled}}},
                "status": version.map_or(json!({}), |v| json!({"observedKubeVirtVersion": v})),
            })
        };
        let cases = [
            (
                kv(&["RecreateVMIOnReboot"], &[], None),
                true,
                "VEP name enabled",
            ),
            (
                kv(&["RebootPolicy"], &[], Some("v1.8.0")),
                true,
                "upstream name enabled",
            ),
            (
                kv(&["RebootPolicy"], &["RebootPolicy"], Some("v1.9.0")),
                true,
                "enable wins over disable",
            ),
            (
                kv(&[], &["RecreateVMIOnReboot"], Some("v1.9.0")),
                false,
                "disabled beats Beta default",
            ),
            (kv(&[], &[], Some("v1.9.0")), true, "Beta default at 1.9.0"),
            (
                kv(&[], &[], Some("v1.10.3")),
                true,
                "Beta default after 1.9",
            ),
            (kv(&[], &[], Some("v2.0.0")), true, "major bump"),
            (
                kv(&[], &[], Some("v1.9.0-rc.1")),
                true,
                "release candidate of 1.9",
            ),
            (kv(&[], &[], Some("v1.8.4")), false, "before Beta"),
            (kv(&[], &[], Some("garbage")), false, "unparsable version"),
            (kv(&[], &[], None), false, "no observed version"),
            (json!({}), false, "empty resource"),
        ];
        for (obj, want, why) in cases {
            assert_eq!(from_kubevirt(&obj), want, "{why}");
        }
    }
}
