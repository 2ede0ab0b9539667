//! Tenant provisioning: how many tenants (each with its namespaces,
//! created through the gateway) the operators bring to Ready per second,
//! and their resident memory per tenant; next to the baseline of a client
//! creating the same objects directly, in the same run.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use arktos_crds::Tenant;
use arktos_crds::tenant::desired;
use arktos_e2e::bench::{Sample, report};
use arktos_e2e::cluster::{LocalCluster, OPERATOR_REPLICAS, kubeconfig};
use arktos_e2e::observe;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const LABEL: &str = "arktos.io/bench=provisioning";

/// CPU seconds each component has used so far.
fn cpu_seconds(cluster: &LocalCluster) -> anyhow::Result<Vec<(String, f64)>> {
    cluster
        .pids()
        .into_iter()
        .map(|(name, pid)| Ok((name, observe::cpu_seconds(pid)?)))
        .collect()
}

fn operators_rss(cluster: &LocalCluster) -> anyhow::Result<Vec<u64>> {
    let pids = cluster.pids();
    (0..OPERATOR_REPLICAS)
        .map(|r| {
            let name = LocalCluster::operators_name(r);
            let pid = pids
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, pid)| *pid)
                .with_context(|| format!("{name} is not running"))?;
            observe::rss_kib(pid)
        })
        .collect()
}

