//! The VirtualMachine owner cache: a list + watch (kube-runtime's watcher)
//! decoded into a lean projection ([`lean`]), so a fleet's VMs take little
//! memory (measured by `make bench-scale` and `make bench-fleet`, figures in
//! bench/README.md). How it lists is `--vm-list-mode` ([`list_mode`]).
//!
//! Only namespace, name, uid, `metadata.generation`, the runStrategy class and
//! whether the reserved annotation is present are kept. Objects are decoded straight into
//! [`LeanVm`], whose deserializer skips every other field without allocating
//! it, page by page: the full list is never in memory at once.
//!
//! Relists (after a 410 or an outage) update entries in place and mark them
//! with the relist's number; when the relist completes, entries it did not
//! see are swept. Memory does not double.
//!
//! The cache knows whether its watch is live: from the end of a list until
//! the watch fails. Any failure ends the watcher and a fresh one relists, as
//! client-go's reflector does, because kube-runtime's watcher resumes a
//! failed watch without telling whether or when it got through. While the
//! watch is not live (failed, backing off, relisting) a hit may be wrong
//! about a VM that changed meanwhile, so a lookup reads the VM from the API
//! and falls back to the cached entry only if that read fails.
//!
//! A live watch can still be behind: it is not virt-controller's watch, and
//! a VMI created right after its VM was changed can reach us before the
//! change does. The freshness fence: a cached VM answers only when it has
//! the owner reference's uid and a `metadata.generation` at least the VMI's
//! `kubevirt.io/vm-generation` (virt-controller's generation of the VM it
//! built the VMI from; a runStrategy change is a spec change, so it raises
//! the generation). Otherwise one GET (a consistent read) decides, counted
//! in `owner_fence_reads_total{reason}`; if it fails, a VM that is only older
//! decides as a stale cache would (metric `stale_cache`, a warning in the
//! log), while another VM under that name is no answer at all (the lookup
//! fails, and the VMI CREATE is denied with "retry"). A VMI without the
//! annotation is checked for the uid only. The check is two integer
//! comparisons inside the lookup that already happens: a fresh cache costs
//! nothing more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use kube::runtime::watcher::{self, Event};
use kube::Api;
use prometheus_client::metrics::gauge::Gauge;

mod lean;
mod list_mode;

pub use lean::{LeanSpec, LeanVm};
pub use list_mode::ListMode;

use super::watch::{self, Failure, Watched};
use crate::admission::{OwnerRef, RunStrategy, VmInfo};
use crate::metrics::{CacheLabels, FenceReason, Metrics};
use crate::owners::{LookupError, VmSource};

/// One cached VM: 24 bytes plus its name and uid.
struct Entry {
    uid: Box<str>,
    /// The VM's `metadata.generation`; [`TOO_NEW`] when it does not fit
    /// (no VMI can then be shown fresh enough: the API answers).
    generation: u32,
    /// The list that last saw it (see the module docs). It wraps after
    /// 65,536 lists, but a completed list sweeps every entry another list
    /// marked, so only the numbers of lists since the last completed one are
    /// ever compared: 65,536 lists in a row that all fail (at least 0.2 s
    /// apart, most 1.5-3 s: a day and a half) before one completes.
    list: u16,
    run_strategy: RunStrategy,
    annotated: bool,
}

/// [`Entry::generation`] of a VM whose generation does not fit a `u32`.
const TOO_NEW: u32 = u32::MAX;

/// What the cache holds for an owner reference.
enum Cached {
    /// No VM under that name.
    Missing,
    /// The owner, as new as the VMI needs (or the VMI says nothing).
    Fresh(VmInfo),
    /// The owner, older than the VM the VMI was built from.
    Older(VmInfo),
    /// Another VM under that name: another uid.
    Other,
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
    /// The freshness fence (see the module docs); off only to show, in
    /// `make e2e`, the race it closes.
    fence: bool,
    /// The newest resourceVersion [`applied`](Self::applied), across scopes.
    newest_version: AtomicI64,
}

