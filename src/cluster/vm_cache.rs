//! The VirtualMachine owner cache: a paged list + watch (kube-runtime's
//! watcher) decoded into a lean projection, so 100,000 VMs fit in a few MiB.
//!
//! Only namespace, name, uid, the runStrategy class and whether the reserved
//! annotation is present are kept. Objects are decoded straight into
//! [`LeanVm`], whose deserializer skips every other field without allocating
//! it, page by page: the full list is never in memory at once.
//!
//! Relists (after a 410 or an outage) update entries in place and mark them
//! with the relist's generation; when the relist completes, entries it did not
//! see are swept. Memory does not double.
//!
//! The cache knows whether its watch is live: from the end of a list until
//! the watch fails. Any failure ends the watcher and a fresh one relists, as
//! client-go's reflector does, because kube-runtime's watcher resumes a
//! failed watch without telling whether or when it got through. While the
//! watch is not live (failed, backing off, relisting) a hit may be wrong
//! about a VM that changed meanwhile, so a lookup reads the VM from the API
//! and falls back to the cached entry only if that read fails.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use backon::BackoffBuilder;
use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::watcher::{self, Event};
use kube::Api;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{reconnect_backoff, MAX_RECONNECT_DELAY};
use crate::admission::{RunStrategy, VmInfo, BOOTONCE_ANNOTATION};
use crate::metrics::{CacheLabels, Metrics};
use crate::owners::{LookupError, VmSource};

/// A VirtualMachine as the cache decodes it.
#[derive(Clone, Debug, Deserialize)]
pub struct LeanVm {
    #[serde(deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LeanSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanSpec {
    #[serde(default)]
    pub run_strategy: Option<String>,
}

impl kube::Resource for LeanVm {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "VirtualMachine".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "kubevirt.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "virtualmachines".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl LeanVm {
    fn info(&self) -> VmInfo {
        VmInfo::from_fields(
            self.metadata.uid.clone(),
            self.spec.run_strategy.as_deref(),
            (self.metadata.annotations.as_ref())
                .and_then(|a| a.get(BOOTONCE_ANNOTATION))
                .map(String::as_str),
        )
    }
}

/// Decodes `metadata` keeping name, namespace, uid, resourceVersion and only
/// the reserved annotation; `managedFields`, labels and the rest are skipped.
fn lean_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    struct MetaVisitor;
    impl<'de> Visitor<'de> for MetaVisitor {
        type Value = ObjectMeta;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("object metadata")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObjectMeta, A::Error> {
            let mut meta = ObjectMeta::default();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match key.as_ref() {
                    "name" => meta.name = map.next_value()?,
                    "namespace" => meta.namespace = map.next_value()?,
                    "uid" => meta.uid = map.next_value()?,
                    "resourceVersion" => meta.resource_version = map.next_value()?,
                    "annotations" => {
                        let Reserved(v) = map.next_value()?;
                        meta.annotations = v.map(|v| [(BOOTONCE_ANNOTATION.to_owned(), v)].into());
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(meta)
        }
    }
    d.deserialize_map(MetaVisitor)
}

/// The reserved annotation's value out of an annotations map; other entries skipped.
struct Reserved(Option<String>);

impl<'de> Deserialize<'de> for Reserved {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Reserved;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an annotations map")
            }
            fn visit_unit<E>(self) -> Result<Reserved, E> {
                Ok(Reserved(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reserved, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == BOOTONCE_ANNOTATION {
                        found = map.next_value()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Reserved(found))
            }
        }
        d.deserialize_any(V)
    }
}

/// One cached VM: 40-odd bytes plus its name and uid.
struct Entry {
    uid: Box<str>,
    run_strategy: RunStrategy,
    annotated: bool,
    /// The list generation that last saw it (see the module docs).
    generation: u32,
}

type Namespaces = HashMap<Arc<str>, HashMap<Box<str>, Entry>>;

/// The cache and the client for misses.
pub struct VmCache {
    client: kube::Client,
    store: RwLock<Namespaces>,
    metrics: Arc<Metrics>,
    /// Watches (one per scope) that are not live; lookups read it.
    stale_watches: AtomicUsize,
    /// Per scope: since when its watch is not live.
    stale_since: Mutex<Vec<Option<(Instant, SystemTime)>>>,
}

