//! The Arktos components on the local cluster: the manifests a real
//! cluster would get (minus the Deployments), and our binaries run as host
//! processes reached through ExternalName Services pointing at loopback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::discovery::{self, Scope};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde_json::json;

use crate::home::source_root;
use crate::{Error, IoContext, Result};

const FIELD_MANAGER: &str = "arktos-local";
pub const NAMESPACE: &str = "arktos-system";
pub const APISERVER: &str = "arktos-apiserver";
pub const APISERVICE: &str = "v1alpha1.tenancy.arktos.io";
pub const OPERATORS: &str = "arktos-operators";

/// Manifests the local cluster applies; Deployments, their Services and
/// cert-manager objects are for real clusters only.
pub const LOCAL_MANIFESTS: &[&str] = &[
    "namespace.yaml",
    "crds/tenantrecords.storage.tenancy.arktos.io.yaml",
    "crds/partitionrecords.storage.tenancy.arktos.io.yaml",
    "crds/quotaledgers.storage.tenancy.arktos.io.yaml",
    "crds/actions.vm.arktos.io.yaml",
    "arktos-apiserver/rbac.yaml",
    "arktos-apiserver/gateway-info.yaml",
    "arktos-operators/rbac.yaml",
    "arktos-operators/flowschema.yaml",
    "arktos-node/runtimeclass.yaml",
    "arktos-node/rbac.yaml",
];

/// Applied once arktos-apiserver serves.
pub const REGISTRATION: &[&str] = &["arktos-apiserver/apiservice.yaml"];

/// Applied once arktos-operators serve (see [`webhooks_on_loopback`]).
pub const WEBHOOKS: &[&str] = &["arktos-operators/webhooks.yaml"];

/// Where our binaries are: `$ARKTOS_BIN_DIR`, or beside the running
/// executable (cargo puts tests in `deps/` below the binaries).
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("ARKTOS_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe =
                std::env::current_exe().context(|| "locating the running executable".into())?;
            let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.parent().map(Path::to_path_buf).unwrap_or(dir)
            } else {
                dir
            }
        }
    };
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Other(format!(
            "{} is not built; run `cargo build --workspace --bins` (or hack/up)",
            path.display()
        )))
    }
}

/// Server-side applies every document of the given manifest files.
pub async fn apply_manifests(client: &kube::Client, files: &[&str]) -> Result<()> {
    apply_adjusted(client, files, |_| {}).await
}

/// Applies webhook configurations with their Service port set to `port`
/// and the CA that signed the webhooks' serving certificate (what
/// cert-manager injects on a real cluster).
pub async fn webhooks_on_loopback(client: &kube::Client, port: u16, ca_pem: &[u8]) -> Result<()> {
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    apply_adjusted(client, WEBHOOKS, |object| {
        let webhooks = object
            .data
            .get_mut("webhooks")
            .and_then(serde_json::Value::as_array_mut);
        for webhook in webhooks.into_iter().flatten() {
            if let Some(config) = webhook.get_mut("clientConfig") {
                config["caBundle"] = json!(bundle);
                config["service"]["port"] = json!(port);
            }
        }
    })
    .await
}

async fn apply_adjusted(
    client: &kube::Client,
    files: &[&str],
    adjust: impl Fn(&mut DynamicObject),
) -> Result<()> {
    let root = source_root().join("manifests");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for file in files {
        let path = root.join(file);
        let text =
            std::fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)?;
            if value.is_null() {
                continue;
            }
            let mut object: DynamicObject = serde_yaml::from_value(value)?;
            adjust(&mut object);
            let gvk = object
                .types
                .as_ref()
                .ok_or_else(|| Error::Other(format!("a document in {file} has no apiVersion/kind")))
                .and_then(|t| {
                    kube::core::GroupVersionKind::try_from(t)
                        .map_err(|e| Error::Other(e.to_string()))
                })?;
            let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await?;
            let api: Api<DynamicObject> = match (capabilities.scope, object.namespace()) {
                (Scope::Namespaced, Some(ns)) => {
                    Api::namespaced_with(client.clone(), &ns, &resource)
                }
                _ => Api::all_with(client.clone(), &resource),
            };
            api.patch(&object.name_any(), &params, &Patch::Apply(&object))
                .await?;
        }
    }
    Ok(())
}

/// Waits until the CRD `name` is Established.
pub async fn wait_for_crd(client: &kube::Client, name: &str, timeout: Duration) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let established = crds.get_opt(name).await?.is_some_and(|crd| {
            crd.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("CRD {name} to be Established"),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Points the Service `name` at this host's loopback (`localhost`), the
/// route by which kube-apiserver reaches aggregated servers and webhooks
/// running as host processes (Endpoints may not name loopback).
pub async fn expose_on_loopback(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    port: u16,
) -> Result<()> {
    let services: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
    );
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "arktos"}},
        "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"name": "https", "port": port}]},
    });
    services
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&service),
        )
        .await?;
    Ok(())
}

/// Sets the APIService's port and the CA that signed our serving certificate.
pub async fn point_apiservice(
    client: &kube::Client,
    name: &str,
    port: u16,
    ca_pem: &[u8],
) -> Result<()> {
    let services: Api<APIService> = Api::all(client.clone());
    // A merge patch: an apply by the manager that applied the manifest
    // would drop every field this partial object leaves out.
    let patch = json!({
        "spec": {
            "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            "service": {"port": port},
        },
    });
    services
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Waits until the APIService `name` reports Available.
pub async fn wait_for_apiservice(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    let services: Api<APIService> = Api::all(client.clone());
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let service = services.get_opt(name).await?;
        let condition = service
            .and_then(|s| s.status)
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Available");
        if condition.as_ref().is_some_and(|c| c.status == "True") {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            let why = condition.and_then(|c| c.message).unwrap_or_default();
            return Err(Error::Timeout {
                what: format!("APIService {name} to be Available ({why})"),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until something accepts connections on loopback `port` (the
/// webhooks: kube-apiserver is their only client).
pub async fn wait_for_tls(port: u16, timeout: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if std::time::Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("the webhooks on port {port} to accept connections"),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits until arktos-apiserver on `port` answers `/readyz` (storage
/// reachable, system tenant present).
pub async fn wait_for_ready(pki: &super::pki::Pki, port: u16, timeout: Duration) -> Result<()> {
    let client =
        super::kubeconfig::client(&format!("https://127.0.0.1:{port}"), pki, "admin").await?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("a valid request");
        if client
            .request_text(request)
            .await
            .is_ok_and(|body| body.trim() == "ok")
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("arktos-apiserver on port {port} to be ready"),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until kube-apiserver's OpenAPI v3 index lists `path`, so that
/// `kubectl explain` works as soon as the launcher returns.
pub async fn wait_for_openapi(client: &kube::Client, path: &str, timeout: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let request = http::Request::get("/openapi/v3")
            .body(Vec::new())
            .expect("a valid request");
        if let Ok(index) = client.request::<serde_json::Value>(request).await
            && index["paths"].get(path).is_some()
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("kube-apiserver's OpenAPI v3 to list {path}"),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Publishes where the tenant gateway is, for `kubectl tenant use`.
pub async fn publish_gateway(client: &kube::Client, url: &str, ca_pem: &str) -> Result<()> {
    let (namespace, name) = arktos_crds::client::GATEWAY_CONFIGMAP;
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), namespace);
    let map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "arktos"}},
        "data": {"url": url, "ca.crt": ca_pem},
    });
    maps.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&map),
    )
    .await?;
    Ok(())
}