pub async fn run(
    cluster: &LocalCluster,
    tenants: usize,
    namespaces: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let admin = cluster.admin_client().await?;
    let baseline = direct_objects(&admin, tenants, namespaces, concurrency).await?;
    // Settle, then measure memory before the tenants arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = operators_rss(cluster)?;

    let pki = cluster.pki();
    let gateway = kubeconfig::client_with(
        cluster.gateway_url("").trim_end_matches("/tenants/"),
        &pki.ca_cert(),
        &pki.cert("admin"),
        &pki.key("admin"),
        &[],
    )
    .await?;
    let names: Vec<String> = (0..tenants).map(|i| format!("prov{i}")).collect();
    let cpu_before = cpu_seconds(cluster)?;
    let requests_before = request_counts(&admin).await?;
    let started = Instant::now();
    // Creating and watching for Ready run together, so each tenant's time
    // to Ready is its own.
    let started_at: Mutex<HashMap<String, Instant>> = Mutex::default();
    let creating = async {
        let outcomes: Vec<anyhow::Result<()>> = futures::stream::iter(names.clone())
            .map(|name| {
                let (admin, gateway, started_at) = (admin.clone(), gateway.clone(), &started_at);
                async move {
                    started_at
                        .lock()
                        .expect("not poisoned")
                        .insert(name.clone(), Instant::now());
                    create_tenant(&admin, &gateway, &name, namespaces).await
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        outcomes.into_iter().collect::<anyhow::Result<()>>()?;
        anyhow::Ok(started.elapsed())
    };
    let api: Api<Tenant> = Api::all(admin.clone());
    let watching = ready_times(&api, tenants, namespaces, &started_at);
    let (created_in, ready) = tokio::try_join!(creating, watching)?;
    let wall = started.elapsed();
    let cpu_after = cpu_seconds(cluster)?;
    let requests_after = request_counts(&admin).await?;
    let after = operators_rss(cluster)?;

    let provisioned = Sample {
        operation: "PROVISION".into(),
        target: format!("tenant + {namespaces} ns, until Ready"),
        latencies: ready.into_values().collect(),
        wall,
        errors: 0,
    };
    report(&[provisioned.clone(), baseline.clone()], &baseline.target);
    print_costs(tenants, &cpu_before, &cpu_after);
    print_requests(tenants, &requests_before, &requests_after);
    println!(
        "\n{tenants} tenants Ready in {:.1} s: {:.1} tenants/s (created in {:.1} s); the same objects created directly: {:.1} sets/s (x{:.2})",
        wall.as_secs_f64(),
        provisioned.throughput(),
        created_in.as_secs_f64(),
        baseline.throughput(),
        provisioned.throughput() / baseline.throughput().max(f64::EPSILON)
    );
    for (replica, (b, a)) in before.iter().zip(&after).enumerate() {
        println!(
            "arktos-operators replica {replica}: resident {} MiB before, {} MiB after: {:.1} KiB per tenant",
            b / 1024,
            a / 1024,
            (*a as f64 - *b as f64) / tenants as f64
        );
    }
    Ok(())
}

/// Each tenant's time from its create to Ready (all `namespaces` made).
async fn ready_times(
    api: &Api<Tenant>,
    tenants: usize,
    namespaces: usize,
    started_at: &Mutex<HashMap<String, Instant>>,
) -> anyhow::Result<HashMap<String, Duration>> {
    let mut ready: HashMap<String, Duration> = HashMap::new();
    let mut last_report = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(900);
    while ready.len() < tenants {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {tenants} tenants Ready after 15 minutes",
            ready.len()
        );
        for tenant in api.list(&ListParams::default().labels(LABEL)).await?.items {
            let name = tenant.name_any();
            if ready.contains_key(&name) || !is_ready(&tenant, namespaces) {
                continue;
            }
            let begun = started_at.lock().expect("not poisoned").get(&name).copied();
            if let Some(begun) = begun {
                ready.insert(name, begun.elapsed());
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("{} of {tenants} tenants Ready", ready.len());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(ready)
}

/// kube-apiserver's requests so far, by verb and resource (its
/// `apiserver_request_total`).
async fn request_counts(admin: &kube::Client) -> anyhow::Result<HashMap<String, f64>> {
    let text = admin
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut counts: HashMap<String, f64> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |key: &str| line.split(&format!("{key}=\"")).nth(1)?.split('"').next();
        let (Some(verb), Some(resource), Some(value)) = (
            label("verb"),
            label("resource"),
            line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        let subresource = label("subresource").unwrap_or_default();
        let key = format!(
            "{verb} {resource}{}{subresource}",
            if subresource.is_empty() { "" } else { "/" }
        );
        *counts.entry(key).or_default() += value;
    }
    Ok(counts)
}

/// The requests kube-apiserver answered per tenant, most first.
fn print_requests(tenants: usize, before: &HashMap<String, f64>, after: &HashMap<String, f64>) {
    let mut deltas: Vec<(&String, f64)> = after
        .iter()
        .map(|(key, n)| (key, n - before.get(key).copied().unwrap_or_default()))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    deltas.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = deltas.iter().map(|(_, n)| n).sum();
    println!(
        "
kube-apiserver requests per tenant: {:.1} in all; the most:",
        total / tenants as f64
    );
    for (key, n) in deltas.iter().take(15) {
        println!("  {:>6.2}  {key}", n / tenants as f64);
    }
}

/// CPU seconds each component spent on the tenants.
fn print_costs(tenants: usize, cpu_before: &[(String, f64)], cpu_after: &[(String, f64)]) {
    for ((name, before), (_, after)) in cpu_before.iter().zip(cpu_after) {
        println!(
            "{name}: {:.1} CPU s for {tenants} tenants, {:.1} CPU ms per tenant",
            after - before,
            (after - before) * 1000.0 / tenants as f64
        );
    }
}

/// Ready with the `namespaces` made for it (counted by its quota usage:
/// the default namespaces every tenant gets are not).
fn is_ready(tenant: &Tenant, namespaces: usize) -> bool {
    tenant.status.as_ref().is_some_and(|s| {
        s.used.get("count/namespaces").map(|q| q.0.as_str()) == Some(&namespaces.to_string())
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Runs `create` until it succeeds or finds the object there already (a
/// create whose answer was lost on the way), at most 3 times.
async fn created<F, Fut, T>(what: &str, create: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut last = None;
    for attempt in 0..3 {
        match create().await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt > 0 => return Ok(()),
            Err(err) => {
                eprintln!("\n{what}: {err}; retrying");
                last = Some(err);
            }
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("{what} failed"), anyhow::Error::from))
        .with_context(|| what.to_string())
}

async fn create_tenant(
    admin: &kube::Client,
    gateway: &kube::Client,
    name: &str,
    namespaces: usize,
) -> anyhow::Result<()> {
    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "tenancy.arktos.io/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name, "labels": {"arktos.io/bench": "provisioning"}},
        "spec": {"owners": [{"kind": "User", "name": format!("{name}-owner")}]},
    }))?;
    let tenants: Api<Tenant> = Api::all(admin.clone());
    let post = PostParams::default();
    created(&format!("tenant {name}"), || tenants.create(&post, &tenant)).await?;
    for n in 0..namespaces {
        let body = serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns{n}")},
        }))?;
        created(&format!("namespace ns{n} of tenant {name}"), || {
            let request = http::Request::post(format!("/tenants/{name}/api/v1/namespaces"))
                .header("content-type", "application/json")
                .body(body.clone())
                .expect("a valid request");
            gateway.request::<Namespace>(request)
        })
        .await?;
    }
    Ok(())
}

/// The baseline: a client creating, for each tenant, what the gateway and
/// the operators create (its owner ClusterRole and binding, its namespaces
/// with their owner RoleBinding and NetworkPolicy), directly.
async fn direct_objects(
    admin: &kube::Client,
    sets: usize,
    namespaces: usize,
    concurrency: usize,
) -> anyhow::Result<Sample> {
    eprintln!("baseline: creating the same objects for {sets} tenants directly");
    let started = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..sets)
        .map(|i| {
            let admin = admin.clone();
            async move {
                let begun = Instant::now();
                let name = format!("base{i}");
                let post = PostParams::default();
                let tenant: Tenant = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"owners": [{"kind": "User", "name": format!("{name}-owner")}]},
                }))?;
                let mut role = desired::owner_role(&name);
                role.metadata.labels = None;
                Api::<ClusterRole>::all(admin.clone())
                    .create(&post, &role)
                    .await?;
                let map = |ns: &str| format!("{name}-{ns}");
                let mut binding = desired::owner_role_binding(&tenant, &map);
                binding.metadata.labels = None;
                Api::<ClusterRoleBinding>::all(admin.clone())
                    .create(&post, &binding)
                    .await?;
                for n in 0..namespaces {
                    // No tenant label: plain namespaces, no admission.
                    let namespace = format!("{name}-ns{n}");
                    let object: Namespace =
                        serde_json::from_value(json!({"metadata": {"name": namespace}}))?;
                    Api::<Namespace>::all(admin.clone())
                        .create(&post, &object)
                        .await?;
                    let mut owners = desired::owners_binding(&tenant, &namespace, &map);
                    owners.metadata.labels = None;
                    Api::<RoleBinding>::namespaced(admin.clone(), &namespace)
                        .create(&post, &owners)
                        .await?;
                    let mut policy = desired::isolation_policy(&name, &namespace);
                    policy.metadata.labels = None;
                    Api::<NetworkPolicy>::namespaced(admin.clone(), &namespace)
                        .create(&post, &policy)
                        .await?;
                }
                anyhow::Ok(begun.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let wall = started.elapsed();
    let errors = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(err)) = results.iter().find(|r| r.is_err()) {
        eprintln!("baseline error: {err:#}");
    }
    Ok(Sample {
        operation: "PROVISION".into(),
        target: format!("same objects, direct ({namespaces} ns)"),
        latencies: results.into_iter().filter_map(Result::ok).collect(),
        wall,
        errors,
    })
}

use futures::StreamExt;
