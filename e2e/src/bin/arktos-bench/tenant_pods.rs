//! Pods of one tenant through the tenant gateway, through the aggregated
//! path, and directly against kube-apiserver (storage names), in one run.

use anyhow::Context;
use arktos_crds::Tenant;
use arktos_e2e::bench::{Sample, measure, report};
use arktos_e2e::cluster::LocalCluster;
use arktos_e2e::cluster::kubeconfig;
use arktos_e2e::cluster::pki::{Leaf, Usage};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const TENANT: &str = "bench";
const OWNER: &str = "bench-owner";

/// A pod the tenant's `restricted` Pod Security level admits, held back
/// from scheduling so the benchmark measures the API only.
fn mk_pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "schedulingGates": [{"name": "arktos.io/bench"}],
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "main", "image": "bench:1",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        },
    }))?)
}

/// Tenant `tenant` owned by `owner` (a client certificate of the cluster
/// CA) on `partition` ("" to have it placed), with `use` granted at once
/// (the tenant controller would grant it within a second or so); returns
/// the owner's client on the gateway.
pub async fn tenant_owner(
    cluster: &LocalCluster,
    tenant: &str,
    owner: &str,
    partition: &str,
) -> anyhow::Result<kube::Client> {
    let admin = cluster.admin_client().await?;
    let pki = cluster.pki();
    pki.issue_from_cluster_ca(&Leaf {
        name: owner,
        common_name: owner,
        organizations: &[],
        dns_names: &[],
        ip_addresses: &[],
        usage: Usage::Client,
    })?;
    let object: Tenant = serde_json::from_value(json!({
        "apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant", "metadata": {"name": tenant},
        "spec": {"owners": [{"kind": "User", "name": owner}], "partition": partition},
    }))?;
    Api::<Tenant>::all(admin.clone())
        .create(&PostParams::default(), &object)
        .await?;
    let apply = PatchParams::apply("arktos-bench").force();
    let grant = format!("bench:{tenant}:owner");
    let role: ClusterRole = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": grant},
        "rules": [{"apiGroups": ["tenancy.arktos.io"], "resources": ["tenants", "tenants/api", "tenants/apis", "tenants/namespaces"],
                   "resourceNames": [tenant], "verbs": ["use", "get", "list", "watch", "create", "delete", "update", "patch"]}],
    }))?;
    Api::<ClusterRole>::all(admin.clone())
        .patch(&grant, &apply, &Patch::Apply(&role))
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": grant},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": grant},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": owner}],
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(&grant, &apply, &Patch::Apply(&binding))
        .await?;
    Ok(kubeconfig::client_with(
        &cluster.gateway_url(tenant),
        &pki.ca_cert(),
        &pki.cert(owner),
        &pki.key(owner),
        &[],
    )
    .await?)
}

async fn setup(
    cluster: &LocalCluster,
    namespaces: usize,
) -> anyhow::Result<(kube::Client, kube::Client, kube::Client)> {
    let gateway = tenant_owner(cluster, TENANT, OWNER, "").await?;
    let pki = cluster.pki();
    let aggregated_url = format!(
        "{}/apis/tenancy.arktos.io/v1alpha1/tenants/{TENANT}",
        cluster.apiserver_url()
    );
    let aggregated = kubeconfig::client_with(
        &aggregated_url,
        &pki.ca_cert(),
        &pki.cert(OWNER),
        &pki.key(OWNER),
        &[],
    )
    .await?;
    let direct = kubeconfig::client_with(
        &cluster.apiserver_url(),
        &pki.ca_cert(),
        &pki.cert(OWNER),
        &pki.key(OWNER),
        &[],
    )
    .await?;
    for i in 0..namespaces {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": format!("ns{i}")}}))?;
        Api::<Namespace>::all(gateway.clone())
            .create(&PostParams::default(), &ns)
            .await?;
    }
    Ok((gateway, aggregated, direct))
}

/// The three ways to the tenant's pods: its name for the target, a
/// client, and the prefix its namespaces have there.
type Targets = [(&'static str, kube::Client, &'static str); 3];

