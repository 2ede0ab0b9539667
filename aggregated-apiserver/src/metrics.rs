//! Prometheus metrics. Labels are bounded (verb, resource kind, code
//! class): nothing per tenant or per user.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub verb: String,
    pub resource: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    list_cache: ListCacheMetrics,
    tenant_copies: ListCacheMetrics,
}

/// The list cache (`tenant_routes::list_cache`), all resources together.
#[derive(Clone, Debug, Default)]
pub struct ListCacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub objects: Gauge,
    pub bytes: Gauge,
    /// This replica's share of the tenants whose objects it copies (0 to 1).
    pub share: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ListCacheMetrics {
    /// Registers the copy's counters and gauges as `<prefix>_hits`,
    /// `_misses`, `_objects` and `_bytes`.
    fn register(&self, registry: &mut Registry, prefix: &str, reads: &str, copy: &str) {
        registry.register(
            format!("{prefix}_hits"),
            format!("{reads} answered from {copy}"),
            self.hits.clone(),
        );
        registry.register(
            format!("{prefix}_misses"),
            format!("{reads} {copy} could not answer at the versions kube-apiserver named in time (answered the ordinary way)"),
            self.misses.clone(),
        );
        registry.register(
            format!("{prefix}_objects"),
            format!("Objects held by {copy}"),
            self.objects.clone(),
        );
        registry.register(
            format!("{prefix}_bytes"),
            format!("Bytes of object text held by {copy}"),
            self.bytes.clone(),
        );
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("arktos_apiserver");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by verb, resource and HTTP code",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer (to the first byte for watches), by verb and resource",
            latency.clone(),
        );
        let list_cache = ListCacheMetrics::default();
        list_cache.register(&mut registry, "list_cache", "Lists", "the list cache");
        registry.register(
            "list_cache_share",
            "Share of the tenants (of the sharding ring) whose objects this replica copies",
            list_cache.share.clone(),
        );
        let tenant_copies = ListCacheMetrics::default();
        tenant_copies.register(
            &mut registry,
            "tenant_copy",
            "Tenant reads (GET and LIST)",
            "the copy of the Tenants",
        );
        Arc::new(Self {
            registry,
            requests,
            latency,
            list_cache,
            tenant_copies,
        })
    }

    pub fn observe(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        let (verb, resource) = (verb.to_string(), resource.to_string());
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.clone(),
                resource: resource.clone(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { verb, resource })
            .observe(took.as_secs_f64());
    }

    pub fn list_cache(&self) -> ListCacheMetrics {
        self.list_cache.clone()
    }

    pub fn tenant_copies(&self) -> ListCacheMetrics {
        self.tenant_copies.clone()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
