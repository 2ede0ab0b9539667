//! Waiting for each component to serve, while watching that none of the
//! started ones has died (a dead component fails the wait at once, naming
//! its log, instead of running into the timeout).

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Api;
use kube::api::ListParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{LocalCluster, kubeconfig, nodes};
use crate::{Error, Result};

/// Polls `probe` until it answers `true`.
async fn wait_for<F, Fut>(cluster: &mut LocalCluster, what: &str, mut probe: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let timeout = cluster.spec.ready_timeout;
    let started = Instant::now();
    loop {
        cluster.check_running()?;
        if probe().await {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn etcd(cluster: &mut LocalCluster) -> Result<()> {
    let port = cluster.spec.ports.etcd_client();
    wait_for(cluster, "etcd /health", || etcd_healthy(port)).await
}

/// etcd serves plain HTTP on loopback; one request needs no client library.
async fn etcd_healthy(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        Ok::<_, std::io::Error>(body.contains("\"health\":\"true\""))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .is_ok_and(|answer| answer.unwrap_or(false))
}

pub async fn apiserver(cluster: &mut LocalCluster) -> Result<()> {
    let client = cluster.admin_client().await?;
    wait_for(cluster, "kube-apiserver /readyz", || {
        answers_ok(client.clone(), "/readyz")
    })
    .await
}

pub async fn controller_manager_and_scheduler(cluster: &mut LocalCluster) -> Result<()> {
    for (what, port) in [
        (
            "kube-controller-manager /healthz",
            cluster.spec.ports.controller_manager(),
        ),
        ("kube-scheduler /healthz", cluster.spec.ports.scheduler()),
    ] {
        let client =
            kubeconfig::client(&format!("https://127.0.0.1:{port}"), &cluster.pki, "admin").await?;
        wait_for(cluster, what, || answers_ok(client.clone(), "/healthz")).await?;
    }
    Ok(())
}

async fn answers_ok(client: kube::Client, path: &str) -> bool {
    let request = http::Request::get(path)
        .body(Vec::new())
        .expect("a valid request");
    client
        .request_text(request)
        .await
        .is_ok_and(|body| body.trim() == "ok")
}

pub async fn nodes(cluster: &mut LocalCluster) -> Result<()> {
    let nodes: Api<Node> = Api::all(cluster.admin_client().await?);
    let expected = cluster.spec.nodes as usize;
    wait_for(cluster, "simulated nodes to be Ready", || {
        let nodes = nodes.clone();
        async move {
            let params = ListParams::default().labels(nodes::KWOK_LABEL);
            nodes.list(&params).await.is_ok_and(|list| {
                list.items.iter().filter(|node| node_ready(node)).count() == expected
            })
        }
    })
    .await
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Pods cannot be created in a namespace before its `default` service
/// account exists; tests start right after the launcher returns.
pub async fn default_service_account(cluster: &mut LocalCluster) -> Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.admin_client().await?, "default");
    wait_for(cluster, "the default service account", || {
        let accounts = accounts.clone();
        async move {
            accounts
                .get_opt("default")
                .await
                .is_ok_and(|sa| sa.is_some())
        }
    })
    .await
}
