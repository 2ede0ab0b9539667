//! Reaching a partition: the kubeconfig its Secret (in the root cluster)
//! holds, read from the one namespace Arktos' components read Secrets in.
//! One way for arktos-apiserver's routes and probe and for the operators.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::SecretKeyRef;

/// How long a connection to a partition may take to open: a partition that
/// is down must fail its tenants' requests promptly, not hang them.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(1);

/// The kubeconfig text the Secret `secret` holds; `namespace` is the only
/// namespace whose Secrets may be read.
pub async fn kubeconfig_text(
    root: &kube::Client,
    namespace: &str,
    secret: &SecretKeyRef,
) -> Result<String, String> {
    if secret.namespace != namespace {
        return Err(format!(
            "the kubeconfig Secret must be in {namespace} (Arktos reads Secrets there only)"
        ));
    }
    let where_ = format!("Secret {}/{}", secret.namespace, secret.name);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(root.clone(), namespace);
    let found = secrets
        .get_opt(&secret.name)
        .await
        .map_err(|e| format!("reading {where_}: {e}"))?
        .ok_or_else(|| format!("{where_} does not exist"))?;
    let bytes = found
        .data
        .unwrap_or_default()
        .remove(secret.key())
        .ok_or_else(|| format!("{where_} has no key {:?}", secret.key()))?;
    String::from_utf8(bytes.0).map_err(|_| format!("the kubeconfig in {where_} is not text"))
}

/// A client for the partition the kubeconfig `text` reaches.
pub async fn client(text: &str) -> Result<kube::Client, String> {
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|e| format!("the kubeconfig: {e}"))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("the kubeconfig: {e}"))?;
    config.connect_timeout = Some(CONNECT_WITHIN);
    kube::Client::try_from(config).map_err(|e| format!("a client: {e}"))
}
