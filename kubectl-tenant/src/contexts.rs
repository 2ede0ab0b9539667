//! Kubeconfig contexts that point at a tenant on the tenant gateway.

use std::path::PathBuf;

use anyhow::{Context, bail};
use arktos_crds::TenantName;
use arktos_crds::client::{GATEWAY_CONFIGMAP, tenant_server};
use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::config::{
    Cluster, Context as KubeContext, KubeConfigOptions, Kubeconfig, NamedCluster, NamedContext,
};

/// Where the gateway is and which CA signed it.
pub struct Gateway {
    pub url: String,
    pub ca_pem: Option<String>,
}

/// The kubeconfig file to read and write: the first of KUBECONFIG, or
/// ~/.kube/config.
fn path() -> PathBuf {
    if let Some(paths) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&paths).find(|p| !p.as_os_str().is_empty())
    {
        return first;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".kube").join("config")
}

pub fn load() -> anyhow::Result<(Kubeconfig, PathBuf)> {
    let path = path();
    let kubeconfig =
        Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok((kubeconfig, path))
}

pub fn save(kubeconfig: &Kubeconfig, path: &PathBuf) -> anyhow::Result<()> {
    let yaml = serde_yaml::to_string(kubeconfig)?;
    std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
}

pub async fn client(context: Option<&str>) -> anyhow::Result<kube::Client> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = kube::Config::from_kubeconfig(&options)
        .await
        .context("loading the kubeconfig")?;
    Ok(kube::Client::try_from(config)?)
}

/// Reads where the gateway is from the ConfigMap Arktos publishes.
pub async fn gateway(client: &kube::Client) -> anyhow::Result<Gateway> {
    let (namespace, name) = GATEWAY_CONFIGMAP;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = maps.get(name).await.with_context(|| {
        format!("reading {namespace}/{name} (is Arktos installed, with its gateway published?)")
    })?;
    let data = map.data.unwrap_or_default();
    let url = data
        .get("url")
        .cloned()
        .with_context(|| format!("{namespace}/{name} has no url"))?;
    Ok(Gateway {
        url,
        ca_pem: data.get("ca.crt").cloned(),
    })
}

/// The tenant a kubeconfig's current context points at, from its server URL.
pub fn current_tenant(kubeconfig: &Kubeconfig) -> Option<String> {
    let context_name = kubeconfig.current_context.as_deref()?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)?
        .context
        .as_ref()?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)?
        .cluster
        .as_ref()?;
    let server = cluster.server.as_deref()?;
    let (_, rest) = server.split_once("/tenants/")?;
    Some(rest.trim_end_matches('/').to_string())
}

/// Adds cluster `arktos-<tenant>` and context `<tenant>` (with the user of
/// the base context) to `kubeconfig`; switches to it if `switch`.
pub fn add_tenant_context(
    kubeconfig: &mut Kubeconfig,
    base_context: Option<&str>,
    tenant: &TenantName,
    gateway: &Gateway,
    switch: bool,
) -> anyhow::Result<()> {
    let base = base_context
        .map(str::to_string)
        .or_else(|| kubeconfig.current_context.clone())
        .context("no current context in the kubeconfig")?;
    let user = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == base)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.user.clone())
        .with_context(|| format!("no context {base:?} in the kubeconfig"))?;
    let Some(user) = user else {
        bail!("context {base:?} has no user to carry over");
    };
    let cluster_name = format!("arktos-{tenant}");
    let cluster = Cluster {
        server: Some(tenant_server(&gateway.url, tenant)),
        certificate_authority_data: gateway
            .ca_pem
            .as_ref()
            .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem)),
        ..Default::default()
    };
    kubeconfig.clusters.retain(|c| c.name != cluster_name);
    kubeconfig.clusters.push(NamedCluster {
        name: cluster_name.clone(),
        cluster: Some(cluster),
        other: Default::default(),
    });
    let context_name = tenant.as_str().to_string();
    kubeconfig.contexts.retain(|c| c.name != context_name);
    kubeconfig.contexts.push(NamedContext {
        name: context_name.clone(),
        // Every tenant has `default` (the tenant controller keeps it).
        context: Some(KubeContext {
            cluster: cluster_name,
            user: Some(user),
            namespace: Some("default".into()),
            ..Default::default()
        }),
        other: Default::default(),
    });
    if switch {
        kubeconfig.current_context = Some(context_name);
    }
    Ok(())
}

/// A kubeconfig holding only the tenant context and the base user.
pub fn standalone(
    kubeconfig: &Kubeconfig,
    base_context: Option<&str>,
    tenant: &TenantName,
    gateway: &Gateway,
) -> anyhow::Result<Kubeconfig> {
    let mut whole = kubeconfig.clone();
    add_tenant_context(&mut whole, base_context, tenant, gateway, true)?;
    let context = whole
        .contexts
        .iter()
        .find(|c| c.name == tenant.as_str())
        .cloned()
        .context("added above")?;
    let user_name = context
        .context
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    Ok(Kubeconfig {
        clusters: whole
            .clusters
            .iter()
            .filter(|c| c.name == format!("arktos-{tenant}"))
            .cloned()
            .collect(),
        auth_infos: whole
            .auth_infos
            .iter()
            .filter(|u| u.name == user_name)
            .cloned()
            .collect(),
        contexts: vec![context],
        current_context: Some(tenant.as_str().to_string()),
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_kubeconfig() -> Kubeconfig {
        serde_yaml::from_str(
            "apiVersion: v1\nkind: Config\nclusters: [{name: local, cluster: {server: 'https://127.0.0.1:6443'}}]\n\
             users: [{name: alice, user: {token: abc}}]\ncontexts: [{name: local, context: {cluster: local, user: alice}}]\n\
             current-context: local\n",
        )
        .unwrap()
    }

    #[test]
    fn use_adds_a_tenant_context_with_the_current_user() {
        let mut kubeconfig = mk_kubeconfig();
        let gateway = Gateway {
            url: "https://127.0.0.1:6451".into(),
            ca_pem: Some("PEM".into()),
        };
        let acme = TenantName::new("acme").unwrap();
        add_tenant_context(&mut kubeconfig, None, &acme, &gateway, true).unwrap();
        assert_eq!(kubeconfig.current_context.as_deref(), Some("acme"));
        assert_eq!(current_tenant(&kubeconfig).as_deref(), Some("acme"));
        let cluster = kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == "arktos-acme")
            .unwrap();
        assert_eq!(
            cluster.cluster.as_ref().unwrap().server.as_deref(),
            Some("https://127.0.0.1:6451/tenants/acme")
        );
        // Using it again replaces rather than duplicates.
        add_tenant_context(&mut kubeconfig, Some("local"), &acme, &gateway, true).unwrap();
        assert_eq!(kubeconfig.contexts.len(), 2);
        let alone = standalone(&mk_kubeconfig(), None, &acme, &gateway).unwrap();
        assert_eq!(
            (
                alone.clusters.len(),
                alone.auth_infos.len(),
                alone.contexts.len()
            ),
            (1, 1, 1)
        );
    }
}
