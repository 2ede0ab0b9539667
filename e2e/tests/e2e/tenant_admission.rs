//! Admission and the operators under stress (docs/operators.md): what tenants may
//! not do is refused with a clear message, the tenant-wide quota holds
//! under concurrent creates on two webhook replicas, a big tenant is
//! deleted with progress, and killed operators converge again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use arktos_e2e::cluster::LocalCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use libtest_mimic::Trial;
use serde_json::json;

use crate::support::{TenantOwner, eventually, restricted_pod};
use crate::{Ctx, disruptive_trial, long_trial, trial};

pub const NAMES: &[&str] = &[
    "tenant_admission_refuses_pods_beyond_baseline_and_host_access",
    "tenant_quota_holds_under_concurrent_creates",
    "tenant_deletion_removes_namespaces_and_objects_with_progress",
    "tenant_operators_converge_after_being_killed",
    "tenant_pods_may_not_pick_their_node",
    "tenant_admission_refuses_services_that_reach_outside",
    "tenant_admission_refuses_escalation_and_keeps_the_operators_objects",
    "tenant_admission_keeps_pod_security_and_tenant_labels",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![
        trial(ctx, NAMES[0], refuses_privileged_pods),
        long_trial(
            ctx,
            NAMES[1],
            Duration::from_secs(900),
            quota_holds_under_concurrent_creates,
        ),
        trial(ctx, NAMES[2], deletion_removes_everything_with_progress),
        disruptive_trial(ctx, NAMES[3], operators_converge_after_being_killed),
        trial(ctx, NAMES[4], pods_may_not_pick_their_node),
        trial(ctx, NAMES[5], refuses_outside_services),
        trial(ctx, NAMES[6], refuses_escalation_and_keeps_kept_objects),
        trial(ctx, NAMES[7], keeps_security_and_tenant_labels),
    ]
}

/// The API error of a refused request; fails if it was not refused.
fn refused<T>(what: &str, outcome: Result<T, kube::Error>) -> anyhow::Result<(u16, String)> {
    match outcome {
        Ok(_) => bail!("{what}: accepted, but must be refused"),
        Err(kube::Error::Api(status)) => {
            eprintln!("  refused {what}: {} {}", status.code, status.message);
            Ok((status.code, status.message.clone()))
        }
        Err(other) => bail!("{what}: failed without a Status: {other}"),
    }
}

/// Refused with 403 and a message that says why (one of `needles`: RBAC
/// or Pod Security may refuse before our admission does).
fn forbidden<T>(
    what: &str,
    outcome: Result<T, kube::Error>,
    needles: &[&str],
) -> anyhow::Result<()> {
    let (code, message) = refused(what, outcome)?;
    ensure!(code == 403, "{what}: expected 403, got {code}: {message}");
    ensure!(
        needles.iter().any(|n| message.contains(n)),
        "{what}: the message says none of {needles:?}: {message}"
    );
    Ok(())
}

/// A tenant owner's pods and workloads naming a node are refused, naming
/// the field, unless the Tenant allows node targeting.
async fn pods_may_not_pick_their_node(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let owner = TenantOwner::create(&ctx, "nt", json!({})).await?;
    owner.namespace("web").await?;
    let pods: Api<Pod> = Api::namespaced(owner.client.clone(), "web");
    let hostname = |op: &str| json!({"key": "kubernetes.io/hostname", "operator": op, "values": ["arktos-node-0"]});
    let cases = [
        (
            "spec.nodeName",
            json!({"spec": {"nodeName": "arktos-node-0"}}),
        ),
        (
            "spec.nodeSelector[kubernetes.io/hostname]",
            json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "arktos-node-0"}}}),
        ),
        (
            "nodeSelectorTerms[0]",
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [hostname("In")]}]}}}}}),
        ),
        (
            "nodeSelectorTerms[0]",
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["arktos-node-0"]}]}]}}}}}),
        ),
        (
            "preferredDuringSchedulingIgnoredDuringExecution[0]",
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
            [{"weight": 1, "preference": {"matchExpressions": [hostname("NotIn")]}}]}}}}),
        ),
    ];
    for (field, patch) in &cases {
        let pod = pod_with("targeted", patch.clone())?;
        forbidden(
            field,
            pods.create(&PostParams::default(), &pod).await,
            &[field],
        )?;
    }
    // Through a workload too: its pods would be created by a controller.
    let deployments: Api<Deployment> = Api::namespaced(owner.client.clone(), "web");
    let template = pod_with(
        "t",
        json!({"metadata": {"labels": {"app": "t"}}, "spec": {"nodeName": "arktos-node-0"}}),
    )?;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "targeted"},
        "spec": {"selector": {"matchLabels": {"app": "t"}}, "template": template},
    }))?;
    forbidden(
        "a Deployment whose pods name a node",
        deployments
            .create(&PostParams::default(), &deployment)
            .await,
        &["spec.template.spec.nodeName"],
    )?;
    ensure!(pods.list(&ListParams::default()).await?.items.is_empty());
    // Allowed once the platform team says so.
    Api::<arktos_crds::Tenant>::all(owner.admin.clone())
        .patch(
            &owner.tenant,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeTargeting": true}})),
        )
        .await?;
    let pod = pod_with("targeted", cases[0].1.clone())?;
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(
        "node targeting allowed",
        Duration::from_secs(30),
        || async { Ok(pods.create(&dry_run, &pod).await.is_ok()) },
    )
    .await?;
    Ok(())
}

