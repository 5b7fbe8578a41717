//! The gate from the KubeVirt custom resource, watched so changes apply
//! without a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::Api;

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
    let out = flag.clone();
    let namespace = namespace.to_owned();
    tokio::spawn(async move {
        let mut current: HashMap<String, bool> = HashMap::new();
        let mut relisting: Option<HashMap<String, bool>> = None;
        let mut said_missing = false;
        // Set by a completed list; readiness is reported only once the gate
        // computed from it is in force.
        let mut listed = false;
        // Set by a completed list that ended a run of failures.
        let mut recovered = false;
        let synced = metrics
            .cache_synced
            .get_or_create(&CacheLabels { cache: "kubevirt" })
            .clone();
        let mut last_error = String::new();
        let mut reconnect = super::Reconnect::default();
        // Not live until the first list completes.
        metrics.gate_stale.set(1);
        // Set by the first completed list.
        let mut synced_once = false;
        // As in the VM cache, the first error ends a watcher and a fresh one
        // relists after the next delay (see `Reconnect`). kube-runtime's
        // `.backoff()` would not grow: the watcher yields `Event::Init` before
        // each list attempt, and any item resets it, so a failing list was
        // retried every 0.2-0.4 s for as long as the API failed
        // (tests/cluster.rs, `failing_watches_retry_on_the_short_backoff`).
        loop {
            let mut stream =
                std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()));
            let error = loop {
                let Some(event) = stream.next().await else {
                    break "the watch stream ended".to_owned();
                };
                let event = match event {
                    Ok(e) => e,
                    Err(e) => break e.to_string(),
                };
                let gate_of = |o: &DynamicObject| {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    (
                        name,
                        serde_json::to_value(o).is_ok_and(|v| from_kubevirt(&v)),
                    )
                };
                match event {
                    Event::Init => relisting = Some(HashMap::new()),
                    Event::InitApply(o) => {
                        let (n, on) = gate_of(&o);
                        relisting.get_or_insert_with(HashMap::new).insert(n, on);
                    }
                    Event::InitDone => {
                        current = relisting.take().unwrap_or_default();
                        listed = true;
                        recovered = synced_once && !last_error.is_empty();
                        synced_once = true;
                        reconnect.live();
                        last_error.clear();
                    }
                    Event::Apply(o) => {
                        let (n, on) = gate_of(&o);
                        current.insert(n, on);
                    }
                    Event::Delete(o) => {
                        current.remove(&o.metadata.name.clone().unwrap_or_default());
                    }
                }
                if relisting.is_some() {
                    continue;
                }
                if current.is_empty() {
                    if !said_missing {
                        tracing::info!(%namespace, "no KubeVirt resource found; feature gate RecreateVMIOnReboot is off");
                        said_missing = true;
                    }
                } else {
                    said_missing = false;
                }
                let on = current.values().any(|v| *v);
                metrics.gate_enabled.set(on as i64);
                if out.set(on) != on {
                    tracing::info!(
                        enabled = on,
                        "feature gate RecreateVMIOnReboot changed (KubeVirt resource)"
                    );
                }
                if std::mem::take(&mut listed) {
                    ready.store(true, Ordering::SeqCst);
                    synced.set(1);
                    metrics.gate_stale.set(0);
                }
                if std::mem::take(&mut recovered) {
                    tracing::info!(enabled = on, %namespace, "KubeVirt watch live again; the feature gate follows the KubeVirt resource");
                }
            };
            // A list cut short leaves the last complete state in force.
            relisting = None;
            metrics.gate_stale.set(1);
            if error != last_error {
                tracing::warn!(error = %error, %namespace, "watching KubeVirt resources failed; retrying with backoff, keeping the last known gate state");
            }
            last_error = error;
            tokio::time::sleep(reconnect.next_delay()).await;
        }
    });
    flag
}
