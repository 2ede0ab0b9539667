//! Prometheus metrics of the operators (no per-tenant labels).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Counter,
    duration: Histogram,
    admissions: Family<AdmissionLabels, Counter>,
    shard_share: Gauge<f64, std::sync::atomic::AtomicU64>,
    handovers: Counter,
    handover_duration: Histogram,
    shard_objects: Gauge,
    admission_duration: Family<AdmissionLabels, Histogram>,
    watch_events: Family<WatchLabels, Counter>,
}

/// Which watch an event came from (a resource's plural).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub resource: &'static str,
}

/// Which webhook answered, and how.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: &'static str,
    pub allowed: bool,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("arktos_operators");
        let reconciles = Counter::default();
        let failures = Counter::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register("tenant_reconciles", "Tenant reconciles", reconciles.clone());
        registry.register(
            "tenant_reconcile_failures",
            "Tenant reconciles that failed",
            failures.clone(),
        );
        registry.register(
            "tenant_reconcile_duration_seconds",
            "Time of a tenant reconcile",
            duration.clone(),
        );
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "Admission reviews answered",
            admissions.clone(),
        );
        let admission_duration = Family::<AdmissionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review",
            admission_duration.clone(),
        );
        let shard_share = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "shard_owned_share",
            "Share of the hash space this instance works on (0 to 1)",
            shard_share.clone(),
        );
        let handovers = Counter::default();
        registry.register(
            "shard_handovers",
            "Ranges this instance stopped and handed over",
            handovers.clone(),
        );
        let handover_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "shard_handover_duration_seconds",
            "Time to stop and drain a range being handed over",
            handover_duration.clone(),
        );
        let shard_objects = Gauge::default();
        registry.register(
            "shard_objects",
            "Objects in the ranges this instance works on",
            shard_objects.clone(),
        );
        let watch_events = Family::<WatchLabels, Counter>::default();
        registry.register(
            "watch_events",
            "Objects received from the controllers' watches (listed or changed)",
            watch_events.clone(),
        );
        Arc::new(Self {
            watch_events,
            shard_objects,
            registry,
            reconciles,
            failures,
            duration,
            admissions,
            admission_duration,
            shard_share,
            handovers,
            handover_duration,
        })
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn admitted(&self, webhook: &'static str, allowed: bool, took: Duration) {
        let labels = AdmissionLabels { webhook, allowed };
        self.admissions.get_or_create(&labels).inc();
        self.admission_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn shard_owned(&self, share: f64) {
        self.shard_share.set(share);
    }

    pub fn shard_objects_changed(&self, by: i64) {
        self.shard_objects.inc_by(by);
    }

    pub fn shard_handed_over(&self, took: Duration) {
        self.handovers.inc();
        self.handover_duration.observe(took.as_secs_f64());
    }

    pub fn watch_event(&self, resource: &'static str) {
        self.watch_events
            .get_or_create(&WatchLabels { resource })
            .inc();
    }

    pub fn failure(&self) {
        self.failures.inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