fn pod_with(name: &str, patch: serde_json::Value) -> anyhow::Result<Pod> {
    let mut pod = serde_json::to_value(restricted_pod(name))?;
    json_merge(&mut pod, &patch);
    Ok(serde_json::from_value(pod)?)
}

fn json_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(target), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                json_merge(target.entry(key.clone()).or_insert(json!(null)), value);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// An owner of a tenant at Pod Security baseline (so that the refusals
/// Pod Security would not make, such as privilege escalation, are ours),
/// with namespace `web`.
async fn baseline_owner(ctx: &Ctx) -> anyhow::Result<TenantOwner> {
    let owner = TenantOwner::create(ctx, "adm", json!({"podSecurity": "baseline"})).await?;
    owner.namespace("web").await?;
    Ok(owner)
}

async fn refuses_privileged_pods(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let owner = baseline_owner(&ctx).await?;
    let pods: Api<Pod> = Api::namespaced(owner.client.clone(), "web");
    let post = PostParams::default();
    let container = |security: serde_json::Value| json!({"spec": {"containers": [{"name": "c", "image": "registry.invalid/app:1", "securityContext": security}]}});
    let cases = [
        (
            "a privileged pod",
            container(json!({"privileged": true})),
            "privileged",
        ),
        (
            "hostNetwork",
            json!({"spec": {"hostNetwork": true}}),
            "host",
        ),
        ("hostPID", json!({"spec": {"hostPID": true}}), "host"),
        ("hostIPC", json!({"spec": {"hostIPC": true}}), "host"),
        (
            "a hostPath volume",
            json!({"spec": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}),
            "hostPath",
        ),
        (
            "an added capability",
            container(json!({"capabilities": {"add": ["SYS_ADMIN"]}})),
            "capabilit",
        ),
        (
            "allowPrivilegeEscalation: true",
            container(json!({"allowPrivilegeEscalation": true})),
            "privilege escalation is not allowed",
        ),
    ];
    for (i, (what, patch, needle)) in cases.iter().enumerate() {
        let pod = pod_with(&format!("bad-{i}"), patch.clone())?;
        forbidden(what, pods.create(&post, &pod).await, &[needle])?;
    }
    Ok(())
}

async fn refuses_outside_services(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let owner = baseline_owner(&ctx).await?;
    let post = PostParams::default();
    let services: Api<Service> = Api::namespaced(owner.client.clone(), "web");
    let node_port: Service = serde_json::from_value(json!({
        "metadata": {"name": "np"},
        "spec": {"type": "NodePort", "ports": [{"port": 80}]},
    }))?;
    forbidden(
        "a NodePort Service",
        services.create(&post, &node_port).await,
        &["NodePort Services are not allowed"],
    )?;
    let external: Service = serde_json::from_value(json!({
        "metadata": {"name": "ext"},
        "spec": {"ports": [{"port": 80}], "externalIPs": ["192.0.2.10"]},
    }))?;
    forbidden(
        "externalIPs",
        services.create(&post, &external).await,
        &["external IPs"],
    )?;
    Ok(())
}

