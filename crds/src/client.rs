//! Tenant-aware clients for Rust users: a kube `Client` that sees one
//! tenant's API, made from an ordinary one's configuration.

use crate::naming::TenantName;

/// Where tenants reach the tenant gateway: published by Arktos in this
/// ConfigMap (keys `url` and `ca.crt`), readable by every authenticated user.
pub const GATEWAY_CONFIGMAP: (&str, &str) = ("kube-public", "arktos-gateway");

/// The server URL of tenant `tenant` on the gateway at `gateway`.
pub fn tenant_server(gateway: &str, tenant: &TenantName) -> String {
    format!("{}/tenants/{tenant}", gateway.trim_end_matches('/'))
}

/// `config` (same user and credentials) pointed at the tenant's API on the
/// gateway. `gateway_ca` is the PEM of the CA that signed the gateway's
/// serving certificate, when it is not the cluster's.
pub fn tenant_config(
    config: &kube::Config,
    gateway: &str,
    tenant: &TenantName,
    gateway_ca: Option<&[u8]>,
) -> Result<kube::Config, String> {
    let mut scoped = config.clone();
    scoped.cluster_url = tenant_server(gateway, tenant)
        .parse()
        .map_err(|e| format!("gateway URL {gateway:?}: {e}"))?;
    if let Some(pem) = gateway_ca {
        scoped.root_cert = Some(pem_certificates(pem));
    }
    scoped.tls_server_name = None;
    Ok(scoped)
}

/// A client of tenant `tenant` on the gateway, from an ordinary client's
/// configuration.
pub fn tenant_client(
    config: &kube::Config,
    gateway: &str,
    tenant: &TenantName,
    gateway_ca: Option<&[u8]>,
) -> Result<kube::Client, String> {
    let scoped = tenant_config(config, gateway, tenant, gateway_ca)?;
    kube::Client::try_from(scoped).map_err(|e| e.to_string())
}

/// DER certificates of a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let mut certificates = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            current = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            if let Some(body) = current.take()
                && let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body)
            {
                certificates.push(der);
            }
        } else if let Some(body) = current.as_mut() {
            body.push_str(line.trim());
        }
    }
    certificates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_a_config_at_the_tenant() {
        let config = kube::Config::new("https://10.0.0.1:6443".parse().unwrap());
        let tenant = TenantName::new("acme").unwrap();
        let scoped = tenant_config(&config, "https://gw.example:8443/", &tenant, None).unwrap();
        assert_eq!(
            scoped.cluster_url.to_string(),
            "https://gw.example:8443/tenants/acme"
        );
        assert!(tenant_config(&config, "not a url", &tenant, None).is_err());
    }
}
