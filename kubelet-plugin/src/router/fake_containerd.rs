//! containerd as a recorder, for the router's unit tests: a gRPC server on
//! a unix socket that notes each CRI method called and answers it as the
//! test scripted, by default with an empty message (every CRI answer
//! decodes from one, as its default).

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::cri_client::CriClient;
use crate::ids::new_id;

/// What the fake answers a method with.
#[derive(Clone)]
pub enum Reply {
    /// This message (prost-encoded).
    Message(Vec<u8>),
    Fails(tonic::Code, &'static str),
}

pub struct FakeContainerd {
    calls: Arc<Mutex<Vec<String>>>,
    socket: PathBuf,
    pub client: CriClient,
}

impl Drop for FakeContainerd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl FakeContainerd {
    /// Serves until the test ends; `replies` by method name
    /// (`ListPodSandbox`).
    pub fn start(replies: HashMap<&'static str, Reply>) -> Self {
        let socket = std::env::temp_dir().join(format!("fake-cri-{}.sock", new_id()));
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind fake containerd");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(replies);
        let recorded = calls.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (calls, replies) = (recorded.clone(), replies.clone());
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let method = req
                        .uri()
                        .path()
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    calls.lock().unwrap().push(method.clone());
                    let reply = replies.get(method.as_str()).cloned();
                    async move { Ok::<_, Infallible>(answer(reply)) }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self {
            calls,
            client: CriClient::connect(socket.clone()).expect("fake containerd client"),
            socket,
        }
    }

    /// The methods called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

type Body = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A gRPC answer: the message then `grpc-status: 0` in the trailers, or a
/// failure in the headers alone (gRPC's trailers-only form).
fn answer(reply: Option<Reply>) -> hyper::Response<Body> {
    let response = hyper::Response::builder().header("content-type", "application/grpc");
    let message = match reply {
        Some(Reply::Fails(code, message)) => {
            return response
                .header("grpc-status", (code as i32).to_string())
                .header("grpc-message", message)
                .body(StreamBody::new(futures::stream::iter(Vec::new())))
                .unwrap();
        }
        Some(Reply::Message(bytes)) => bytes,
        None => Vec::new(),
    };
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let frames = vec![
        Ok(Frame::data(Bytes::from(framed))),
        Ok(Frame::trailers(trailers)),
    ];
    response
        .body(StreamBody::new(futures::stream::iter(frames)))
        .unwrap()
}
