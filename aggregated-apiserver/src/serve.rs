//! HTTPS serving. warp 0.4 has no TLS of its own: rustls terminates TLS,
//! hyper-util serves each connection, and the warp filter answers. The
//! client certificate is judged once per connection and its verdict rides
//! along with every request of that connection as a request extension.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::DistinguishedName;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::{Error, Result};

/// What the client certificate of a connection proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerCertificate {
    /// No certificate.
    None,
    /// The aggregator (front proxy): identity headers on this connection
    /// are trusted.
    FrontProxy { common_name: String },
    /// A user certificate signed by the cluster's client CA.
    User { name: String, groups: Vec<String> },
    /// A certificate no trusted CA signed (or a front-proxy certificate
    /// whose name is not allowed): it proves nothing.
    Untrusted { reason: String },
}

/// The CAs a client certificate may chain to, from
/// `kube-system/extension-apiserver-authentication`.
pub struct TrustAnchors {
    front_proxy: Option<Arc<dyn ClientCertVerifier>>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
    /// Empty: any name signed by the front-proxy CA.
    allowed_names: Vec<String>,
    hints: Vec<DistinguishedName>,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("front_proxy", &self.front_proxy.is_some())
            .field("clients", &self.clients.is_some())
            .field("allowed_names", &self.allowed_names)
            .finish()
    }
}

impl TrustAnchors {
    pub fn new(
        front_proxy_ca_pem: Option<&str>,
        client_ca_pem: Option<&str>,
        allowed_names: Vec<String>,
    ) -> Result<Self> {
        let mut hints = Vec::new();
        let mut verifier = |pem: Option<&str>| -> Result<Option<Arc<dyn ClientCertVerifier>>> {
            let Some(pem) = pem else { return Ok(None) };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert =
                    cert.map_err(|e| Error::Config(format!("reading a CA certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("adding a CA certificate: {e}")))?;
            }
            hints.extend(roots.subjects());
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .allow_unauthenticated()
                .build()
                .map_err(|e| Error::Config(format!("building a client verifier: {e}")))?;
            Ok(Some(verifier))
        };
        let front_proxy = verifier(front_proxy_ca_pem)?;
        let clients = verifier(client_ca_pem)?;
        Ok(Self {
            front_proxy,
            clients,
            allowed_names,
            hints,
        })
    }

    /// Judges the certificate chain a client presented.
    pub fn classify(&self, chain: Option<&[CertificateDer<'_>]>) -> PeerCertificate {
        let Some((end_entity, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return PeerCertificate::None;
        };
        let now = UnixTime::now();
        let verifies = |verifier: &Option<Arc<dyn ClientCertVerifier>>| {
            verifier
                .as_ref()
                .is_some_and(|v| v.verify_client_cert(end_entity, intermediates, now).is_ok())
        };
        let Ok((common_name, organizations)) = subject(end_entity) else {
            return PeerCertificate::Untrusted {
                reason: "the client certificate cannot be parsed".into(),
            };
        };
        if verifies(&self.front_proxy) {
            if self.allowed_names.is_empty() || self.allowed_names.contains(&common_name) {
                return PeerCertificate::FrontProxy { common_name };
            }
            return PeerCertificate::Untrusted {
                reason: format!(
                    "front-proxy certificate {common_name:?} is not in the allowed names"
                ),
            };
        }
        if verifies(&self.clients) {
            return PeerCertificate::User {
                name: common_name,
                groups: organizations,
            };
        }
        PeerCertificate::Untrusted {
            reason: "the client certificate is not signed by a trusted certificate authority"
                .into(),
        }
    }
}

fn subject(cert: &CertificateDer<'_>) -> std::result::Result<(String, Vec<String>), ()> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| ())?;
    let subject = parsed.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Ok((common_name, organizations))
}

/// Asks for a client certificate but lets the handshake succeed whatever
/// the certificate: as kube-apiserver does, trust is decided per request
/// (see [`TrustAnchors::classify`]), so an untrusted certificate earns a
/// 401 `Status` instead of a bare TLS alert. The client must still prove
/// it holds the certificate's key (the handshake signature is verified).
#[derive(Debug)]
struct RequestClientCertificate {
    signatures: Arc<dyn ClientCertVerifier>,
    hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for RequestClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.signatures
            .verify_tls12_signature(message, cert, dss)
            .inspect_err(|e| log_refused_handshake(cert, e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.signatures
            .verify_tls13_signature(message, cert, dss)
            .inspect_err(|e| log_refused_handshake(cert, e))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

/// Says why a client's handshake failed: the TLS alert the client sees
/// ("unknown certificate") does not.
fn log_refused_handshake(cert: &CertificateDer<'_>, error: &rustls::Error) {
    let reason = match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, parsed)) if parsed.version() == x509_parser::x509::X509Version::V1 => {
            "an X.509 v1 client certificate (kube-apiserver accepts these; this server's TLS library reads v3 only): issue it with extensions, e.g. `openssl x509 -req -extfile <(printf 'basicConstraints=CA:FALSE')`".to_string()
        }
        Ok(_) => format!("the client certificate's handshake signature does not verify: {error}"),
        Err(e) => format!("the client certificate cannot be parsed: {e}"),
    };
    tracing::warn!(%reason, "refused a TLS handshake");
}

/// The TLS configuration of a listener: its serving certificate, and
/// client certificates requested (and judged later) as described above.
pub fn tls_config(
    cert_file: &Path,
    key_file: &Path,
    anchors: &TrustAnchors,
) -> Result<Arc<ServerConfig>> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| Error::Config(format!("reading {}: {e}", p.display())))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert_file)?)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Config(format!("reading {}: {e}", cert_file.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?)
        .map_err(|e| Error::Config(format!("reading {}: {e}", key_file.display())))?;
    let signatures = anchors
        .front_proxy
        .clone()
        .or_else(|| anchors.clients.clone())
        .ok_or_else(|| Error::Config("no client CA: cannot authenticate anyone".into()))?;
    let verifier = Arc::new(RequestClientCertificate {
        signatures,
        hints: anchors.hints.clone(),
    });
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("serving certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Behind kube-apiserver's aggregation layer.
    Aggregated,
    /// The tenant gateway, reached by clients directly.
    Gateway,
}

/// The remote address of a request's connection.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

/// The client side of a connection upgrade (exec, attach, port-forward),
/// taken once by the handler that bridges it to kube-apiserver.
#[derive(Clone)]
pub struct UpgradeSlot(Arc<std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>>);

impl UpgradeSlot {
    fn new(upgrade: hyper::upgrade::OnUpgrade) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(upgrade))))
    }

    pub fn take(&self) -> Option<hyper::upgrade::OnUpgrade> {
        self.0.lock().ok()?.take()
    }
}

