//! The tenant controller: for every Tenant, keeps in place what makes it a
//! tenant (the `use` grant for its owners, its namespaces' labels, owner
//! RoleBindings and NetworkPolicies), reports status, and on deletion
//! removes everything it owns before letting the Tenant go.

mod reconcile;
mod written;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arktos_crds::naming::TENANT_LABEL;
use arktos_crds::tenant::{Tenant, desired};
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};

use crate::metrics::Metrics;
use crate::quota;
use crate::quota::departures::Departures;
use crate::quota::ledger::Ledgers;
use crate::sharding::Shard;
use crate::sharding::Stop;
use crate::sharding::log::ReconcileLog;

/// What every reconcile gets.
pub struct Context {
    /// The partition this instance provisions tenants in.
    pub client: kube::Client,
    /// Where the Tenants are (the same cluster as `client` for the root
    /// partition): the Tenant itself, its status and events, the owners'
    /// `use` grant.
    pub root: kube::Client,
    /// Which tenants this instance provisions.
    pub partition: Partition,
    pub log: Arc<ReconcileLog>,
    pub ledgers: Arc<Ledgers>,
    pub departures: Arc<Departures>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub written: Arc<Writes>,
    /// The gateway's address for pods, named by each tenant's `kubernetes`
    /// Service.
    pub tenant_api: Option<std::net::SocketAddr>,
}

/// What the controller writes, tracked so that applies that would change
/// nothing are skipped (see `written`); one per process.
pub struct Writes {
    pub role_bindings: written::Written<RoleBinding>,
    pub policies: written::Written<NetworkPolicy>,
    pub cluster_roles: written::Written<ClusterRole>,
    pub cluster_role_bindings: written::Written<ClusterRoleBinding>,
    pub services: written::Written<Service>,
    pub endpoint_slices: written::Written<EndpointSlice>,
}

/// The tenant an object labelled with `tenancy.arktos.io/tenant` belongs to.
fn owning_tenant<K: Resource>(object: K) -> Option<ObjectRef<Tenant>> {
    object
        .labels()
        .get(TENANT_LABEL)
        .map(|tenant| ObjectRef::new(tenant))
}

/// Which tenants an instance provisions: those whose `spec.partition` is
/// `name` (and, on the root partition, those placed before partitions
/// existed, with none).
#[derive(Clone, Debug)]
pub struct Partition {
    pub name: String,
    pub is_root: bool,
}

impl Partition {
    pub fn holds(&self, tenant: &Tenant) -> bool {
        let placed = tenant.spec.partition.as_str();
        placed == self.name || (placed.is_empty() && self.is_root)
    }
}

/// What the tenant controller runs with.
pub struct Setup {
    /// The partition's cluster.
    pub client: kube::Client,
    /// The root cluster (the Tenants).
    pub root: kube::Client,
    pub partition: Partition,
    /// To build a sharded client for the Tenant watch (the root's).
    pub config: kube::Config,
    pub metrics: Arc<Metrics>,
    pub ledgers: Arc<Ledgers>,
    pub log: Arc<ReconcileLog>,
    pub tenant_api: Option<std::net::SocketAddr>,
}

impl Writes {
    /// Trackers that have seen nothing: for tests.
    #[cfg(test)]
    pub fn unwatched() -> Self {
        Self {
            role_bindings: written::Written::unwatched(),
            policies: written::Written::unwatched(),
            cluster_roles: written::Written::unwatched(),
            cluster_role_bindings: written::Written::unwatched(),
            services: written::Written::unwatched(),
            endpoint_slices: written::Written::unwatched(),
        }
    }

    /// Starts the metadata watches of everything the controller writes
    /// (the owners' grant at the root, the rest in the partition), each
    /// narrowed by `narrow` to the share being worked on; returns the
    /// trackers and the tenants whose grant, bindings or policies changed
    /// or went (to repair them). The trackers fill as the stream is polled.
    fn watch(
        client: &kube::Client,
        root: &kube::Client,
        narrow: &dyn Fn(&str) -> watcher::Config,
        metrics: &Arc<Metrics>,
    ) -> (Self, BoxStream<'static, ObjectRef<Tenant>>) {
        let managed = narrow(&managed_by_us());
        let (role_bindings, rb) = written::Written::watch(client.clone(), managed.clone());
        let (policies, np) = written::Written::watch(client.clone(), managed.clone());
        let (cluster_roles, cr) = written::Written::watch(root.clone(), managed.clone());
        let (cluster_role_bindings, crb) = written::Written::watch(root.clone(), managed.clone());
        let (services, svc) = written::Written::watch(client.clone(), managed.clone());
        let (endpoint_slices, eps) = written::Written::watch(client.clone(), managed);
        let changes = futures::stream::select_all([
            tenants_of(rb, "rolebindings", metrics, true),
            tenants_of(np, "networkpolicies", metrics, true),
            tenants_of(cr, "clusterroles", metrics, true),
            tenants_of(crb, "clusterrolebindings", metrics, true),
            // Tracked to skip applies; a tenant cannot change them (admission).
            tenants_of(svc, "services", metrics, false),
            tenants_of(eps, "endpointslices", metrics, false),
        ]);
        let writes = Self {
            role_bindings,
            policies,
            cluster_roles,
            cluster_role_bindings,
            services,
            endpoint_slices,
        };
        (writes, changes.boxed())
    }