impl VmCache {
    /// Starts one watcher over all namespaces, or one per namespace given,
    /// each listing as `list_mode` says; `ready` is set when every initial
    /// list completed. `fence`: the freshness fence (see the module docs),
    /// always on but in one e2e scenario.
    pub fn spawn(
        client: kube::Client,
        namespaces: Vec<String>,
        list_mode: ListMode,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
        fence: bool,
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
            fence,
            newest_version: AtomicI64::new(0),
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
                list: 0,
                listed_version: 0,
                mode: list_mode,
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
    fn upsert(&self, vm: &LeanVm, list: u16) -> bool {
        let (Some(ns), Some(name)) = (
            vm.metadata.namespace.as_deref(),
            vm.metadata.name.as_deref(),
        ) else {
            return false;
        };
        let info = vm.info();
        let entry = Entry {
            uid: info.uid.unwrap_or_default().into(),
            generation: (vm.metadata.generation).map_or(0, |g| u32::try_from(g).unwrap_or(TOO_NEW)),
            list,
            run_strategy: info.run_strategy,
            annotated: info.annotated,
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

    /// Drops entries in `scope` not seen by list `list`; returns how many.
    fn sweep(&self, scope: Option<&str>, list: u16) -> usize {
        let mut store = self.write();
        let mut swept = 0;
        store.retain(|ns, names| {
            if scope.is_some_and(|s| s != ns.as_ref()) {
                return true;
            }
            let before = names.len();
            names.retain(|_, e| e.list == list);
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

    /// What the cache holds for `owner`: one hash lookup per level, a uid
    /// and a generation compared, no API request. Without the fence, any VM
    /// under that name is fresh (resolving then compares the uid).
    fn cached(&self, owner: &OwnerRef) -> Cached {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        let Some(e) =
            (store.get(owner.namespace.as_str())).and_then(|names| names.get(owner.name.as_str()))
        else {
            return Cached::Missing;
        };
        let vm = VmInfo {
            uid: (!e.uid.is_empty()).then(|| e.uid.to_string()),
            run_strategy: e.run_strategy,
            annotated: e.annotated,
        };
        if !self.fence {
            return Cached::Fresh(vm);
        }
        let same_vm = match (&owner.uid, e.uid.is_empty()) {
            (Some(want), false) => *want == *e.uid,
            _ => true,
        };
        let new_enough = owner
            .vm_generation
            .is_none_or(|want| e.generation != TOO_NEW && i64::from(e.generation) >= want);
        match (same_vm, new_enough) {
            (false, _) => Cached::Other,
            (true, false) => Cached::Older(vm),
            (true, true) => Cached::Fresh(vm),
        }
    }
}

/// The watch of one scope (all namespaces, or one): keeps the cache's
/// entries of that scope and says when the cache is live or stale.
struct ScopeWatch {
    cache: Arc<VmCache>,
    index: usize,
    scope: Option<String>,
    /// The current list's number (see the module docs).
    list: u16,
    /// The newest resourceVersion the current list brought.
    listed_version: i64,
    /// How the next watcher lists: `--vm-list-mode`, until `auto` falls
    /// back to pages.
    mode: ListMode,
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
                self.list = self.list.wrapping_add(1);
                self.listed_version = 0;
                tracing::debug!(scope = ?scope, list = self.list, mode = ?self.mode, "VirtualMachine list started");
            }
            Event::InitApply(vm) => {
                self.listed_version = self.listed_version.max(resource_version(&vm));
                if cache.upsert(&vm, self.list) {
                    cache.metrics.vm_cache_objects.inc();
                }
            }
            Event::Apply(vm) => {
                if cache.upsert(&vm, self.list) {
                    cache.metrics.vm_cache_objects.inc();
                }
                cache.applied(resource_version(&vm));
            }
            Event::InitDone => {
                cache.applied(self.listed_version);
                let swept = cache.sweep(scope.as_deref(), self.list);
                let count = cache.len();
                cache.metrics.vm_cache_objects.set(count as i64);
                let stale_for = cache.live(self.index);
                if self.synced {
                    tracing::info!(scope = ?scope, count, swept, stale_for = ?stale_for.unwrap_or_default(), "VirtualMachine cache live again; owners come from the cache");
                } else {
                    tracing::info!(scope = ?scope, count, swept, mode = ?self.mode, "VirtualMachine cache synced");
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
                cache.applied(resource_version(&vm));
            }
        }
    }

    fn config(&mut self) -> watcher::Config {
        self.mode.watcher_config()
    }

    fn failed(&mut self, error: &Failure, repeated: bool) {
        let scope = &self.scope;
        if self.mode == ListMode::Auto {
            match error {
                Failure::Error(e) if list_mode::refuses_streaming(e) => {
                    self.mode = ListMode::FALLBACK;
                    tracing::warn!(error = %e, scope = ?scope, "the API server does not serve streaming lists; listing VirtualMachines in pages from now on");
                }
                Failure::ListCut => {
                    self.mode = ListMode::FALLBACK;
                    tracing::warn!(scope = ?scope, "the API server ended a streaming list of VirtualMachines before its end; listing them in pages from now on");
                }
                _ => {}
            }
        }
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
        owner: &'a OwnerRef,
    ) -> BoxFuture<'a, Result<Option<VmInfo>, LookupError>> {
        let cached = self.cached(owner);
        if self.is_live() {
            let fence = match cached {
                Cached::Fresh(vm) => {
                    self.metrics.lookup("cache");
                    return Box::pin(std::future::ready(Ok(Some(vm))));
                }
                Cached::Older(_) => Some(FenceReason::generation),
                Cached::Other => Some(FenceReason::uid),
                Cached::Missing => None,
            };
            if let Some(reason) = fence {
                self.metrics.fence_read(reason);
                tracing::debug!(namespace = %owner.namespace, name = %owner.name, ?reason, "owner cache behind the VMI: reading the VM from the API");
            }
        }
        Box::pin(async move {
            let (namespace, name) = (owner.namespace.as_str(), owner.name.as_str());
            // A miss: a VM created a moment ago may not have reached the
            // watch yet. A hit while the watch is not live: the VM may have
            // changed since. A hit behind the VMI: see the module docs.
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
                    // The API cannot be read: the last known state.
                    Cached::Fresh(vm) => {
                        self.metrics.lookup("stale_cache");
                        tracing::debug!(%namespace, %name, error = %e, "owner from the stale cache: the API cannot be read");
                        Ok(Some(vm))
                    }
                    Cached::Older(vm) => {
                        self.metrics.lookup("stale_cache");
                        tracing::warn!(%namespace, %name, vm_generation = ?owner.vm_generation, error = %e, "owner from a cache older than the VMI: the API cannot be read");
                        Ok(Some(vm))
                    }
                    Cached::Other => {
                        self.metrics.lookup("error");
                        Err(LookupError(format!(
                            "VirtualMachine {namespace}/{name} is cached only with another uid than the VMI's owner reference (deleted and re-created?) and reading it from the Kubernetes API failed: {e}"
                        )))
                    }
                    Cached::Missing => {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fence's generation fits in what the entry already took: a
    /// cached VM costs 24 bytes plus its name and uid, as before it.
    #[test]
    fn an_entry_stays_24_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }
}
