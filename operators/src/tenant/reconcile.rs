//! One reconcile of one Tenant.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arktos_crds::naming::{SYSTEM_TENANT, TENANT_LABEL, TenantName};
use arktos_crds::quantity;
use arktos_crds::tenant::{CRD_COUNT_KEY, Tenant, TenantPhase, TenantStatus};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, Event as Finalize};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use arktos_crds::tenant::desired;

use super::Context;
use super::written::{self, Written};

/// Removed last, once everything the tenant owns is gone.
pub const FINALIZER: &str = "tenancy.arktos.io/cleanup";
const MANAGER: &str = "arktos-operators";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[from] Box<finalizer::Error<Error>>),
    /// Cleanup goes on: the finalizer stays until nothing is left. (The
    /// finalizer helper releases the object after any successful cleanup,
    /// so "not yet" has to be an error.)
    #[error("deleting: {remaining} namespaces left")]
    CleanupInProgress { remaining: usize },
}

impl Error {
    /// Whether another writer got there first (a quota charge landed while
    /// the ledger was being settled): retry at once, it is no failure.
    pub fn lost_race(&self) -> bool {
        let conflict = |e: &Error| matches!(e, Error::Kube(kube::Error::Api(s)) if s.code == 409);
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    conflict(e)
                }
                // The finalizer patch tests the list it read: another
                // replica changed it first (409, or 400/422 for a failed
                // JSON-patch test).
                finalizer::Error::AddFinalizer(kube::Error::Api(s))
                | finalizer::Error::RemoveFinalizer(kube::Error::Api(s)) => {
                    matches!(s.code, 400 | 409 | 422)
                }
                _ => false,
            },
            other => conflict(other),
        }
    }

    /// Whether this is cleanup still under way rather than a failure.
    pub fn in_progress(&self) -> bool {
        match self {
            Error::CleanupInProgress { .. } => true,
            Error::Finalizer(inner) => matches!(
                inner.as_ref(),
                finalizer::Error::CleanupFailed(Error::CleanupInProgress { .. })
            ),
            _ => false,
        }
    }
}

pub async fn reconcile(tenant: Arc<Tenant>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let began = crate::sharding::log::now_micros();
    let name = tenant.name_any();
    // The system tenant is the cluster itself: never provisioned, never cleaned up.
    if name == SYSTEM_TENANT {
        return Ok(Action::await_change());
    }
    // Another partition's instances provision it.
    if !context.partition.holds(&tenant) {
        return Ok(Action::await_change());
    }
    let tenants: Api<Tenant> = Api::all(context.root.clone());
    let outcome = finalizer::finalizer(&tenants, FINALIZER, tenant, |event| async {
        match event {
            Finalize::Apply(tenant) => apply(&tenant, &context).await,
            Finalize::Cleanup(tenant) => cleanup(&tenant, &context).await,
        }
    })
    .instrument(tracing::info_span!("reconcile", tenant = %name))
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    context.metrics.reconciled(started.elapsed());
    context
        .log
        .record(&name, began, crate::sharding::log::now_micros());
    outcome
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Storage names of the tenant's namespaces, for RBAC subjects.
fn mapper(tenant: &str) -> impl Fn(&str) -> String + '_ {
    move |namespace: &str| match TenantName::new(tenant).map(|t| t.storage_namespace(namespace)) {
        Ok(Ok(storage)) => storage.as_str().to_string(),
        _ => format!("{tenant}--{namespace}"),
    }
}

async fn tenant_namespaces(client: &kube::Client, tenant: &str) -> Result<Vec<Namespace>, Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let list = namespaces
        .list(&ListParams::default().labels(&format!("{TENANT_LABEL}={tenant}")))
        .await?;
    let prefix = format!("{tenant}--");
    Ok(list
        .items
        .into_iter()
        .filter(|ns| ns.name_any().starts_with(&prefix))
        .collect())
}