async fn refuses_escalation_and_keeps_kept_objects(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let owner = baseline_owner(&ctx).await?;
    let post = PostParams::default();
    let bindings: Api<RoleBinding> = Api::namespaced(owner.client.clone(), "web");
    let to_cluster_admin: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "escalate"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": owner.user}],
    }))?;
    // In a tenant, "cluster-admin" names the tenant's own ClusterRole of
    // that name (docs/tenant-routes.md), which it does not have.
    let (code, message) = refused(
        "a RoleBinding to cluster-admin",
        bindings.create(&post, &to_cluster_admin).await,
    )?;
    ensure!(
        code == 404 && message.contains("\"cluster-admin\" not found"),
        "a RoleBinding to cluster-admin: {code} {message}"
    );

    forbidden(
        "deleting the owners' RoleBinding the operator keeps",
        bindings
            .delete("arktos-tenant-owners", &DeleteParams::default())
            .await,
        &["kept by arktos-operators"],
    )?;

    let policies: Api<NetworkPolicy> = Api::namespaced(owner.client.clone(), "web");
    eventually("the isolation policy", Duration::from_secs(30), || {
        let policies = policies.clone();
        async move { Ok(policies.get_opt("arktos-tenant-isolation").await?.is_some()) }
    })
    .await?;
    forbidden(
        "deleting the NetworkPolicy the operator keeps",
        policies
            .delete("arktos-tenant-isolation", &DeleteParams::default())
            .await,
        &["kept by arktos-operators"],
    )?;

    // A ResourceQuota the platform team set: the owner may read it, not edit it.
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "platform"}, "spec": {"hard": {"pods": "50"}},
    }))?;
    Api::<ResourceQuota>::namespaced(owner.admin.clone(), &owner.storage("web"))
        .create(&post, &quota)
        .await?;
    let quotas: Api<ResourceQuota> = Api::namespaced(owner.client.clone(), "web");
    ensure!(
        quotas.get("platform").await.is_ok(),
        "the owner reads quotas"
    );
    forbidden(
        "editing a ResourceQuota",
        quotas
            .patch(
                "platform",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"hard": {"pods": "5000"}}})),
            )
            .await,
        &["resourcequotas"],
    )?;
    Ok(())
}

async fn keeps_security_and_tenant_labels(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let owner = baseline_owner(&ctx).await?;
    let post = PostParams::default();
    // The Pod Security label: tenants cannot patch their namespaces through
    // the route at all, and admission refuses it to anyone but the platform
    // even when RBAC would allow it, on kube-apiserver directly.
    let namespaces: Api<Namespace> = Api::all(owner.client.clone());
    let weaker =
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}});
    refused(
        "editing the Pod Security label through the tenant route",
        namespaces
            .patch("web", &PatchParams::default(), &Patch::Merge(&weaker))
            .await,
    )?;
    let direct = namespace_editor(&ctx, &owner).await?;
    forbidden(
        "editing the Pod Security label on kube-apiserver directly",
        Api::<Namespace>::all(direct)
            .patch(
                &owner.storage("web"),
                &PatchParams::default(),
                &Patch::Merge(&weaker),
            )
            .await,
        &["pod-security.kubernetes.io/enforce"],
    )?;

    // The tenant label is stamped on what controllers create too, and
    // cannot be changed.
    let deployments: Api<Deployment> = Api::namespaced(owner.client.clone(), "web");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": {"containers": [{"name": "c", "image": "registry.invalid/app:1"}]}}},
    }))?;
    deployments.create(&post, &deployment).await?;
    let all_pods: Api<Pod> = Api::all(owner.client.clone());
    eventually(
        "the Deployment's pods in the tenant-wide list",
        Duration::from_secs(20),
        || {
            let all_pods = all_pods.clone();
            async move {
                let listed = all_pods
                    .list(&ListParams::default().labels("app=app"))
                    .await?;
                Ok(listed.items.len() == 2)
            }
        },
    )
    .await?;
    let configmaps: Api<ConfigMap> = Api::namespaced(owner.client.clone(), "web");
    let config: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"a": "1"}}))?;
    configmaps.create(&post, &config).await?;
    // Through the route the tenant label is the route's to set: a patch
    // naming another tenant changes nothing.
    let relabel = json!({"metadata": {"labels": {"tenancy.arktos.io/tenant": "other"}}});
    let _ = configmaps
        .patch("settings", &PatchParams::default(), &Patch::Merge(&relabel))
        .await;
    let label = configmaps
        .get("settings")
        .await?
        .labels()
        .get("tenancy.arktos.io/tenant")
        .cloned();
    ensure!(
        label.as_deref() == Some(owner.tenant.as_str()),
        "the tenant label changed through the route: {label:?}"
    );
    // On kube-apiserver directly, where the owner is admin of the storage
    // namespace, admission refuses both changing and removing it.
    let (pki, admin_url, _) = crate::support::local_parts(&ctx)?;
    let direct = arktos_e2e::cluster::kubeconfig::client_with(
        &admin_url,
        &pki.ca_cert(),
        &pki.cert(&owner.user),
        &pki.key(&owner.user),
        &[],
    )
    .await?;
    let direct_configmaps: Api<ConfigMap> = Api::namespaced(direct, &owner.storage("web"));
    forbidden(
        "changing the tenant label on kube-apiserver directly",
        direct_configmaps
            .patch("settings", &PatchParams::default(), &Patch::Merge(&relabel))
            .await,
        &["tenancy.arktos.io/tenant]: may not be changed or removed"],
    )?;
    forbidden(
        "removing the tenant label on kube-apiserver directly",
        direct_configmaps
            .patch(
                "settings",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"tenancy.arktos.io/tenant": null}}})),
            )
            .await,
        &["tenancy.arktos.io/tenant]: may not be changed or removed"],
    )?;
    Ok(())
}