pub async fn run(
    cluster: &LocalCluster,
    pods: usize,
    namespaces: usize,
    per_path: usize,
    lists: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let (gateway, aggregated, direct) = setup(cluster, namespaces)
        .await
        .context("setting up the tenant")?;
    let admin = cluster.admin_client().await?;
    let targets: Targets = [
        ("tenant gateway", gateway.clone(), ""),
        ("aggregated path", aggregated, ""),
        ("kube-apiserver direct", direct, "bench--"),
    ];
    eprintln!("[1/4] filling the tenant with {pods} pods over {namespaces} namespaces");
    fill(&gateway, pods, namespaces, concurrency).await?;
    eprintln!("[2/4] CREATE {per_path} pods through each path");
    let mut samples = creates(&targets, namespaces, per_path, concurrency).await;
    eprintln!("[3/4] GET {per_path} pods through each path");
    samples.extend(gets(&targets, pods, namespaces, per_path, concurrency).await);
    eprintln!("[4/4] LIST the tenant's {pods}+ pods across its namespaces, {lists} times per path");
    samples.extend(list_all(&targets, &admin, pods, lists).await);
    println!();
    report(&samples, "kube-apiserver direct");
    Ok(())
}

/// `pods` pods through the gateway, spread over the namespaces.
async fn fill(
    gateway: &kube::Client,
    pods: usize,
    namespaces: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let gateway = gateway.clone();
    let filled = measure("FILL", "tenant gateway", pods, concurrency, move |i| {
        let client = gateway.clone();
        async move {
            let pods: Api<Pod> = Api::namespaced(client, &format!("ns{}", i % namespaces));
            pods.create(&PostParams::default(), &mk_pod(&format!("fill-{i}"))?)
                .await?;
            Ok(())
        }
    })
    .await;
    anyhow::ensure!(
        filled.errors == 0,
        "{} pods could not be created",
        filled.errors
    );
    Ok(())
}

async fn creates(
    targets: &Targets,
    namespaces: usize,
    per_path: usize,
    concurrency: usize,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    for (index, (target, client, prefix)) in targets.iter().enumerate() {
        let (client, prefix) = (client.clone(), prefix.to_string());
        samples.push(
            measure("CREATE", target, per_path, concurrency, move |i| {
                let (client, prefix) = (client.clone(), prefix.clone());
                async move {
                    let pods: Api<Pod> =
                        Api::namespaced(client, &format!("{prefix}ns{}", i % namespaces));
                    pods.create(&PostParams::default(), &mk_pod(&format!("c{index}-{i}"))?)
                        .await?;
                    Ok(())
                }
            })
            .await,
        );
    }
    samples
}

async fn gets(
    targets: &Targets,
    pods: usize,
    namespaces: usize,
    per_path: usize,
    concurrency: usize,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    for (target, client, prefix) in targets {
        let (client, prefix) = (client.clone(), prefix.to_string());
        samples.push(
            measure("GET", target, per_path, concurrency, move |i| {
                let (client, prefix) = (client.clone(), prefix.clone());
                async move {
                    // fill-j lives in namespace ns(j mod namespaces).
                    let namespace = i % namespaces;
                    let j =
                        namespace + namespaces * ((i / namespaces) % (pods / namespaces).max(1));
                    let api: Api<Pod> = Api::namespaced(client, &format!("{prefix}ns{namespace}"));
                    api.get(&format!("fill-{j}")).await?;
                    Ok(())
                }
            })
            .await,
        );
    }
    samples
}

/// The tenant's pods listed across its namespaces: by the tenant on its
/// two paths, by the admin on kube-apiserver with the tenant label.
async fn list_all(
    targets: &Targets,
    admin: &kube::Client,
    wanted: usize,
    lists: usize,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    for (target, client, _) in &targets[..2] {
        let client = client.clone();
        samples.push(
            measure("LIST", target, lists, 1, move |_| {
                let client = client.clone();
                async move {
                    let all = Api::<Pod>::all(client).list(&ListParams::default()).await?;
                    anyhow::ensure!(all.items.len() >= wanted, "listed {}", all.items.len());
                    Ok(())
                }
            })
            .await,
        );
    }
    let label = format!("{}={TENANT}", arktos_crds::naming::TENANT_LABEL);
    let admin = admin.clone();
    samples.push(
        measure("LIST", targets[2].0, lists, 1, move |_| {
            let (admin, label) = (admin.clone(), label.clone());
            async move {
                let all = Api::<Pod>::all(admin)
                    .list(&ListParams::default().labels(&label))
                    .await?;
                anyhow::ensure!(all.items.len() >= wanted, "listed {}", all.items.len());
                Ok(())
            }
        })
        .await,
    );
    samples
}
