//! The local cluster's certificates: a cluster CA (serving and client
//! certificates), a separate front-proxy CA for the aggregation layer, and
//! the service-account signing key.
//!
//! Generated once per cluster folder and kept, so a restarted cluster keeps
//! its identity and the tokens it issued. Later components (our aggregated
//! API server, webhooks) get certificates from the same CAs through
//! [`Pki::issue`].

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{IoContext, Result};

const CLUSTER_CA: &str = "ca";
const FRONT_PROXY_CA: &str = "front-proxy-ca";
/// The name kube-apiserver's requestheader allow-list admits; the
/// aggregator presents the certificate carrying it.
pub const FRONT_PROXY_CLIENT_CN: &str = "front-proxy-client";

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    ServerAndClient,
}

/// A request for a leaf certificate.
#[derive(Clone, Debug)]
pub struct Leaf<'a> {
    /// File stem: `<name>.crt` and `<name>.key`.
    pub name: &'a str,
    pub common_name: &'a str,
    pub organizations: &'a [&'a str],
    pub dns_names: &'a [&'a str],
    /// Beside 127.0.0.1, which every leaf names.
    pub ip_addresses: &'a [std::net::IpAddr],
    pub usage: Usage,
}

/// The PKI folder of one cluster.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.cert(CLUSTER_CA)
    }

    pub fn ca_key(&self) -> PathBuf {
        self.key(CLUSTER_CA)
    }

    pub fn front_proxy_ca_cert(&self) -> PathBuf {
        self.cert(FRONT_PROXY_CA)
    }

    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }

    /// The public half, in the form kube-apiserver's verifier reads.
    pub fn service_account_public_key(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    /// Creates the CAs, the service-account key and the control plane's
    /// certificates unless they exist already.
    pub fn ensure_control_plane(&self, apiserver_dns: &[&str]) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .context(|| format!("creating {}", self.dir.display()))?;
        self.ensure_ca(CLUSTER_CA, "arktos-local-ca")?;
        self.ensure_ca(FRONT_PROXY_CA, "arktos-local-front-proxy-ca")?;
        if !self.service_account_public_key().exists() {
            let key = KeyPair::generate()?;
            self.write_private(&self.service_account_key(), &key.serialize_pem())?;
            write(&self.service_account_public_key(), &key.public_key_pem())?;
        }
        let mut apiserver_names = vec!["localhost", "kubernetes", "kubernetes.default"];
        apiserver_names.extend_from_slice(&[
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]);
        apiserver_names.extend_from_slice(apiserver_dns);
        let leaves = [
            Leaf {
                name: "kube-apiserver",
                common_name: "kube-apiserver",
                organizations: &[],
                dns_names: &apiserver_names,
                ip_addresses: &[],
                usage: Usage::Server,
            },
            Leaf {
                name: "admin",
                common_name: "kubernetes-admin",
                organizations: &["system:masters"],
                dns_names: &[],
                ip_addresses: &[],
                usage: Usage::Client,
            },
            Leaf {
                name: "kube-controller-manager",
                common_name: "system:kube-controller-manager",
                organizations: &[],
                dns_names: &["localhost"],
                ip_addresses: &[],
                usage: Usage::ServerAndClient,
            },
            Leaf {
                name: "kube-scheduler",
                common_name: "system:kube-scheduler",
                organizations: &[],
                dns_names: &["localhost"],
                ip_addresses: &[],
                usage: Usage::ServerAndClient,
            },
            Leaf {
                name: "kwok",
                common_name: "system:kwok-controller",
                organizations: &["system:masters"],
                dns_names: &["localhost"],
                ip_addresses: &[],
                usage: Usage::ServerAndClient,
            },
            Leaf {
                name: "kube-apiserver-kubelet-client",
                common_name: "kube-apiserver-kubelet-client",
                organizations: &["system:masters"],
                dns_names: &[],
                ip_addresses: &[],
                usage: Usage::Client,
            },
        ];
        for leaf in &leaves {
            if !self.cert(leaf.name).exists() {
                self.issue(CLUSTER_CA, leaf)?;
            }
        }
        if !self.cert(FRONT_PROXY_CLIENT_CN).exists() {
            self.issue(
                FRONT_PROXY_CA,
                &Leaf {
                    name: FRONT_PROXY_CLIENT_CN,
                    common_name: FRONT_PROXY_CLIENT_CN,
                    organizations: &[],
                    dns_names: &[],
                    ip_addresses: &[],
                    usage: Usage::Client,
                },
            )?;
        }
        Ok(())
    }

    /// Issues (or re-issues) a leaf certificate signed by the cluster CA.
    pub fn issue_from_cluster_ca(&self, leaf: &Leaf<'_>) -> Result<()> {
        self.issue(CLUSTER_CA, leaf)
    }

    fn issue(&self, ca: &str, leaf: &Leaf<'_>) -> Result<()> {
        let ca_key = KeyPair::from_pem(&read(&self.key(ca))?)?;
        let issuer = Issuer::new(ca_params(ca_common_name(ca)), ca_key);
        let mut params = CertificateParams::new(
            leaf.dns_names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )?;
        params.subject_alt_names.push(rcgen::SanType::IpAddress(
            std::net::Ipv4Addr::LOCALHOST.into(),
        ));
        for ip in leaf.ip_addresses {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(*ip));
        }
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name);
        for org in leaf.organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *org);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match leaf.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        self.write_private(&self.key(leaf.name), &key.serialize_pem())?;
        write(&self.cert(leaf.name), &cert.pem())
    }

    fn ensure_ca(&self, name: &str, common_name: &str) -> Result<()> {
        if self.cert(name).exists() && self.key(name).exists() {
            return Ok(());
        }
        let key = KeyPair::generate()?;
        let cert = ca_params(common_name).self_signed(&key)?;
        self.write_private(&self.key(name), &key.serialize_pem())?;
        write(&self.cert(name), &cert.pem())
    }

    fn write_private(&self, path: &Path, pem: &str) -> Result<()> {
        write(path, pem)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .context(|| format!("restricting {}", path.display()))
    }
}

fn ca_common_name(ca: &str) -> &'static str {
    if ca == FRONT_PROXY_CA {
        "arktos-local-front-proxy-ca"
    } else {
        "arktos-local-ca"
    }
}

/// A CA's parameters are fixed, so its issuer can be rebuilt from them and
/// the stored key to sign more certificates later.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    params
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_pki_is_created_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("arktos-pki-test-{}", std::process::id()));
        let pki = Pki::new(&dir);
        pki.ensure_control_plane(&["extra.example"]).unwrap();
        let ca = std::fs::read_to_string(pki.ca_cert()).unwrap();
        let admin = std::fs::read_to_string(pki.cert("admin")).unwrap();
        pki.ensure_control_plane(&[]).unwrap();
        assert_eq!(ca, std::fs::read_to_string(pki.ca_cert()).unwrap());
        assert_eq!(admin, std::fs::read_to_string(pki.cert("admin")).unwrap());
        assert!(pki.front_proxy_ca_cert().exists());
        assert!(pki.cert(FRONT_PROXY_CLIENT_CN).exists());
        assert!(pki.service_account_key().exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
