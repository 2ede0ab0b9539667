//! A CRI client over a unix socket: containerd behind arktos-node (every
//! non-VM call is forwarded to it unchanged), and benchmarks and tools.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Clone)]
pub struct CriClient {
    channel: Channel,
}

impl CriClient {
    /// A lazy channel: arktos-node starts before containerd is up, and a
    /// restarted containerd is reconnected to by itself.
    pub fn connect(socket: PathBuf) -> anyhow::Result<Self> {
        let channel = Endpoint::try_from("http://[::]:50051")?
            // Message sizes as the kubelet allows them (16 MiB).
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }));
        Ok(Self { channel })
    }

    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20)
    }

    pub fn image(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20)
    }
}