/// A user who may patch namespaces cluster-wide on kube-apiserver (as a
/// careless RBAC grant would allow), to show admission holds without the
/// tenant route.
async fn namespace_editor(ctx: &Ctx, owner: &TenantOwner) -> anyhow::Result<kube::Client> {
    let (pki, admin_url, _) = crate::support::local_parts(ctx)?;
    let user = format!("{}-ns-editor", owner.tenant);
    crate::support::issue_user(&pki, &user)?;
    let apply = PatchParams::apply("e2e").force();
    let role: ClusterRole = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": user},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "patch"]}],
    }))?;
    Api::<ClusterRole>::all(owner.admin.clone())
        .patch(&user, &apply, &Patch::Apply(&role))
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))?;
    Api::<ClusterRoleBinding>::all(owner.admin.clone())
        .patch(&user, &apply, &Patch::Apply(&binding))
        .await?;
    Ok(arktos_e2e::cluster::kubeconfig::client_with(
        &admin_url,
        &pki.ca_cert(),
        &pki.cert(&user),
        &pki.key(&user),
        &[],
    )
    .await?)
}

/// Creates `count` pods at once, spread over `namespaces`; returns the
/// (namespace, name) of those created and how many were refused for
/// quota. Anything else fails.
async fn burst<'a>(
    owner: &TenantOwner,
    namespaces: &[&'a str],
    prefix: &str,
    count: usize,
) -> anyhow::Result<(Vec<(&'a str, String)>, usize)> {
    let creates = (0..count).map(|i| {
        let namespace = namespaces[i % namespaces.len()];
        let api: Api<Pod> = Api::namespaced(owner.client.clone(), namespace);
        let name = format!("{prefix}-{i}");
        let pod = restricted_pod(&name);
        async move {
            api.create(&PostParams::default(), &pod)
                .await
                .map(|_| (namespace, name))
        }
    });
    let (mut created, mut over_quota) = (Vec::new(), 0);
    for outcome in futures::future::join_all(creates).await {
        match outcome {
            Ok(pod) => created.push(pod),
            Err(kube::Error::Api(status))
                if status.code == 403 && status.message.contains("exceeded quota") =>
            {
                over_quota += 1
            }
            Err(other) => bail!("a create failed for another reason than quota: {other}"),
        }
    }
    Ok((created, over_quota))
}

async fn wait_for_used(owner: &TenantOwner, key: &str, value: &str) -> anyhow::Result<Duration> {
    let waited = eventually(
        &format!("tenant {} status.used[{key}] = {value}", owner.tenant),
        Duration::from_secs(30),
        || async { Ok(owner.used(key).await?.as_deref() == Some(value)) },
    )
    .await;
    let Err(err) = waited else {
        return waited;
    };
    // Say what the ledger holds: which charges did not go.
    let ledger = Api::<arktos_crds::tenant::QuotaLedger>::all(owner.admin.clone())
        .get_opt(&owner.tenant)
        .await?;
    let pods = Api::<Pod>::all(owner.client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .len();
    Err(err).with_context(|| {
        format!(
            "{pods} pods listed; ledger: {}",
            serde_json::to_string(&ledger.map(|l| l.spec)).unwrap_or_default()
        )
    })
}

/// Quota reviews each operators replica answered (from its /metrics).
async fn quota_reviews_per_replica(ctx: &Ctx) -> anyhow::Result<Vec<u64>> {
    let ports: Vec<u16> = {
        let local = ctx.cluster.local().context("needs the local cluster")?;
        (0..arktos_e2e::cluster::OPERATOR_REPLICAS)
            .map(|r| local.operators_port(r))
            .collect()
    };
    let mut counts = Vec::new();
    for port in ports {
        let total = arktos_e2e::observe::metric(
            port,
            "arktos_operators_admission_reviews_total",
            "webhook=\"quota\"",
        )
        .await?;
        counts.push(total as u64);
    }
    Ok(counts)
}

async fn quota_holds_under_concurrent_creates(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let owner = TenantOwner::create(
        &ctx,
        "burst",
        json!({"quota": {"hard": {"pods": "20", "count/namespaces": "4"}}}),
    )
    .await?;
    let namespaces = ["a", "b", "c", "d"];
    for ns in namespaces {
        owner.namespace(ns).await?;
    }
    let reviews_before = quota_reviews_per_replica(&ctx).await?;
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for round in 1..=10 {
        let started = Instant::now();
        let (created, refused) = burst(&owner, &namespaces, &format!("r{round}"), 60).await?;
        let burst_took = started.elapsed();
        ensure!(
            created.len() == 20 && refused == 40,
            "round {round}: {} created and {refused} refused of 60 (limit 20)",
            created.len()
        );
        wait_for_used(&owner, "pods", "20").await?;
        // Free 5: exactly 5 more fit.
        for (namespace, name) in &created[..5] {
            Api::<Pod>::namespaced(owner.client.clone(), namespace)
                .delete(name, &force)
                .await?;
        }
        let released = wait_for_used(&owner, "pods", "15").await?;
        let (again, refused_again) = burst(&owner, &namespaces, &format!("s{round}"), 60).await?;
        ensure!(
            again.len() == 5 && refused_again == 55,
            "round {round}: after freeing 5, {} created and {refused_again} refused",
            again.len()
        );
        eprintln!(
            "  round {round}: 60 concurrent creates -> 20 created, 40 refused in {} ms; 5 released after {} ms; then 5 of 60 created",
            burst_took.as_millis(),
            released.as_millis()
        );
        // Empty the tenant for the next round.
        for ns in namespaces {
            Api::<Pod>::namespaced(owner.client.clone(), ns)
                .delete_collection(&force, &ListParams::default())
                .await?;
        }
        wait_for_used(&owner, "pods", "0").await?;
    }
    let reviews_after = quota_reviews_per_replica(&ctx).await?;
    let served: Vec<u64> = reviews_after
        .iter()
        .zip(&reviews_before)
        .map(|(after, before)| after - before)
        .collect();
    eprintln!("  quota reviews answered per webhook replica: {served:?}");
    ensure!(
        served.iter().all(|n| *n > 0),
        "every webhook replica must have answered quota reviews: {served:?}"
    );
    Ok(())
}

async fn deletion_removes_everything_with_progress(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let owner = TenantOwner::create(&ctx, "del", json!({})).await?;
    let namespaces = ["n1", "n2", "n3", "n4", "n5"];
    for ns in namespaces {
        owner.namespace(ns).await?;
    }
    // 100 objects: in each namespace 10 ConfigMaps, 5 Services, 5 pods.
    let post = PostParams::default();
    let mut creates = Vec::new();
    for ns in namespaces {
        let configmaps: Api<ConfigMap> = Api::namespaced(owner.client.clone(), ns);
        let services: Api<Service> = Api::namespaced(owner.client.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(owner.client.clone(), ns);
        for i in 0..10 {
            let configmap: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("cm{i}")}}))?;
            let api = configmaps.clone();
            let post = post.clone();
            creates.push(tokio::spawn(async move {
                api.create(&post, &configmap).await.map(|_| ())
            }));
        }
        for i in 0..5 {
            let service: Service = serde_json::from_value(
                json!({"metadata": {"name": format!("svc{i}")}, "spec": {"ports": [{"port": 80}]}}),
            )?;
            let (services, pods, post) = (services.clone(), pods.clone(), post.clone());
            let pod = restricted_pod(&format!("pod{i}"));
            creates.push(tokio::spawn(async move {
                services.create(&post, &service).await?;
                pods.create(&post, &pod).await.map(|_| ())
            }));
        }
    }
    for create in creates {
        create.await??;
    }
    let labelled =
        ListParams::default().labels(&format!("tenancy.arktos.io/tenant={}", owner.tenant));
    let count_objects = |admin: kube::Client, labelled: ListParams| async move {
        let configmaps = Api::<ConfigMap>::all(admin.clone())
            .list(&labelled)
            .await?
            .items
            .len();
        let services = Api::<Service>::all(admin.clone())
            .list(&labelled)
            .await?
            .items
            .len();
        let pods = Api::<Pod>::all(admin).list(&labelled).await?.items.len();
        anyhow::Ok(configmaps + services + pods)
    };
    let objects = count_objects(owner.admin.clone(), labelled.clone()).await?;
    ensure!(
        objects >= 100,
        "expected 100 labelled objects, found {objects}"
    );

    let started = Instant::now();
    let tenants: Api<arktos_crds::Tenant> = Api::all(owner.admin.clone());
    tenants
        .delete(&owner.tenant, &DeleteParams::default())
        .await?;
    let mut progress: Vec<String> = Vec::new();
    let mut refused_while_terminating = false;
    loop {
        let tenant = tenants.get_opt(&owner.tenant).await?;
        let Some(tenant) = tenant else { break };
        if let Some(condition) = tenant
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            && progress.last() != Some(&condition.message)
        {
            progress.push(condition.message.clone());
        }
        if !refused_while_terminating && tenant.metadata.deletion_timestamp.is_some() {
            let late: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "late"}}))?;
            let outcome = Api::<ConfigMap>::namespaced(owner.client.clone(), "n1")
                .create(&post, &late)
                .await;
            refused("a create while the tenant is Terminating", outcome)?;
            refused_while_terminating = true;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the tenant was not deleted within 120 s; progress: {progress:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let namespaces_left = Api::<Namespace>::all(owner.admin.clone())
        .list(&labelled)
        .await?
        .items
        .len();
    let objects_left = count_objects(owner.admin.clone(), labelled.clone()).await?;
    ensure!(
        namespaces_left == 0 && objects_left == 0,
        "left behind: {namespaces_left} namespaces, {objects_left} objects"
    );
    ensure!(
        progress.iter().any(|p| p.contains("namespaces left")),
        "the tenant's status never showed deletion progress: {progress:?}"
    );
    eprintln!(
        "  tenant with 5 namespaces and {objects} objects deleted in {} ms; progress reported: {progress:?}",
        started.elapsed().as_millis()
    );
    Ok(())
}