impl std::fmt::Debug for UpgradeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradeSlot")
    }
}

/// The API as warp serves it.
pub type ApiFilter = warp::filters::BoxedFilter<(warp::reply::Response,)>;

/// Serves `filter` over TLS on `listener`, forever.
pub async fn serve(
    listener: TcpListener,
    kind: Listener,
    tls: Arc<ServerConfig>,
    anchors: Arc<TrustAnchors>,
    filter: ApiFilter,
) {
    let acceptor = TlsAcceptor::from(tls);
    let service = warp::service(filter);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                continue;
            }
        };
        // Lists and watches go out in many small writes: without this, Nagle
        // holds each one back until the client's delayed ACK (40 ms).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let anchors = anchors.clone();
        let service = service.clone();
        tokio::spawn(serve_connection(
            tcp, remote, kind, acceptor, anchors, service,
        ));
    }
}

async fn serve_connection<S>(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    kind: Listener,
    acceptor: TlsAcceptor,
    anchors: Arc<TrustAnchors>,
    service: S,
) where
    S: Service<
            http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(err) => {
            tracing::debug!(%remote, error = %err, "TLS handshake failed");
            return;
        }
    };
    let mut peer = anchors.classify(tls.get_ref().1.peer_certificates());
    if kind == Listener::Gateway && matches!(peer, PeerCertificate::FrontProxy { .. }) {
        // Clients reach the gateway directly: nobody vouches for identity
        // headers there, whatever certificate is shown.
        peer = PeerCertificate::Untrusted {
            reason: "front-proxy certificates are not accepted on the tenant gateway".into(),
        };
    }
    let per_request =
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            // warp hands extensions out by clone; a pending upgrade is not
            // Clone, so it rides in a slot the handler can take it from.
            if let Some(upgrade) = request
                .extensions_mut()
                .remove::<hyper::upgrade::OnUpgrade>()
            {
                request.extensions_mut().insert(UpgradeSlot::new(upgrade));
            }
            request.extensions_mut().insert(peer.clone());
            request.extensions_mut().insert(RemoteAddr(remote));
            request.extensions_mut().insert(kind);
            let mut service = service.clone();
            async move { service.call(request).await }
        });
    let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(tls), per_request)
        .await;
    if let Err(err) = served {
        tracing::debug!(%remote, error = %err, "connection ended with an error");
    }
}
