//! End-to-end tests against a real local cluster.
//!
//! One cluster per test process, started through the same launcher as
//! `hack/up` (or the one named by `ARKTOS_E2E_KUBECONFIG`), shared by the
//! tests, each in a namespace of its own. `main` owns the cluster so that it
//! is stopped after the last test, whatever the tests did.

mod foundation;
mod node_vm;
mod partitions;
mod support;
mod tenant_admission;
mod tenant_api;
mod tenant_cluster_rbac;
mod tenant_crds;
mod tenant_in_cluster;
mod tenant_isolation;
mod tenant_namespaces;
mod tenant_operator;
mod tenant_partitions;
mod tenant_plugin;
mod tenant_python;
mod tenant_routes;
mod tenant_self_reviews;
mod tenant_sharding;
mod tenant_watch;
mod vm_pods;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arktos_e2e::harness::TestCluster;
use libtest_mimic::{Arguments, Failed, Trial};

/// What every test gets.
pub struct Ctx {
    pub runtime: tokio::runtime::Runtime,
    pub cluster: TestCluster,
    /// Tests share it; a test that takes a shared component down (restarts
    /// arktos-apiserver) holds it alone.
    pub exclusive: tokio::sync::RwLock<()>,
}

/// Every test ends within this, whatever it waits for.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

pub fn trial<F, Fut>(ctx: &Arc<Ctx>, name: &'static str, test: F) -> Trial
where
    F: FnOnce(Arc<Ctx>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_trial(ctx, name, false, TEST_TIMEOUT, test)
}

/// A test that needs longer than the usual timeout.
pub fn long_trial<F, Fut>(ctx: &Arc<Ctx>, name: &'static str, timeout: Duration, test: F) -> Trial
where
    F: FnOnce(Arc<Ctx>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_trial(ctx, name, false, timeout, test)
}

/// A long test that disturbs what other tests use; it runs alone.
pub fn disruptive_long_trial<F, Fut>(
    ctx: &Arc<Ctx>,
    name: &'static str,
    timeout: Duration,
    test: F,
) -> Trial
where
    F: FnOnce(Arc<Ctx>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_trial(ctx, name, true, timeout, test)
}

/// A test that disturbs what other tests use; it runs alone.
pub fn disruptive_trial<F, Fut>(ctx: &Arc<Ctx>, name: &'static str, test: F) -> Trial
where
    F: FnOnce(Arc<Ctx>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_trial(ctx, name, true, TEST_TIMEOUT, test)
}

fn run_trial<F, Fut>(
    ctx: &Arc<Ctx>,
    name: &'static str,
    alone: bool,
    timeout: Duration,
    test: F,
) -> Trial
where
    F: FnOnce(Arc<Ctx>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let ctx = ctx.clone();
    Trial::test(name, move || {
        let outcome = ctx.runtime.block_on(async {
            let _shared;
            let _alone;
            if alone {
                _alone = ctx.exclusive.write().await;
            } else {
                _shared = ctx.exclusive.read().await;
            }
            let (outcome, created) =
                arktos_e2e::harness::recording(tokio::time::timeout(timeout, test(ctx.clone())))
                    .await;
            if !matches!(outcome, Ok(Ok(()))) && !created.steps().is_empty() {
                eprintln!("{name}: failed; its steps: {:#?}", created.steps());
            }
            if !matches!(outcome, Ok(Ok(()))) && !created.is_empty() {
                // Before the next test needs the node: what this one left
                // (VM pods hold CPU) would make later tests fail too.
                eprintln!(
                    "{name}: failed; removing what it created: {}",
                    created.describe()
                );
                match ctx.cluster.client().await {
                    Ok(client) => {
                        if let Err(e) = created.remove(&client, CLEANUP_TIMEOUT).await {
                            eprintln!("{name}: cleaning up: {e}");
                        }
                    }
                    Err(e) => eprintln!("{name}: cleaning up: {e}"),
                }
            }
            outcome
        });
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Failed::from(format!("{err:#}"))),
            Err(_) => Err(Failed::from(format!(
                "timed out after {}s",
                timeout.as_secs()
            ))),
        }
    })
}

/// How long a failed test's clean-up may wait for its pods to go.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let args = Arguments::from_args();
    if args.list {
        // Listing needs no cluster.
        let names = foundation::NAMES
            .iter()
            .chain(tenant_api::NAMES)
            .chain(partitions::NAMES)
            .chain(tenant_partitions::NAMES)
            .chain(tenant_routes::NAMES)
            .chain(tenant_isolation::NAMES)
            .chain(tenant_namespaces::NAMES)
            .chain(tenant_self_reviews::NAMES)
            .chain(tenant_cluster_rbac::NAMES)
            .chain(tenant_crds::NAMES)
            .chain(tenant_in_cluster::NAMES)
            .chain(tenant_plugin::NAMES)
            .chain(tenant_watch::NAMES)
            .chain(tenant_python::NAMES)
            .chain(tenant_operator::NAMES)
            .chain(tenant_admission::NAMES)
            .chain(tenant_sharding::NAMES)
            .chain(node_vm::NAMES)
            .chain(vm_pods::NAMES)
            .map(|name| Trial::test(*name, || Ok(())));
        libtest_mimic::run(&args, names.collect()).exit();
    }
    arktos_crds::logging::init(false, "warn,kube_client::client::builder=off");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let cluster = match runtime.block_on(TestCluster::start()) {
        Ok(cluster) => cluster,
        Err(err) => {
            eprintln!("e2e: could not start the local cluster: {err}");
            std::process::exit(1);
        }
    };
    let ctx = Arc::new(Ctx {
        runtime,
        cluster,
        exclusive: tokio::sync::RwLock::new(()),
    });
    let mut trials = foundation::trials(&ctx);
    trials.extend(tenant_api::trials(&ctx));
    trials.extend(partitions::trials(&ctx));
    trials.extend(tenant_partitions::trials(&ctx));
    trials.extend(tenant_routes::trials(&ctx));
    trials.extend(tenant_isolation::trials(&ctx));
    trials.extend(tenant_namespaces::trials(&ctx));
    trials.extend(tenant_self_reviews::trials(&ctx));
    trials.extend(tenant_cluster_rbac::trials(&ctx));
    trials.extend(tenant_crds::trials(&ctx));
    trials.extend(tenant_in_cluster::trials(&ctx));
    trials.extend(tenant_plugin::trials(&ctx));
    trials.extend(tenant_watch::trials(&ctx));
    trials.extend(tenant_python::trials(&ctx));
    trials.extend(tenant_operator::trials(&ctx));
    trials.extend(tenant_admission::trials(&ctx));
    trials.extend(tenant_sharding::trials(&ctx));
    trials.extend(node_vm::trials(&ctx));
    trials.extend(vm_pods::trials(&ctx));
    let conclusion = libtest_mimic::run(&args, trials);
    if let Ok(mut ctx) = Arc::try_unwrap(ctx) {
        ctx.cluster.stop();
    }
    conclusion.exit();
}
