//! The webhooks' HTTPS listener. Replicas on one host share the port
//! (SO_REUSEPORT), so kube-apiserver's connections spread over them as
//! over the pods behind a Service.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpSocket;
use tokio_rustls::TlsAcceptor;

pub fn tls_config(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the serving certificate")?;
    // HTTP/1.1 only: kube-apiserver multiplexes HTTP/2 over one connection,
    // which would pin all its reviews to one replica; with HTTP/1.1 it
    // opens a connection per concurrent review and they spread.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds `address` so that other replicas may bind it too.
pub fn listen(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket
        .bind(address)
        .with_context(|| format!("binding {address}"))?;
    Ok(socket.listen(1024)?)
}

/// Serves `filter` over TLS, forever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<ServerConfig>,
    filter: warp::filters::BoxedFilter<(warp::reply::Response,)>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let service = warp::service(filter);
    loop {
        let Ok((tcp, remote)) = listener.accept().await else {
            continue;
        };
        // An answer in more than one write would wait for the client's
        // delayed ACK (40 ms) under Nagle.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                tracing::debug!(%remote, "TLS handshake failed");
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(service);
            if let Err(err) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%remote, error = %err, "webhook connection ended");
            }
        });
    }
}
