//! Adds `shardSelector` to the list and watch requests of one collection.

use std::task::{Context, Poll};

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[derive(Clone)]
pub struct ShardSelectorLayer {
    collection: String,
    parameter: String,
}

impl ShardSelectorLayer {
    pub fn new(collection: &str, selector: &str) -> Self {
        Self {
            collection: collection.trim_end_matches('/').to_string(),
            parameter: format!("shardSelector={}", encode(selector)),
        }
    }
}

impl<S> tower::Layer<S> for ShardSelectorLayer {
    type Service = ShardSelector<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShardSelector {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ShardSelector<S> {
    inner: S,
    layer: ShardSelectorLayer,
}

impl<S, B> tower::Service<http::Request<B>> for ShardSelector<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if request.method() == http::Method::GET && request.uri().path() == self.layer.collection {
            let uri = request.uri().clone();
            let query = match uri.query() {
                Some(q) if !q.is_empty() => format!("{q}&{}", self.layer.parameter),
                _ => self.layer.parameter.clone(),
            };
            let mut parts = uri.into_parts();
            if let Ok(path_and_query) = format!("{}?{query}", self.layer.collection).parse() {
                parts.path_and_query = Some(path_and_query);
                if let Ok(uri) = http::Uri::from_parts(parts) {
                    *request.uri_mut() = uri;
                }
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_selector() {
        assert_eq!(
            encode("shardRange(object.metadata.uid, '0x0', '0x1')"),
            "shardRange%28object.metadata.uid%2C%20%270x0%27%2C%20%270x1%27%29"
        );
    }
}