    /// Waits until every tracker has its first list (or `within` passed:
    /// then reconciles apply what they cannot judge, which is safe).
    async fn ready(&self, within: Duration) {
        let all = async {
            let _ = tokio::join!(
                self.role_bindings.ready(),
                self.policies.ready(),
                self.cluster_roles.ready(),
                self.cluster_role_bindings.ready(),
                self.services.ready(),
                self.endpoint_slices.ready(),
            );
        };
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!(
                within_s = within.as_secs(),
                "what the controller wrote is not listed yet; applying regardless"
            );
        }
    }
}

/// The tenants `objects` belong to (all counted as watch events received;
/// none passed on unless `trigger`).
fn tenants_of<K: Resource + Send + 'static>(
    objects: BoxStream<'static, K>,
    resource: &'static str,
    metrics: &Arc<Metrics>,
    trigger: bool,
) -> BoxStream<'static, ObjectRef<Tenant>> {
    let metrics = metrics.clone();
    objects
        .filter_map(move |object| {
            metrics.watch_event(resource);
            futures::future::ready(if trigger { owning_tenant(object) } else { None })
        })
        .boxed()
}

/// What the controller writes carries the managed-by label.
fn managed_by_us() -> String {
    format!("{}={}", desired::MANAGED_BY.0, desired::MANAGED_BY.1)
}

/// The collection the tenant controller list-watches (and shards).
pub const TENANTS: &str = "/apis/tenancy.arktos.io/v1alpha1/tenants";

/// Runs the tenant controller on `shard` (all tenants when `None`) until
/// `stop` resolves, then lets in-flight reconciles finish.
pub async fn run(setup: &Setup, shard: Option<Shard>, stop: Stop) {
    let client = setup.client.clone();
    let root = setup.root.clone();
    let (tenants, tenant_watch): (Api<Tenant>, _) = match &shard {
        Some(shard) => match shard.client(&setup.config, TENANTS) {
            Ok(sharded) => (Api::all(sharded), shard.narrow(watcher::Config::default())),
            Err(err) => {
                tracing::error!(error = %err, "cannot build the sharded client");
                return;
            }
        },
        None => (Api::all(root.clone()), watcher::Config::default()),
    };
    // The tenant's objects are narrowed to the shard like the Tenants.
    let narrow = |labels: &str| match &shard {
        Some(shard) => shard.owned(labels),
        None => watcher::Config::default().labels(labels),
    };
    let (written, written_changes) = Writes::watch(&client, &root, &narrow, &setup.metrics);
    let departures = Arc::<Departures>::default();
    // What the tenant-wide quota counts (namespaces included): a create or
    // delete anywhere in a tenant re-settles its ledger.
    let counted = quota::departures::counted_changes(
        client.clone(),
        narrow(TENANT_LABEL),
        departures.clone(),
        setup.metrics.clone(),
    );
    // The watches run on their own task, so the trackers are listed before
    // the first reconcile asks them (an instance taking over a share then
    // skips what is in place instead of applying it all again).
    // Unbounded: nothing reads it until the trackers are listed, and a
    // bounded queue would stop the very watches that list them.
    let (triggers, triggered) = futures::channel::mpsc::unbounded();
    let forwarding = tokio::spawn(
        futures::stream::select(written_changes, counted)
            .map(Ok)
            .forward(triggers),
    );
    written.ready(Duration::from_secs(5)).await;
    let context = Arc::new(Context {
        written: Arc::new(written),
        client: client.clone(),
        root: root.clone(),
        partition: setup.partition.clone(),
        ledgers: setup.ledgers.clone(),
        departures,
        log: setup.log.clone(),
        recorder: Recorder::new(root.clone(), Reporter::from("arktos-operators")),
        metrics: setup.metrics.clone(),
        tenant_api: setup.tenant_api,
    });
    let controller = Controller::new(tenants, tenant_watch);
    // How many Tenants this controller holds, for the shard metrics.
    let held = Arc::new(AtomicI64::new(0));
    let counting = count_held(controller.store(), setup.metrics.clone(), held.clone());
    controller
        .with_config(controller::Config::default().debounce(Duration::from_millis(200)))
        .graceful_shutdown_on(async move {
            let _ = stop.await;
        })
        .reconcile_on(triggered)
        .run(reconcile::reconcile, error_policy, context)
        .for_each(|outcome| async move {
            if let Err(err) = outcome {
                tracing::debug!(error = %err, "reconcile outcome");
            }
        })
        .await;
    counting.abort();
    forwarding.abort();
    setup
        .metrics
        .shard_objects_changed(-held.load(Ordering::Relaxed));
}

/// Reports, every 2 s, how many Tenants the controller's store holds.
fn count_held(
    store: kube::runtime::reflector::Store<Tenant>,
    metrics: Arc<crate::metrics::Metrics>,
    held: Arc<AtomicI64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = i64::try_from(store.state().len()).unwrap_or(i64::MAX);
            metrics.shard_objects_changed(now - held.swap(now, Ordering::Relaxed));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

fn error_policy(tenant: Arc<Tenant>, error: &reconcile::Error, context: Arc<Context>) -> Action {
    if error.lost_race() {
        tracing::debug!(tenant = %tenant.name_any(), %error, "lost a write race; retrying");
        return Action::requeue(Duration::from_millis(100));
    }
    if error.in_progress() {
        tracing::info!(tenant = %tenant.name_any(), %error, "cleanup under way");
        return Action::requeue(Duration::from_secs(1));
    }
    tracing::warn!(tenant = %tenant.name_any(), %error, "reconcile failed");
    context.metrics.failure();
    Action::requeue(Duration::from_secs(5))
}