/// What the tenant controller has not put in place yet for `tenant`
/// (`None`: everything is there).
async fn missing(
    admin: &kube::Client,
    tenant: &str,
    level: &str,
) -> anyhow::Result<Option<String>> {
    let role = format!("arktos:tenant:{tenant}:owner");
    if Api::<ClusterRole>::all(admin.clone())
        .get_opt(&role)
        .await?
        .is_none()
    {
        return Ok(Some("the owner ClusterRole".into()));
    }
    if Api::<ClusterRoleBinding>::all(admin.clone())
        .get_opt(&role)
        .await?
        .is_none()
    {
        return Ok(Some("the owner ClusterRoleBinding".into()));
    }
    let namespaces = Api::<Namespace>::all(admin.clone())
        .list(&ListParams::default().labels(&format!("tenancy.arktos.io/tenant={tenant}")))
        .await?
        .items;
    for namespace in &namespaces {
        let name = namespace.name_any();
        let enforce = namespace
            .labels()
            .get("pod-security.kubernetes.io/enforce")
            .cloned();
        if enforce.as_deref() != Some(level) {
            return Ok(Some(format!(
                "namespace {name}: Pod Security {enforce:?}, not {level}"
            )));
        }
        if Api::<NetworkPolicy>::namespaced(admin.clone(), &name)
            .get_opt("arktos-tenant-isolation")
            .await?
            .is_none()
        {
            return Ok(Some(format!("namespace {name}: the isolation policy")));
        }
        if Api::<RoleBinding>::namespaced(admin.clone(), &name)
            .get_opt("arktos-tenant-owners")
            .await?
            .is_none()
        {
            return Ok(Some(format!("namespace {name}: the owners' binding")));
        }
    }
    let tenant = Api::<arktos_crds::Tenant>::all(admin.clone())
        .get(tenant)
        .await?;
    let finalized = tenant
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default()
        .iter()
        .any(|f| f == "tenancy.arktos.io/cleanup");
    let ready = tenant.status.as_ref().is_some_and(|s| {
        s.namespaces == Some(namespaces.len() as u32)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    Ok(match (finalized, ready) {
        (true, true) => None,
        (false, _) => Some("the cleanup finalizer".into()),
        (true, false) => Some(format!(
            "a Ready status with {} namespaces: {:?}",
            namespaces.len(),
            tenant.status
        )),
    })
}

/// Waits until everything is in place for `tenant`, or says what is not.
async fn converged(
    admin: &kube::Client,
    tenant: &str,
    level: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let Some(what) = missing(admin, tenant, level).await? else {
            return Ok(());
        };
        ensure!(
            started.elapsed() < within,
            "tenant {tenant} did not converge within {}s: missing {what}",
            within.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn operators(
    ctx: &Ctx,
    act: impl Fn(&mut LocalCluster, &str) -> arktos_e2e::Result<()>,
) -> anyhow::Result<()> {
    let mut local = ctx.cluster.local().context("needs the local cluster")?;
    for replica in 0..arktos_e2e::cluster::OPERATOR_REPLICAS {
        act(&mut local, &LocalCluster::operators_name(replica))?;
    }
    Ok(())
}

async fn operators_converge_after_being_killed(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let mut owners = Vec::new();
    for _ in 0..3 {
        let owner = TenantOwner::create(&ctx, "kill", json!({"podSecurity": "baseline"})).await?;
        owner.namespace("web").await?;
        owner.namespace("db").await?;
        owners.push(owner);
    }
    // Mid-provisioning: more tenants just created, then every replica dies.
    for _ in 0..3 {
        owners.push(
            TenantOwner::create_unprovisioned(&ctx, "kill", json!({"podSecurity": "baseline"}))
                .await?,
        );
    }
    operators(&ctx, |local, name| local.kill(name))?;
    // While they are down: a tenant changes its level, one more appears.
    // (They come back however this goes: later tests need them.)
    let while_down = async {
        let tenants: Api<arktos_crds::Tenant> = Api::all(owners[0].admin.clone());
        tenants
            .patch(
                &owners[0].tenant,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"podSecurity": "restricted"}})),
            )
            .await?;
        let late =
            TenantOwner::create_unprovisioned(&ctx, "kill", json!({"podSecurity": "baseline"}))
                .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        anyhow::Ok(late)
    }
    .await;
    operators(&ctx, |local, name| local.start_again(name))?;
    owners.push(while_down?);
    let started = Instant::now();
    for (i, owner) in owners.iter().enumerate() {
        let level = if i == 0 { "restricted" } else { "baseline" };
        converged(&owner.admin, &owner.tenant, level, Duration::from_secs(60)).await?;
    }
    eprintln!(
        "  {} tenants converged {} ms after the operators restarted",
        owners.len(),
        started.elapsed().as_millis()
    );
    // And they serve admission again: a namespace for a late tenant.
    owners[3].namespace("web").await?;
    converged(
        &owners[3].admin,
        &owners[3].tenant,
        "baseline",
        Duration::from_secs(10),
    )
    .await?;
    Ok(())
}