async fn apply(tenant: &Tenant, context: &Context) -> Result<Action, Error> {
    let client = &context.client;
    let name = tenant.name_any();
    tracing::debug!(tenant = %name, "applying");
    let map = mapper(&name);
    let params = apply_params();
    let role = desired::owner_role(&name);
    let writes = &context.written;
    let root = &context.root;
    apply_once(&Api::all(root.clone()), &writes.cluster_roles, &role).await?;
    let binding = desired::owner_role_binding(tenant, &map);
    apply_once(
        &Api::all(root.clone()),
        &writes.cluster_role_bindings,
        &binding,
    )
    .await?;

    let labels = desired::namespace_labels(tenant);
    let mut namespaces = tenant_namespaces(client, &name).await?;
    if ensure_default_namespaces(client, &name, &namespaces, &labels).await? {
        namespaces = tenant_namespaces(client, &name).await?;
    }
    for namespace in &namespaces {
        let ns_name = namespace.name_any();
        if namespace.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let current = namespace.labels();
        if labels.iter().any(|(k, v)| current.get(k) != Some(v)) {
            let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name, "labels": labels}});
            Api::<Namespace>::all(client.clone())
                .patch(&ns_name, &params, &Patch::Apply(&patch))
                .await?;
        }
        let owners = desired::owners_binding(tenant, &ns_name, &map);
        apply_once(
            &Api::namespaced(client.clone(), &ns_name),
            &writes.role_bindings,
            &owners,
        )
        .await?;
        let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns_name);
        if tenant.spec.network_isolation {
            let policy = desired::isolation_policy(&name, &ns_name);
            apply_once(&policies, &writes.policies, &policy).await?;
        } else if policies.get_opt(desired::ISOLATION_POLICY).await?.is_some() {
            policies
                .delete(desired::ISOLATION_POLICY, &DeleteParams::default())
                .await?;
        }
    }
    let live: Vec<String> = namespaces
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .map(|ns| ns.name_any())
        .collect();
    keep_api_service(&name, context, &live).await;
    let count = live.len();
    let counted = live
        .iter()
        .filter(|ns| !arktos_crds::naming::is_default_storage_namespace(ns))
        .count();
    let used = settle_quota(tenant, context, counted).await?;
    write_status(
        tenant,
        context,
        TenantPhase::Active,
        count,
        used,
        "Provisioned",
        "the tenant's access, namespaces and policies are in place",
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The tenant's `default/kubernetes` Service and its endpoint, the
/// gateway, when pods can reach one. A failure (the tenant's Service quota
/// full, say) is reported and does not hold up the rest of the tenant.
async fn keep_api_service(tenant: &str, context: &Context, live: &[String]) {
    let Some(gateway) = context.tenant_api else {
        return;
    };
    let Ok(namespace) = TenantName::new(tenant).and_then(|t| t.storage_namespace("default")) else {
        return;
    };
    let namespace = namespace.as_str();
    if !live.iter().any(|ns| ns == namespace) {
        return;
    }
    let client = &context.client;
    let written = &context.written;
    let service = desired::api_service(tenant, namespace, gateway);
    let slice = desired::api_endpoints(tenant, namespace, gateway);
    let kept = async {
        apply_once(
            &Api::namespaced(client.clone(), namespace),
            &written.services,
            &service,
        )
        .await?;
        apply_once(
            &Api::namespaced(client.clone(), namespace),
            &written.endpoint_slices,
            &slice,
        )
        .await
    };
    if let Err(err) = kept.await {
        tracing::warn!(tenant, error = %err, "cannot keep the tenant's kubernetes Service");
    }
}

/// Server-side applies `desired` (stamped with the hash of its content)
/// unless it is in place already: see `written`.
async fn apply_once<K>(api: &Api<K>, written: &Written<K>, desired: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let mut desired = desired.clone();
    written::stamp(&mut desired);
    if written.in_place(&desired, MANAGER) {
        return Ok(());
    }
    api.patch(
        &desired.name_any(),
        &apply_params(),
        &Patch::Apply(&desired),
    )
    .await?;
    Ok(())
}

/// Creates the tenant's default namespaces that are missing (Arktos gives
/// every tenant `default`, `kube-system` and `kube-public`); true when it
/// created any. One being deleted is left to go; the next reconcile
/// brings it back.
async fn ensure_default_namespaces(
    client: &kube::Client,
    tenant: &str,
    existing: &[Namespace],
    labels: &BTreeMap<String, String>,
) -> Result<bool, Error> {
    let Ok(tenant_name) = TenantName::new(tenant) else {
        return Ok(false);
    };
    let api: Api<Namespace> = Api::all(client.clone());
    let mut created = false;
    for default in arktos_crds::naming::DEFAULT_NAMESPACES {
        let Ok(storage) = tenant_name.storage_namespace(default) else {
            continue;
        };
        if existing.iter().any(|ns| ns.name_any() == storage.as_str()) {
            continue;
        }
        let patch = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": storage.as_str(), "labels": labels}});
        api.patch(storage.as_str(), &apply_params(), &Patch::Apply(&patch))
            .await?;
        tracing::info!(tenant, namespace = default, "created a default namespace");
        created = true;
    }
    Ok(created)
}

async fn cleanup(tenant: &Tenant, context: &Context) -> Result<Action, Error> {
    let client = &context.client;
    let name = tenant.name_any();
    let namespaces = tenant_namespaces(client, &name).await?;
    tracing::info!(tenant = %name, namespaces = namespaces.len(), "cleaning up");
    if !namespaces.is_empty() {
        let api: Api<Namespace> = Api::all(client.clone());
        for namespace in namespaces
            .iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        {
            api.delete(&namespace.name_any(), &DeleteParams::background())
                .await?;
        }
        let message = format!("deleting the tenant: {} namespaces left", namespaces.len());
        let used = tenant.status.clone().unwrap_or_default().used;
        write_status(
            tenant,
            context,
            TenantPhase::Terminating,
            namespaces.len(),
            used,
            "Deleting",
            &message,
        )
        .await?;
        return Err(Error::CleanupInProgress {
            remaining: namespaces.len(),
        });
    }
    // The owners' grant (at the root), the tenant's own ClusterRoles,
    // ClusterRoleBindings and CustomResourceDefinitions (in the partition)
    // all carry the tenant's label.
    let labelled = ListParams::default().labels(&format!("{TENANT_LABEL}={name}"));
    let crds = Api::<CustomResourceDefinition>::all(client.clone())
        .delete_collection(&DeleteParams::default(), &labelled)
        .await
        .map(|_| ());
    let mut results = vec![crds];
    let clusters = if context.partition.is_root {
        vec![client]
    } else {
        vec![client, &context.root]
    };
    for cluster in clusters {
        let roles = Api::<ClusterRole>::all(cluster.clone())
            .delete_collection(&DeleteParams::default(), &labelled)
            .await
            .map(|_| ());
        let bindings = Api::<ClusterRoleBinding>::all(cluster.clone())
            .delete_collection(&DeleteParams::default(), &labelled)
            .await
            .map(|_| ());
        results.extend([bindings, roles]);
    }
    for result in results {
        if !gone(&result)
            && let Err(err) = result
        {
            return Err(err.into());
        }
    }
    tracing::info!(tenant = %name, "removed the owner grant and the tenant's ClusterRoles and bindings; releasing the tenant");
    publish(
        tenant,
        context,
        "Deleted",
        "everything the tenant owned is gone",
    )
    .await;
    Ok(Action::await_change())
}

/// Deleted now, or not there to begin with.
fn gone(result: &Result<(), kube::Error>) -> bool {
    match result {
        Ok(()) => true,
        Err(kube::Error::Api(status)) => status.code == 404,
        Err(_) => false,
    }
}

/// Settles the tenant's quota ledger with what is stored and returns the
/// usage of every quota key (and the namespace count, quota or not).
async fn settle_quota(
    tenant: &Tenant,
    context: &Context,
    namespaces: usize,
) -> Result<BTreeMap<String, Quantity>, Error> {
    let name = tenant.name_any();
    let hard = tenant
        .spec
        .quota
        .as_ref()
        .map(|q| q.hard.clone())
        .unwrap_or_default();
    let Ok(tenant_name) = TenantName::new(&name) else {
        return Ok(BTreeMap::new());
    };
    // No quota now and none reported before: there is no ledger to settle.
    let reported = tenant.status.as_ref().map(|s| &s.used);
    if hard.is_empty() && reported.is_none_or(|used| used.keys().all(|k| k == "count/namespaces")) {
        return Ok(BTreeMap::from([(
            "count/namespaces".to_string(),
            Quantity(namespaces.to_string()),
        )]));
    }
    let usage = context
        .ledgers
        .settle(&tenant_name, &hard, &context.departures)
        .await?;
    let mut used: BTreeMap<String, Quantity> = hard
        .keys()
        .map(|key| {
            let amount = usage.get(key).copied().unwrap_or(0);
            (key.clone(), Quantity(quantity::from_milli(amount)))
        })
        .collect();
    used.entry("count/namespaces".into())
        .or_insert_with(|| Quantity(namespaces.to_string()));
    if hard.contains_key(CRD_COUNT_KEY) {
        // The tenant's own CRDs, which arktos-apiserver counts on create.
        let labelled = ListParams::default().labels(&format!("{TENANT_LABEL}={name}"));
        let crds = Api::<CustomResourceDefinition>::all(context.client.clone())
            .list_metadata(&labelled)
            .await?;
        used.insert(CRD_COUNT_KEY.into(), Quantity(crds.items.len().to_string()));
    }
    Ok(used)
}

async fn write_status(
    tenant: &Tenant,
    context: &Context,
    phase: TenantPhase,
    namespaces: usize,
    used: BTreeMap<String, Quantity>,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let current = tenant.status.clone().unwrap_or_default();
    let count = u32::try_from(namespaces).unwrap_or(u32::MAX);
    let ready = if phase == TenantPhase::Active {
        "True"
    } else {
        "False"
    };
    let unchanged = current.phase == Some(phase)
        && current.namespaces == Some(count)
        && current.used == used
        && current
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ready && c.message == message);
    if unchanged {
        return Ok(());
    }
    let transition = current
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == ready)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    let status = TenantStatus {
        phase: Some(phase),
        namespaces: Some(count),
        used,
        partition: None,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: transition,
            observed_generation: tenant.metadata.generation,
        }],
    };
    Api::<Tenant>::all(context.root.clone())
        .patch_status(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    publish(tenant, context, reason, message).await;
    Ok(())
}

/// An Event on the Tenant for each change the controller makes.
async fn publish(tenant: &Tenant, context: &Context, reason: &str, note: &str) {
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = context
        .recorder
        .publish(&event, &tenant.object_ref(&()))
        .await
    {
        tracing::debug!(error = %err, "cannot publish an event");
    }
}

#[cfg(test)]
mod tests;
