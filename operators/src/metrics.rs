//! Prometheus metrics of the operators (no per-tenant labels).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Counter,
    duration: Histogram,
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
        Arc::new(Self {
            registry,
            reconciles,
            failures,
            duration,
        })
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
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
