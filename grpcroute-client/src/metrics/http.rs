//! A minimal `/metrics` endpoint, for applications that have no HTTP server of their own.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::Full;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `registry` on `GET /metrics` (OpenMetrics text; every other path is 404) to every
/// HTTP/1.1 connection `listener` accepts, until the returned future is dropped. The mesh
/// opens no port itself: the application chooses the address and runs this (or serves
/// [`Metrics::encode`](crate::Metrics::encode) from its own server).
///
/// ```no_run
/// # async fn example(mesh: grpcroute_client::Mesh) -> std::io::Result<()> {
/// use std::sync::Arc;
/// let mut registry = grpcroute_client::prometheus_client::registry::Registry::default();
/// mesh.metrics().register(&mut registry);
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:9090").await?;
/// tokio::spawn(grpcroute_client::serve_metrics(listener, Arc::new(registry)));
/// # Ok(()) }
/// ```
pub async fn serve_metrics(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let response = respond(&req, &registry);
                async move { Ok::<_, Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%error, "metrics endpoint: connection ended");
            }
        });
    }
}

fn respond<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    if req.uri().path() != "/metrics" {
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return response;
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    }
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(OPENMETRICS));
    *response.body_mut() = Full::new(Bytes::from(text));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_registry_on_metrics_only() {
        let mut registry = Registry::default();
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("answers", "Answers given", counter.clone());
        counter.inc_by(42);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_metrics(listener, Arc::new(registry)));

        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains(OPENMETRICS), "{ok}");
        assert!(ok.contains("answers_total 42"), "{ok}");
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