impl VmCache {
    /// Starts one watcher over all namespaces, or one per namespace given;
    /// `ready` is set when every initial list completed.
    pub fn spawn(
        client: kube::Client,
        namespaces: Vec<String>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
    ) -> Arc<VmCache> {
        let scopes: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.into_iter().map(Some).collect()
        };
        // Not live until the first list completes.
        let now = (Instant::now(), SystemTime::now());
        metrics.vm_cache_stale.set(1);
        metrics.vm_cache_stale_since.set(unix_seconds(now.1));
        let cache = Arc::new(VmCache {
            client: client.clone(),
            store: RwLock::new(HashMap::new()),
            metrics,
            stale_watches: AtomicUsize::new(scopes.len()),
            stale_since: Mutex::new(vec![Some(now); scopes.len()]),
        });
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(scopes.len()));
        for (index, scope) in scopes.into_iter().enumerate() {
            let api: Api<LeanVm> = match &scope {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let cache = cache.clone();
            let ready = ready.clone();
            let pending = pending.clone();
            tokio::spawn(async move { cache.run_watch(api, index, scope, ready, pending).await });
        }
        cache
    }

    async fn run_watch(
        self: Arc<Self>,
        api: Api<LeanVm>,
        index: usize,
        scope: Option<String>,
        ready: Arc<AtomicBool>,
        pending: Arc<AtomicUsize>,
    ) {
        let mut generation = 0u32;
        let mut synced = false;
        let mut last_error = String::new();
        let mut backoff = reconnect_backoff().build();
        let synced_gauge = self
            .metrics
            .cache_synced
            .get_or_create(&CacheLabels {
                cache: "virtualmachines",
            })
            .clone();
        loop {
            // No backoff inside: the first error ends this watcher.
            let mut stream =
                std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()));
            let error = loop {
                let Some(event) = stream.next().await else {
                    break "the watch stream ended".to_owned();
                };
                match event {
                    Ok(Event::Init) => {
                        generation = generation.wrapping_add(1);
                        tracing::debug!(scope = ?scope, generation, "VirtualMachine list started");
                    }
                    Ok(Event::InitApply(vm)) | Ok(Event::Apply(vm)) => {
                        if self.upsert(&vm, generation) {
                            self.metrics.vm_cache_objects.inc();
                        }
                    }
                    Ok(Event::InitDone) => {
                        let swept = self.sweep(scope.as_deref(), generation);
                        let count = self.len();
                        self.metrics.vm_cache_objects.set(count as i64);
                        let stale_for = self.live(index);
                        if synced {
                            tracing::info!(scope = ?scope, count, swept, stale_for = ?stale_for.unwrap_or_default(), "VirtualMachine cache live again; owners come from the cache");
                        } else {
                            tracing::info!(scope = ?scope, count, swept, "VirtualMachine cache synced");
                            synced = true;
                            if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                                ready.store(true, Ordering::SeqCst);
                                synced_gauge.set(1);
                            }
                        }
                        backoff = reconnect_backoff().build();
                        last_error.clear();
                    }
                    Ok(Event::Delete(vm)) => {
                        if self.remove(&vm) {
                            self.metrics.vm_cache_objects.dec();
                        }
                    }
                    Err(e) => break e.to_string(),
                }
            };
            if self.stale(index) {
                tracing::warn!(error = %error, scope = ?scope, "VirtualMachine cache is stale: watching failed; VMI CREATEs read their owner from the API until the watch is live again");
            } else if error != last_error {
                tracing::warn!(error = %error, scope = ?scope, "watching VirtualMachines still fails; retrying");
            }
            last_error = error;
            let delay = backoff.next().unwrap_or(MAX_RECONNECT_DELAY);
            tokio::time::sleep(delay).await;
        }
    }

    /// Marks the watch of scope `index` not live; true if it was live.
    fn stale(&self, index: usize) -> bool {
        let mut since = self.stale_since.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = since.get_mut(index) else {
            return false;
        };
        if slot.is_some() {
            return false;
        }
        let now = (Instant::now(), SystemTime::now());
        *slot = Some(now);
        if self.stale_watches.fetch_add(1, Ordering::SeqCst) == 0 {
            self.metrics.vm_cache_stale.set(1);
            self.metrics.vm_cache_stale_since.set(unix_seconds(now.1));
        }
        true
    }

    /// Marks the watch of scope `index` live; how long it was not.
    fn live(&self, index: usize) -> Option<Duration> {
        let mut since = self.stale_since.lock().unwrap_or_else(|e| e.into_inner());
        let (began, _) = since.get_mut(index)?.take()?;
        if self.stale_watches.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.metrics.vm_cache_stale.set(0);
            self.metrics.vm_cache_stale_since.set(0.0);
        } else if let Some(oldest) = since.iter().flatten().map(|(_, t)| *t).min() {
            self.metrics.vm_cache_stale_since.set(unix_seconds(oldest));
        }
        Some(began.elapsed())
    }

    /// Whether every watch is live, so cache hits can be trusted.
    pub fn is_live(&self) -> bool {
        self.stale_watches.load(Ordering::SeqCst) == 0
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Namespaces> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts or replaces; true when the VM was not cached before.
    fn upsert(&self, vm: &LeanVm, generation: u32) -> bool {
        let (Some(ns), Some(name)) = (
            vm.metadata.namespace.as_deref(),
            vm.metadata.name.as_deref(),
        ) else {
            return false;
        };
        let info = vm.info();
        let entry = Entry {
            uid: info.uid.unwrap_or_default().into(),
            run_strategy: info.run_strategy,
            annotated: info.annotated,
            generation,
        };
        let mut store = self.write();
        let names = match store.get_mut(ns) {
            Some(n) => n,
            None => store.entry(Arc::from(ns)).or_default(),
        };
        if let Some(e) = names.get_mut(name) {
            *e = entry;
            false
        } else {
            names.insert(name.into(), entry);
            true
        }
    }

    /// Removes; true when the VM was cached.
    fn remove(&self, vm: &LeanVm) -> bool {
        let (Some(ns), Some(name)) = (
            vm.metadata.namespace.as_deref(),
            vm.metadata.name.as_deref(),
        ) else {
            return false;
        };
        let mut store = self.write();
        let Some(names) = store.get_mut(ns) else {
            return false;
        };
        let removed = names.remove(name).is_some();
        if names.is_empty() {
            store.remove(ns);
        }
        removed
    }

    /// Drops entries in `scope` not seen by list `generation`; returns how many.
    fn sweep(&self, scope: Option<&str>, generation: u32) -> usize {
        let mut store = self.write();
        let mut swept = 0;
        store.retain(|ns, names| {
            if scope.is_some_and(|s| s != ns.as_ref()) {
                return true;
            }
            let before = names.len();
            names.retain(|_, e| e.generation == generation);
            swept += before - names.len();
            names.shrink_to_fit();
            !names.is_empty()
        });
        swept
    }

    /// Number of cached VMs.
    pub fn len(&self) -> usize {
        self.store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(HashMap::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached VM, if any: one hash lookup per level, no API request.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<VmInfo> {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        let e = store.get(namespace)?.get(name)?;
        Some(VmInfo {
            uid: (!e.uid.is_empty()).then(|| e.uid.to_string()),
            run_strategy: e.run_strategy,
            annotated: e.annotated,
        })
    }
}

impl VmSource for VmCache {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<VmInfo>, LookupError>> {
        let cached = self.cached(namespace, name);
        let live = self.is_live();
        if let (Some(vm), true) = (&cached, live) {
            self.metrics.lookup("cache");
            return Box::pin(std::future::ready(Ok(Some(vm.clone()))));
        }
        Box::pin(async move {
            // A miss: a VM created a moment ago may not have reached the
            // watch yet. A hit while the watch is not live: the VM may have
            // changed since.
            let api: Api<LeanVm> = Api::namespaced(self.client.clone(), namespace);
            match api.get_opt(name).await {
                Ok(Some(vm)) => {
                    self.metrics.lookup("api");
                    Ok(Some(vm.info()))
                }
                Ok(None) => {
                    self.metrics.lookup("not_found");
                    Ok(None)
                }
                Err(e) => match cached {
                    // The API is still unreachable: the last known state.
                    Some(vm) => {
                        self.metrics.lookup("stale_cache");
                        tracing::debug!(%namespace, %name, error = %e, "owner from the stale cache: the API cannot be read");
                        Ok(Some(vm))
                    }
                    None => {
                        self.metrics.lookup("error");
                        Err(LookupError(format!(
                            "VirtualMachine {namespace}/{name} is not cached and reading it from the Kubernetes API failed: {e}"
                        )))
                    }
                },
            }
        })
    }
}

/// Seconds since the Unix epoch.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_and_stay_capped() {
        let delays: Vec<Duration> = reconnect_backoff().build().take(50).collect();
        assert!(delays[0] >= Duration::from_millis(200) && delays[0] < Duration::from_millis(400));
        assert!(
            delays.iter().all(|d| *d <= MAX_RECONNECT_DELAY),
            "{delays:?}"
        );
        assert!(delays[10..]
            .iter()
            .all(|d| *d >= Duration::from_millis(1500)));
        // Jittered: not all the same once capped.
        assert!(delays[10..].windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn lean_decoding_keeps_only_what_decisions_need() {
        let vm: LeanVm = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "labels": {"x": "y"},
                "annotations": {"other": "z", "runstrategy.kubevirt.io": "BootOnce"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"runStrategy": "Once", "template": {"spec": {"domain": {}}}},
            "status": {"printableStatus": "Running"}
        }))
        .unwrap();
        assert_eq!(vm.metadata.labels, None);
        assert_eq!(vm.metadata.managed_fields, None);
        assert_eq!(vm.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
        assert_eq!(vm.metadata.resource_version.as_deref(), Some("7"));
        let info = vm.info();
        assert_eq!(info.uid.as_deref(), Some("u1"));
        assert_eq!(info.run_strategy, RunStrategy::Once);
        assert!(info.annotated);
    }
}
