//! The way into the tenant routes: the root decides who may use a tenant
//! (authentication, the `use` check, the Tenant itself), then the routes of
//! the tenant's partition serve the request there. One set of routes per
//! partition (connections, catalog, list copies), made when the partition
//! is first needed or its kubeconfig changes, dropped when its Partition
//! goes; nothing is kept per tenant beyond a short, bounded cache of
//! Tenant objects.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arktos_crds::naming::TenantName;
use arktos_crds::partition::{PartitionSpec, connect};
use arktos_crds::status;
use arktos_crds::tenant::Tenant;
use http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use warp::reply::Response;

use super::list_cache::CachedResource;
use super::path::TenantPath;
use super::{TenantRoutes, tenant_subject};
use crate::authn::UserInfo;
use crate::authz::{Attributes, Authorizer, Authorizers};
use crate::metrics::ListCacheMetrics;
use crate::request::ApiRequest;
use crate::respond;
use crate::storage::Storage;

/// What the routes of every partition are made with.
pub struct Setup {
    /// The root cluster, as arktos-apiserver.
    pub client: kube::Client,
    /// The root cluster's name as a partition.
    pub root_name: String,
    /// Where Partitions' kubeconfig Secrets are.
    pub namespace: String,
    /// The root's authorizers.
    pub authz: Arc<Authorizer>,
    pub cached_lists: Vec<CachedResource>,
    pub metrics: ListCacheMetrics,
    /// This replica's share of the tenants whose objects it copies.
    pub list_share: tokio::sync::watch::Receiver<arktos_crds::sharding::ring::Range>,
}

pub struct PartitionRoutes {
    setup: Setup,
    root: Arc<TenantRoutes>,
    /// The other partitions' routes, by partition name.
    others: RwLock<HashMap<String, Plane>>,
    tenants: Storage,
    partitions: Storage,
    /// Tenant objects, briefly: every request of a tenant needs its
    /// Tenant, and a read of the storage per request doubles the cost.
    known: crate::cache::TtlCache<String, Arc<Tenant>>,
}

/// The routes of one partition and the kubeconfig they were made from.
struct Plane {
    kubeconfig: String,
    routes: Arc<TenantRoutes>,
}

impl PartitionRoutes {
    pub fn new(setup: Setup) -> Self {
        let authz = Authorizers {
            root: setup.authz.clone(),
            partition: setup.authz.clone(),
        };
        let root = TenantRoutes::new(setup.client.clone(), &setup.root_name, authz)
            .with_list_cache(
                &setup.cached_lists,
                setup.metrics.clone(),
                &setup.list_share,
            );
        Self {
            root: Arc::new(root),
            others: RwLock::default(),
            tenants: Storage::new(setup.client.clone()),
            partitions: Storage::of(setup.client.clone(), &crate::rename::PARTITIONS),
            known: crate::cache::TtlCache::new(std::time::Duration::from_secs(2), 10_000),
            setup,
        }
    }

    /// Serves `path` (as the tenant writes it) of tenant `tenant`.
    pub async fn handle(
        &self,
        user: &UserInfo,
        tenant: &str,
        path: &str,
        parsed: Option<TenantPath>,
        request: &ApiRequest,
    ) -> Response {
        self.serve(user, tenant, path, parsed, request)
            .await
            .unwrap_or_else(respond::status)
    }

    async fn serve(
        &self,
        user: &UserInfo,
        tenant: &str,
        path: &str,
        parsed: Option<TenantPath>,
        request: &ApiRequest,
    ) -> Result<Response, Status> {
        let name =
            TenantName::new(tenant).map_err(|_| status::not_found(&tenant_subject(tenant)))?;
        // A tenant's own service accounts use its API by being its.
        if user.service_account_tenant() != Some(tenant) {
            self.setup
                .authz
                .authorize(user, &Attributes::on_tenant("use", "", tenant))
                .await?;
        }
        let tenant_object = self.tenant(tenant).await?;
        if tenant_object.metadata.deletion_timestamp.is_some() && request.method != Method::GET {
            return Err(status::forbidden(
                &tenant_subject(tenant),
                "the tenant is being deleted and accepts no new objects or changes",
            ));
        }
        let routes = self.routes(&tenant_object.spec.partition).await?;
        let served = routes.serve(user, &tenant_object, name, path, parsed, request);
        routes.health().while_up(served).await
    }

