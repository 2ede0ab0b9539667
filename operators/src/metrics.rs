//! Prometheus metrics of the operators (no per-tenant labels).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Counter,
    duration: Histogram,
    admissions: Family<AdmissionLabels, Counter>,
    admission_duration: Family<AdmissionLabels, Histogram>,
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
        Arc::new(Self {
            registry,
            reconciles,
            failures,
            duration,
            admissions,
            admission_duration,
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

    pub fn failure(&self) {
        self.failures.inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
