//! Prometheus metrics, served as text on `--metrics-listen`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub kind: String,
    pub operation: &'static str,
    pub allowed: bool,
    pub mutated: bool,
    pub warned: bool,
}

/// One cause of a denial: which rule (reason at field) said no, and whether
/// it was enforced (`deny`) or turned into a warning by `--mode warn` (`warn`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub endpoint: &'static str,
    pub kind: String,
    pub reason: &'static str,
    /// A field path from the decisions' fixed layouts, never user input.
    pub field: String,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

/// Classes of things that went wrong, for `webhook_errors_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ErrorClass {
    bad_request,
    payload_too_large,
    unsupported_media_type,
    deadline_exceeded,
    overloaded,
    owner_unavailable,
    tls_handshake,
    certificate_reload,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub class: ErrorClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// `cache`, `api`, `not_found`, `error`, `stale_cache` (the cache could
    /// not be trusted, its watch not live or its VM older than the VMI, and
    /// the API could not be read: the cached VM decided)
    pub result: &'static str,
}

/// Why the owner cache's freshness fence read a VM from the API although
/// the cache is live and holds a VM under the owner's name.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FenceReason {
    /// The cached VM's generation is below the VMI's `kubevirt.io/vm-generation`.
    generation,
    /// The cached VM has another uid than the owner reference.
    uid,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FenceLabels {
    pub reason: FenceReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
}

/// Every metric the webhook exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub denial_causes: Family<DenialLabels, Counter>,
    pub latency: Family<EndpointLabels, Histogram>,
    pub errors: Family<ErrorLabels, Counter>,
    pub owner_lookups: Family<LookupLabels, Counter>,
    pub owner_fence_reads: Family<FenceLabels, Counter>,
    pub gate_enabled: Gauge,
    pub gate_stale: Gauge,
    pub cache_synced: Family<CacheLabels, Gauge>,
    pub vm_cache_objects: Gauge,
    pub vm_cache_stale: Gauge,
    pub vm_cache_stale_since: Gauge<f64, AtomicU64>,
    pub vm_cache_resource_version: Gauge,
    pub cert_expiry: Gauge<f64, AtomicU64>,
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubevirt_reboot_webhook");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Admission reviews answered", requests.clone());
        let denial_causes = Family::<DenialLabels, Counter>::default();
        registry.register(
            "denial_causes",
            "Causes of denials (action deny) and of warn-mode would-be denials (action warn)",
            denial_causes.clone(),
        );
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "request_duration_seconds",
            "Time from request body received to response ready",
            latency.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Requests or connections that failed, by class",
            errors.clone(),
        );
        let owner_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "owner_lookups",
            "Owner VirtualMachine lookups by result (cache hit, API read, not found, error)",
            owner_lookups.clone(),
        );
        let owner_fence_reads = Family::<FenceLabels, Counter>::default();
        registry.register(
            "owner_fence_reads",
            "Owner VirtualMachines read from the API because the live cache was behind the VMI: its VM older than the VMI's kubevirt.io/vm-generation (reason generation), or another VM under that name (reason uid)",
            owner_fence_reads.clone(),
        );
        // Both series from the start, so that rate() sees the first one.
        for reason in [FenceReason::generation, FenceReason::uid] {
            let _ = owner_fence_reads.get_or_create(&FenceLabels { reason });
        }
        let gate_enabled = Gauge::default();
        registry.register(
            "feature_gate_enabled",
            "1 when RecreateVMIOnReboot (alias RebootPolicy) is enabled",
            gate_enabled.clone(),
        );
        let gate_stale = Gauge::default();
        registry.register(
            "feature_gate_stale",
            "1 while the KubeVirt resource's watch is not live (failed, backing off or relisting): the gate keeps its last known state",
            gate_stale.clone(),
        );
        let cache_synced = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_synced",
            "1 when the named cache has completed its initial list",
            cache_synced.clone(),
        );
        let vm_cache_objects = Gauge::default();
        registry.register(
            "vm_cache_objects",
            "VirtualMachines held in the owner cache",
            vm_cache_objects.clone(),
        );
        let vm_cache_stale = Gauge::default();
        registry.register(
            "vm_cache_stale",
            "1 while the VirtualMachine watch is not live (failed, backing off or relisting): VMI CREATEs then read owners from the API",
            vm_cache_stale.clone(),
        );
        let vm_cache_stale_since = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "vm_cache_stale_since_timestamp_seconds",
            "When the VirtualMachine cache became stale, as a Unix timestamp; 0 while live",
            vm_cache_stale_since.clone(),
        );
        let vm_cache_resource_version = Gauge::default();
        registry.register(
            "vm_cache_resource_version",
            "resourceVersion (etcd revision) of the newest VirtualMachine change the cache holds: each change applied, or a completed list's newest object; compare with a write's to see how far behind the cache is",
            vm_cache_resource_version.clone(),
        );
        let cert_expiry = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate, as a Unix timestamp",
            cert_expiry.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Admission reviews being processed",
            in_flight.clone(),
        );
        Metrics {
            registry,
            requests,
            denial_causes,
            latency,
            errors,
            owner_lookups,
            owner_fence_reads,
            gate_enabled,
            gate_stale,
            cache_synced,
            vm_cache_objects,
            vm_cache_stale,
            vm_cache_stale_since,
            vm_cache_resource_version,
            cert_expiry,
            in_flight,
        }
    }

    pub fn error(&self, class: ErrorClass) {
        self.errors.get_or_create(&ErrorLabels { class }).inc();
    }

    pub fn lookup(&self, result: &'static str) {
        self.owner_lookups
            .get_or_create(&LookupLabels { result })
            .inc();
    }

    pub fn fence_read(&self, reason: FenceReason) {
        self.owner_fence_reads
            .get_or_create(&FenceLabels { reason })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