    async fn tenant(&self, name: &str) -> Result<Arc<Tenant>, Status> {
        if let Some(tenant) = self.known.get(&name.to_string()) {
            return Ok(tenant);
        }
        let record = self
            .tenants
            .get(name)
            .await?
            .ok_or_else(|| status::not_found(&tenant_subject(name)))?;
        let tenant: Tenant = serde_json::from_value(record)
            .map_err(|e| status::internal(&format!("reading tenant {name}: {e}")))?;
        let tenant = Arc::new(tenant);
        self.known.insert(name.to_string(), tenant.clone());
        Ok(tenant)
    }

    /// The routes of partition `partition` (the root's for a tenant placed
    /// before partitions existed); a partition that cannot be reached now
    /// is a 503 naming it.
    async fn routes(&self, partition: &str) -> Result<Arc<TenantRoutes>, Status> {
        if partition.is_empty() || partition == self.setup.root_name {
            return Ok(self.root.clone());
        }
        if let Some(plane) = self.others.read().expect("not poisoned").get(partition) {
            return Ok(plane.routes.clone());
        }
        let unavailable = |why: String| {
            tracing::warn!(partition, %why, "cannot reach the partition");
            status::partition_unavailable(partition, &why)
        };
        let record = self
            .partitions
            .get(partition)
            .await?
            .ok_or_else(|| unavailable("no such Partition is registered".into()))?;
        let spec: PartitionSpec = serde_json::from_value(record["spec"].clone())
            .map_err(|e| unavailable(format!("its spec: {e}")))?;
        let kubeconfig = connect::kubeconfig_text(
            &self.setup.client,
            &self.setup.namespace,
            &spec.kubeconfig_secret,
        )
        .await
        .map_err(unavailable)?;
        self.offer(partition, kubeconfig).await.map_err(unavailable)
    }

    /// Keeps routes to `partition` made with `kubeconfig`: the ones held
    /// already if it is unchanged, new ones otherwise (a rotated
    /// credential, a moved endpoint).
    pub async fn offer(
        &self,
        partition: &str,
        kubeconfig: String,
    ) -> Result<Arc<TenantRoutes>, String> {
        if partition == self.setup.root_name {
            return Ok(self.root.clone());
        }
        if let Some(plane) = self.others.read().expect("not poisoned").get(partition)
            && plane.kubeconfig == kubeconfig
        {
            return Ok(plane.routes.clone());
        }
        let client = connect::client(&kubeconfig).await?;
        let authz = Authorizers {
            root: self.setup.authz.clone(),
            partition: Arc::new(Authorizer::new(client.clone())),
        };
        let routes = Arc::new(TenantRoutes::new(client, partition, authz).with_list_cache(
            &self.setup.cached_lists,
            self.setup.metrics.clone(),
            &self.setup.list_share,
        ));
        tracing::info!(partition, "routes to the partition made");
        let plane = Plane {
            kubeconfig,
            routes: routes.clone(),
        };
        self.others
            .write()
            .expect("not poisoned")
            .insert(partition.to_string(), plane);
        Ok(routes)
    }

    /// Records what the probe found of `partition`: `None` answers,
    /// `Some(why)` does not (see `health`).
    pub fn found(&self, partition: &str, down: Option<String>) {
        if let Some(plane) = self.others.read().expect("not poisoned").get(partition) {
            plane.routes.health().set(down);
        }
    }

    /// Drops the routes of every partition not in `registered`.
    pub fn retain(&self, registered: &[String]) {
        self.others
            .write()
            .expect("not poisoned")
            .retain(|name, _| {
                let keep = registered.contains(name);
                if !keep {
                    tracing::info!(partition = %name, "routes to the partition dropped");
                }
                keep
            });
    }
}
