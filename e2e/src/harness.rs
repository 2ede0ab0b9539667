//! What the e2e tests share: one cluster per test process, started through
//! the same launcher as `arktos-local up` (or an existing one named by
//! `ARKTOS_E2E_KUBECONFIG`), and a namespace per test.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use crate::cluster::{ClusterSpec, LocalCluster, Ports};
use crate::home::ArktosHome;
use crate::{Error, Result};

/// Names a kubeconfig of a running cluster to test against instead of
/// starting one.
pub const EXISTING_CLUSTER_ENV: &str = "ARKTOS_E2E_KUBECONFIG";

/// The cluster the tests of one process share.
pub struct TestCluster {
    /// `None` when testing a cluster someone else runs.
    owned: Option<std::sync::Mutex<LocalCluster>>,
    kubeconfig: PathBuf,
}

impl TestCluster {
    /// Uses the cluster named by `ARKTOS_E2E_KUBECONFIG`, or starts a fresh
    /// ephemeral one on free ports.
    pub async fn start() -> Result<Self> {
        if let Some(path) = std::env::var_os(EXISTING_CLUSTER_ENV) {
            eprintln!(
                "e2e: using the cluster of {}",
                PathBuf::from(&path).display()
            );
            return Ok(Self {
                owned: None,
                kubeconfig: path.into(),
            });
        }
        let mut spec = ClusterSpec::new(
            format!("e2e-{}", std::process::id()),
            ArktosHome::from_env(),
            Ports::find_free()?,
        );
        // ARKTOS_E2E_KEEP=1 keeps the cluster's folder (logs) after the run.
        spec.ephemeral = std::env::var_os("ARKTOS_E2E_KEEP").is_none();
        eprintln!(
            "e2e: starting cluster {} (apiserver on port {})",
            spec.name,
            spec.ports.apiserver()
        );
        let cluster = LocalCluster::start(spec).await?;
        Ok(Self {
            kubeconfig: cluster.kubeconfig_path(),
            owned: Some(std::sync::Mutex::new(cluster)),
        })
    }

    pub fn kubeconfig(&self) -> &PathBuf {
        &self.kubeconfig
    }

    /// The local cluster, when this process started it. Tests that change
    /// it (restart a component) hold the lock only for that change.
    pub fn local(&self) -> Option<std::sync::MutexGuard<'_, LocalCluster>> {
        self.owned
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub async fn client(&self) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A fresh namespace for one test, named after it.
    pub async fn namespace(&self, test: &str) -> Result<TestNamespace> {
        let client = self.client().await?;
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let mut name = format!("e2e-{}-{suffix:x}", test.replace('_', "-"));
        name.truncate(63);
        let name = name.trim_end_matches('-').to_string();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        ns.metadata.labels = Some([("arktos.io/e2e".to_string(), test.to_string())].into());
        namespaces.create(&PostParams::default(), &ns).await?;
        created_namespace(&name);
        Ok(TestNamespace { client, name })
    }

    /// Stops the cluster if this process started it.
    pub fn stop(&mut self) {
        if let Some(cluster) = self.owned.take() {
            cluster
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .stop();
        }
    }
}

/// A namespace owned by one test; `delete` it at the end.
pub struct TestNamespace {
    pub client: kube::Client,
    pub name: String,
}

impl TestNamespace {
    pub async fn delete(self) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client);
        namespaces
            .delete(&self.name, &DeleteParams::background())
            .await
            .map(|_| ())
            .map_err(Error::from)
    }
}

tokio::task_local! {
    /// What the running test created, to remove should it fail.
    static CREATED: std::sync::Arc<std::sync::Mutex<Created>>;
}

/// Tenants and namespaces a test created (recorded by the helpers that
/// create them), removed after a failure so that one failing test does not
/// leave VMs holding the node's CPU for the tests after it; and the steps
/// it reached, so that a test that times out says where it was.
#[derive(Debug, Default)]
pub struct Created {
    tenants: Vec<String>,
    namespaces: Vec<String>,
    started: Option<std::time::Instant>,
    steps: Vec<String>,
}

/// Records that the running test begins `what` (no-op outside a test).
pub fn step(what: &str) {
    let _ = CREATED.try_with(|c| {
        let mut c = c.lock().expect("created");
        let at = c.started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
        c.steps.push(format!("{at:.1}s {what}"));
    });
}

/// Records a Tenant the running test created (no-op outside a test).
pub fn created_tenant(name: &str) {
    let _ = CREATED.try_with(|c| c.lock().expect("created").tenants.push(name.to_string()));
}

/// Records a namespace the running test created.
pub fn created_namespace(name: &str) {
    let _ = CREATED.try_with(|c| c.lock().expect("created").namespaces.push(name.to_string()));
}

/// Runs a test, recording what it creates; returns that record with the
/// test's outcome.
pub async fn recording<F: std::future::Future>(test: F) -> (F::Output, Created) {
    let created = std::sync::Arc::new(std::sync::Mutex::new(Created {
        started: Some(std::time::Instant::now()),
        ..Created::default()
    }));
    let outcome = CREATED.scope(created.clone(), test).await;
    let record = std::mem::take(&mut *created.lock().expect("created"));
    (outcome, record)
}

impl Created {
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.namespaces.is_empty()
    }

    /// What would be removed, for the log.
    pub fn describe(&self) -> String {
        format!(
            "tenants {:?}, namespaces {:?}",
            self.tenants, self.namespaces
        )
    }

    /// The steps the test reached, oldest first.
    pub fn steps(&self) -> &[String] {
        &self.steps
    }

    /// Deletes what was recorded and waits (at most `within`) until no pod
    /// is left in it: the tenants' namespaces go with the Tenants.
    pub async fn remove(&self, client: &kube::Client, within: std::time::Duration) -> Result<()> {
        use k8s_openapi::api::core::v1::Pod;
        let tenants: Api<arktos_crds::Tenant> = Api::all(client.clone());
        for tenant in &self.tenants {
            let _ = tenants.delete(tenant, &DeleteParams::background()).await;
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for ns in &self.namespaces {
            let _ = namespaces.delete(ns, &DeleteParams::background()).await;
        }
        let pods: Api<Pod> = Api::all(client.clone());
        let deadline = std::time::Instant::now() + within;
        loop {
            let left: Vec<String> = pods
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .filter_map(|p| p.metadata.namespace)
                .filter(|ns| {
                    self.namespaces.contains(ns)
                        || self.tenants.iter().any(|t| {
                            arktos_crds::naming::split_storage_namespace(ns)
                                .is_some_and(|(owner, _)| owner == t)
                        })
                })
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Node(format!(
                    "{} pods still in namespaces of the failed test after {}s",
                    left.len(),
                    within.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}
