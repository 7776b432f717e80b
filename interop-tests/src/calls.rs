//! Making calls: any method path with raw bytes, metadata in, echoed metadata out.

use bytes::Bytes;
use http::uri::PathAndQuery;
use tonic::{
    Request, Response, Status,
    codegen::{Body, StdError},
    metadata::{MetadataKey, MetadataMap, MetadataValue},
};

/// The method the echo servers answer with the conformance `EchoResponse`.
pub const ECHO: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo";
/// The second conformance method.
pub const ECHO_TWO: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/EchoTwo";
/// The third conformance method, which the echo server itself answers UNIMPLEMENTED.
pub const ECHO_THREE: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/EchoThree";
/// The conformance echo service.
pub const ECHO_SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// The raw-bytes codec, from the echo crate (re-exported for the tests).
pub use grpcroute_echo::RawCodec;

/// Calls method `path` (`/pkg.Service/Method`) on `service` (a mesh channel, a tonic
/// channel, a layered stack) with an empty message and `metadata`.
///
/// # Errors
///
/// The call's status; an invalid path or metadata is `INVALID_ARGUMENT` before sending.
pub async fn call<T>(
    service: T,
    path: &str,
    metadata: &[(&str, &str)],
) -> Result<Response<Bytes>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    call_with(service, path, metadata, Bytes::new()).await
}

/// Like [`call`], with a request message body.
///
/// # Errors
///
/// As [`call`].
pub async fn call_with<T>(
    service: T,
    path: &str,
    metadata: &[(&str, &str)],
    message: Bytes,
) -> Result<Response<Bytes>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let path: PathAndQuery = path
        .parse()
        .map_err(|e| Status::invalid_argument(format!("path {path:?}: {e}")))?;
    let mut request = Request::new(message);
    for (key, value) in metadata {
        let key = MetadataKey::from_bytes(key.as_bytes())
            .map_err(|e| Status::invalid_argument(format!("metadata key {key:?}: {e}")))?;
        let value: MetadataValue<_> = value
            .parse()
            .map_err(|e| Status::invalid_argument(format!("metadata value {value:?}: {e}")))?;
        request.metadata_mut().append(key, value);
    }
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("service not ready: {}", e.into())))?;
    grpc.unary(request, path, RawCodec).await
}

/// An ASCII metadata value, if present.
pub fn metadata(md: &MetadataMap, key: &str) -> Option<String> {
    md.get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The backend (echo server name, i.e. pod name) that answered.
pub fn backend(md: &MetadataMap) -> Option<String> {
    metadata(md, grpcroute_echo::BACKEND_HEADER)
}

/// The value of request metadata `key` as the echo server received it (repeated keys
/// joined with `,`), if it received it.
pub fn echoed(md: &MetadataMap, key: &str) -> Option<String> {
    metadata(
        md,
        &format!(
            "{}{}",
            grpcroute_echo::REQUEST_HEADER_PREFIX,
            key.to_ascii_lowercase()
        ),
    )
}
