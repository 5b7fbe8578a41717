//! The VirtualMachine owner cache: a list + watch (kube-runtime's watcher)
//! decoded into a lean projection ([`lean`]), so a fleet's VMs take little
//! memory (measured by `make bench-scale` and `make bench-fleet`, figures in
//! bench/README.md). The list is a streaming list where the API server
//! serves one, else paged ([`list_mode`]).
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::Api;

mod lean;
mod list_mode;

pub use lean::{LeanSpec, LeanVm};
pub use list_mode::ListMode;

use super::Reconnect;
use crate::admission::{RunStrategy, VmInfo};
use crate::metrics::{CacheLabels, Metrics};
use crate::owners::{LookupError, VmSource};

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
    list_mode: ListMode,
    /// The newest resourceVersion [`applied`](Self::applied), across scopes.
    newest_version: AtomicI64,
}

impl VmCache {
    /// Starts one watcher over all namespaces, or one per namespace given,
    /// each listing as `list_mode` says; `ready` is set when every initial
    /// list completed.
    pub fn spawn(
        client: kube::Client,
        namespaces: Vec<String>,
        list_mode: ListMode,
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
            list_mode,
            newest_version: AtomicI64::new(0),
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
        let mut reconnect = Reconnect::default();
        let synced_gauge = self
            .metrics
            .cache_synced
            .get_or_create(&CacheLabels {
                cache: "virtualmachines",
            })
            .clone();
        let mut mode = self.list_mode;
        loop {
            // No backoff inside: the first error ends this watcher.
            let mut stream = std::pin::pin!(watcher::watcher(api.clone(), mode.watcher_config()));
            // Between Init and InitDone; the newest object the list brought.
            let mut listing = false;
            let mut listed_version = 0;
            let error = loop {
                let Some(event) = stream.next().await else {
                    break "the watch stream ended".to_owned();
                };
                match event {
                    Ok(Event::Init) => {
                        if listing && mode == ListMode::Auto {
                            // kube's watcher started the streaming list over:
                            // the API server ended it before its end marker.
                            mode = ListMode::FALLBACK;
                            tracing::warn!(scope = ?scope, "the API server ended a streaming list of VirtualMachines before its end; listing them in pages from now on");
                            break "the streaming list ended before its end".to_owned();
                        }
                        listing = true;
                        listed_version = 0;
                        generation = generation.wrapping_add(1);
                        tracing::debug!(scope = ?scope, generation, ?mode, "VirtualMachine list started");
                    }
                    Ok(Event::InitApply(vm)) => {
                        listed_version = listed_version.max(resource_version(&vm));
                        if self.upsert(&vm, generation) {
                            self.metrics.vm_cache_objects.inc();
                        }
                    }
                    Ok(Event::Apply(vm)) => {
                        if self.upsert(&vm, generation) {
                            self.metrics.vm_cache_objects.inc();
                        }
                        self.applied(resource_version(&vm));
                    }
                    Ok(Event::InitDone) => {
                        listing = false;
                        self.applied(listed_version);
                        let swept = self.sweep(scope.as_deref(), generation);
                        let count = self.len();
                        self.metrics.vm_cache_objects.set(count as i64);
                        let stale_for = self.live(index);
                        if synced {
                            tracing::info!(scope = ?scope, count, swept, stale_for = ?stale_for.unwrap_or_default(), "VirtualMachine cache live again; owners come from the cache");
                        } else {
                            tracing::info!(scope = ?scope, count, swept, ?mode, "VirtualMachine cache synced");
                            synced = true;
                            if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                                ready.store(true, Ordering::SeqCst);
                                synced_gauge.set(1);
                            }
                        }
                        reconnect.live();
                        last_error.clear();
                    }
                    Ok(Event::Delete(vm)) => {
                        if self.remove(&vm) {
                            self.metrics.vm_cache_objects.dec();
                        }
                        self.applied(resource_version(&vm));
                    }
                    Err(e) => {
                        if mode == ListMode::Auto && list_mode::refuses_streaming(&e) {
                            mode = ListMode::FALLBACK;
                            tracing::warn!(error = %e, scope = ?scope, "the API server does not serve streaming lists; listing VirtualMachines in pages from now on");
                        }
                        break e.to_string();
                    }
                }
            };
            if self.stale(index) {
                tracing::warn!(error = %error, scope = ?scope, "VirtualMachine cache is stale: watching failed; VMI CREATEs read their owner from the API until the watch is live again");
            } else if error != last_error {
                tracing::warn!(error = %error, scope = ?scope, "watching VirtualMachines still fails; retrying");
            }
            last_error = error;
            tokio::time::sleep(reconnect.next_delay()).await;
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

    /// Records that the cache holds the VirtualMachines' state as of
    /// `version` (0: unknown), for `vm_cache_resource_version`: a list's
    /// newest object once the list is complete, then each change.
    fn applied(&self, version: i64) {
        let newest = self.newest_version.fetch_max(version, Ordering::SeqCst);
        if version > newest {
            self.metrics.vm_cache_resource_version.set(version);
        }
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

/// A VM's `metadata.resourceVersion` as a number (etcd's revision; 0 when
/// it is not one: the API promises only an opaque string).
fn resource_version(vm: &LeanVm) -> i64 {
    (vm.metadata.resource_version.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
