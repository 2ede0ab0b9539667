//! Prometheus metrics of arktos-node: CRI calls by method, back end and code.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Backend {
    Vm,
    Containerd,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
    pub backend: Backend,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
    pub backend: Backend,
}

pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    duration: Family<MethodLabels, Histogram>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("arktos_node");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("cri_calls", "CRI calls answered", calls.clone());
        let duration = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 18))
        });
        registry.register(
            "cri_call_duration_seconds",
            "Time to answer a CRI call",
            duration.clone(),
        );
        Self {
            registry,
            calls,
            duration,
        }
    }

    pub fn observe(
        &self,
        method: &'static str,
        backend: Backend,
        code: tonic::Code,
        took: Duration,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                backend,
                code: format!("{code:?}"),
            })
            .inc();
        self.duration
            .get_or_create(&MethodLabels { method, backend })
            .observe(took.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
