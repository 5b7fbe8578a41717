//! The gate from the KubeVirt custom resource, watched so changes apply
//! without a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::Event;
use kube::Api;
use prometheus_client::metrics::gauge::Gauge;

use super::watch::{self, Failure, Watched};
use crate::feature_gate::{from_kubevirt, GateFlag};
use crate::metrics::{CacheLabels, Metrics};

/// `kubevirt.io/v1` `KubeVirt`.
pub fn kubevirt_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "KubeVirt"),
        "kubevirts",
    )
}

/// Starts watching KubeVirt resources in `namespace`; the returned flag
/// follows them. `ready` is set once the first list completed.
pub fn spawn(
    client: kube::Client,
    namespace: &str,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> Arc<GateFlag> {
    let flag = Arc::new(GateFlag::new(false));
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &kubevirt_resource());
    let synced = metrics
        .cache_synced
        .get_or_create(&CacheLabels { cache: "kubevirt" })
        .clone();
    // Not live until the first list completes.
    metrics.gate_stale.set(1);
    let gate = GateWatch {
        out: flag.clone(),
        namespace: namespace.to_owned(),
        metrics,
        ready,
        synced,
        current: HashMap::new(),
        relisting: None,
        said_missing: false,
        listed: false,
        recovered: false,
        synced_once: false,
        failed: false,
    };
    tokio::spawn(watch::run(api, gate));
    flag
}

/// Whether the gate is on by this KubeVirt resource. Its spec and status
/// are in `data` as the API sent them: read there, not re-serialized.
fn gate_of(o: &DynamicObject) -> (String, bool) {
    let name = o.metadata.name.clone().unwrap_or_default();
    (name, from_kubevirt(&o.data))
}

/// The gate from the KubeVirt resources of one namespace (any of them
/// enabling it turns it on).
struct GateWatch {
    out: Arc<GateFlag>,
    namespace: String,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    synced: Gauge,
    /// By resource name: whether it enables the gate.
    current: HashMap<String, bool>,
    /// The list in progress; the last complete state stays in force until
    /// it completes.
    relisting: Option<HashMap<String, bool>>,
    said_missing: bool,
    /// Set by a completed list; readiness is reported only once the gate
    /// computed from it is in force.
    listed: bool,
    /// Set by a completed list that ended a run of failures.
    recovered: bool,
    /// Set by the first completed list.
    synced_once: bool,
    /// A watch failed since the last completed list.
    failed: bool,
}

impl Watched for GateWatch {
    type Object = DynamicObject;

    fn event(&mut self, event: Event<DynamicObject>) {
        match event {
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(o) => {
                let (n, on) = gate_of(&o);
                self.relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(n, on);
            }
            Event::InitDone => {
                self.current = self.relisting.take().unwrap_or_default();
                self.listed = true;
                self.recovered = self.synced_once && self.failed;
                self.synced_once = true;
                self.failed = false;
            }
            Event::Apply(o) => {
                let (n, on) = gate_of(&o);
                self.current.insert(n, on);
            }
            Event::Delete(o) => {
                self.current
                    .remove(o.metadata.name.as_deref().unwrap_or_default());
            }
        }
        if self.relisting.is_some() {
            return;
        }
        let namespace = &self.namespace;
        if self.current.is_empty() {
            if !self.said_missing {
                tracing::info!(%namespace, "no KubeVirt resource found; feature gate RecreateVMIOnReboot is off");
                self.said_missing = true;
            }
        } else {
            self.said_missing = false;
        }
        let on = self.current.values().any(|v| *v);
        self.metrics.gate_enabled.set(on as i64);
        if self.out.set(on) != on {
            tracing::info!(
                enabled = on,
                "feature gate RecreateVMIOnReboot changed (KubeVirt resource)"
            );
        }
        if std::mem::take(&mut self.listed) {
            self.ready.store(true, Ordering::SeqCst);
            self.synced.set(1);
            self.metrics.gate_stale.set(0);
        }
        if std::mem::take(&mut self.recovered) {
            tracing::info!(enabled = on, %namespace, "KubeVirt watch live again; the feature gate follows the KubeVirt resource");
        }
    }

    fn failed(&mut self, error: &Failure, repeated: bool) {
        // A list cut short leaves the last complete state in force.
        self.relisting = None;
        self.failed = true;
        self.metrics.gate_stale.set(1);
        if !repeated {
            tracing::warn!(error = %error, namespace = %self.namespace, "watching KubeVirt resources failed; retrying with backoff, keeping the last known gate state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gate is read from the decoded object's `data` (spec and status)
    /// with the same precedence as `feature_gate::from_kubevirt`.
    #[test]
    fn gate_of_reads_spec_and_status_as_decoded() {
        let decode = |v: serde_json::Value| serde_json::from_value::<DynamicObject>(v).unwrap();
        let kv = |enabled: &[&str], disabled: &[&str], version: &str| {
            decode(serde_json::json!({
                "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
                "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
                "spec": {"configuration": {"developerConfiguration": {
                    "featureGates": enabled, "disabledFeatureGates": disabled}}},
                "status": {"observedKubeVirtVersion": version}
            }))
        };
        for (o, want) in [
            (kv(&["RecreateVMIOnReboot"], &[], "v1.8.0"), true),
            (kv(&[], &["RebootPolicy"], "v1.9.0"), false),
            (kv(&[], &[], "v1.9.0"), true),
            (kv(&[], &[], "v1.8.4"), false),
        ] {
            assert_eq!(gate_of(&o), ("kubevirt".to_owned(), want), "{o:?}");
        }
    }
}
