//! The VirtualMachine owner cache: a paged list + watch (kube-runtime's
//! watcher) decoded into a lean projection ([`lean`]), so a fleet's VMs take
//! little memory (measured by `make bench-scale`, figures in bench/README.md).
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use kube::runtime::watcher::Event;
use kube::Api;
use prometheus_client::metrics::gauge::Gauge;

mod lean;

pub use lean::{LeanSpec, LeanVm};

use super::watch::{self, Watched};
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
        let pending = Arc::new(AtomicUsize::new(scopes.len()));
        let synced_gauge = (cache.metrics.cache_synced)
            .get_or_create(&CacheLabels {
                cache: "virtualmachines",
            })
            .clone();
        for (index, scope) in scopes.into_iter().enumerate() {
            let api: Api<LeanVm> = match &scope {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let scope = ScopeWatch {
                cache: cache.clone(),
                index,
                scope,
                generation: 0,
                synced: false,
                ready: ready.clone(),
                pending: pending.clone(),
                synced_gauge: synced_gauge.clone(),
            };
            tokio::spawn(watch::run(api, scope));
        }
        cache
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
    fn len(&self) -> usize {
        self.store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(HashMap::len)
            .sum()
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

/// The watch of one scope (all namespaces, or one): keeps the cache's
/// entries of that scope and says when the cache is live or stale.
struct ScopeWatch {
    cache: Arc<VmCache>,
    index: usize,
    scope: Option<String>,
    /// The current list's generation (see the module docs).
    generation: u32,
    /// The first list completed.
    synced: bool,
    ready: Arc<AtomicBool>,
    /// Scopes whose first list has not completed yet.
    pending: Arc<AtomicUsize>,
    synced_gauge: Gauge,
}

impl Watched for ScopeWatch {
    type Object = LeanVm;

    fn event(&mut self, event: Event<LeanVm>) {
        let cache = &self.cache;
        let scope = &self.scope;
        match event {
            Event::Init => {
                self.generation = self.generation.wrapping_add(1);
                tracing::debug!(scope = ?scope, generation = self.generation, "VirtualMachine list started");
            }
            Event::InitApply(vm) | Event::Apply(vm) => {
                if cache.upsert(&vm, self.generation) {
                    cache.metrics.vm_cache_objects.inc();
                }
            }
            Event::InitDone => {
                let swept = cache.sweep(scope.as_deref(), self.generation);
                let count = cache.len();
                cache.metrics.vm_cache_objects.set(count as i64);
                let stale_for = cache.live(self.index);
                if self.synced {
                    tracing::info!(scope = ?scope, count, swept, stale_for = ?stale_for.unwrap_or_default(), "VirtualMachine cache live again; owners come from the cache");
                } else {
                    tracing::info!(scope = ?scope, count, swept, "VirtualMachine cache synced");
                    self.synced = true;
                    if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                        self.ready.store(true, Ordering::SeqCst);
                        self.synced_gauge.set(1);
                    }
                }
            }
            Event::Delete(vm) => {
                if cache.remove(&vm) {
                    cache.metrics.vm_cache_objects.dec();
                }
            }
        }
    }

    fn failed(&mut self, error: &str, repeated: bool) {
        let scope = &self.scope;
        if self.cache.stale(self.index) {
            tracing::warn!(error = %error, scope = ?scope, "VirtualMachine cache is stale: watching failed; VMI CREATEs read their owner from the API until the watch is live again");
        } else if !repeated {
            tracing::warn!(error = %error, scope = ?scope, "watching VirtualMachines still fails; retrying");
        }
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
