//! Kubeconfig files for the local cluster's users and components.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::pki::Pki;
use crate::{IoContext, Result};

/// Writes a kubeconfig for `server` that authenticates with the client
/// certificate `<identity>.crt` of `pki`. Certificates are embedded, so the
/// file can be copied elsewhere.
pub fn write(path: &Path, cluster: &str, server: &str, pki: &Pki, identity: &str) -> Result<()> {
    let yaml = render(cluster, server, pki, identity)?;
    // Written aside and renamed into place: a process reading the file
    // (another replica starting) never sees it half written.
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, yaml).context(|| format!("writing {}", aside.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o600))
        .context(|| format!("restricting {}", aside.display()))?;
    std::fs::rename(&aside, path).context(|| format!("replacing {}", path.display()))
}

/// The kubeconfig YAML for `server` as `identity`.
fn render(cluster: &str, server: &str, pki: &Pki, identity: &str) -> Result<String> {
    let read = |p: std::path::PathBuf| -> Result<String> {
        let bytes = std::fs::read(&p).context(|| format!("reading {}", p.display()))?;
        Ok(STANDARD.encode(bytes))
    };
    let user = format!("{cluster}-{identity}");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server,
            "certificate-authority-data": read(pki.ca_cert())?,
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": read(pki.cert(identity))?,
            "client-key-data": read(pki.key(identity))?,
        }}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    });
    Ok(serde_yaml::to_string(&config)?)
}

/// A kube client for `server` presenting any certificate, with extra
/// request headers (as the front proxy sends them).
pub async fn client_with(
    server: &str,
    ca_cert: &Path,
    cert: &Path,
    key: &Path,
    headers: &[(&str, &str)],
) -> Result<kube::Client> {
    let read = |p: &Path| std::fs::read(p).context(|| format!("reading {}", p.display()));
    let uri: http::Uri = server
        .parse()
        .map_err(|e| crate::Error::Other(format!("bad server URL {server}: {e}")))?;
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(vec![pem_to_der(&read(ca_cert)?)?]);
    config.auth_info.client_certificate_data = Some(STANDARD.encode(read(cert)?));
    config.auth_info.client_key_data = Some(STANDARD.encode(read(key)?).into());
    config.connect_timeout = Some(std::time::Duration::from_secs(2));
    config.read_timeout = Some(std::time::Duration::from_secs(30));
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| crate::Error::Other(e.to_string()))?;
        let value =
            http::HeaderValue::from_str(value).map_err(|e| crate::Error::Other(e.to_string()))?;
        config.headers.push((name, value));
    }
    Ok(kube::Client::try_from(config)?)
}

fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD
        .decode(body)
        .map_err(|e| crate::Error::Other(format!("reading a PEM certificate: {e}")))
}

/// A kube client for `server` as `identity`, trusting the cluster CA.
pub async fn client(server: &str, pki: &Pki, identity: &str) -> Result<kube::Client> {
    // Built in memory: concurrent callers share no file.
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&render("probe", server, pki, identity)?)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.connect_timeout = Some(std::time::Duration::from_secs(2));
    config.read_timeout = Some(std::time::Duration::from_secs(30));
    Ok(kube::Client::try_from(config)?)
}
