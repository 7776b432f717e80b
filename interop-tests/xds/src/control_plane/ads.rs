//! The ADS service: one task per stream that reads requests, updates the stream's
//! subscriptions and sends what is due, and obeys the control plane's commands.

use std::{collections::HashMap, sync::Arc};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::AggregatedDiscoveryService,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{
    Shared,
    sotw::{ResponsePolicy, Subscription},
};
use crate::ResourceType;

/// What the control plane tells a stream.
#[derive(Debug)]
pub(crate) enum StreamCommand {
    /// Something changed: send whatever is due.
    Push,
    /// Send this response as is (to streams of one node).
    Raw(DiscoveryResponse),
    /// End the stream with this status.
    End(Status),
}

#[derive(Clone, Debug)]
pub(crate) struct Ads {
    pub(crate) shared: Arc<Shared>,
}

type Out = mpsc::Sender<Result<DiscoveryResponse, Status>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let Some((id, commands)) = self.shared.open_stream() else {
            self.shared.log.refused();
            return Err(Status::unavailable(
                "the test control plane is refusing streams",
            ));
        };
        let (out, rx) = mpsc::channel(64);
        tokio::spawn(run_stream(
            self.shared.clone(),
            id,
            request.into_inner(),
            commands,
            out,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "the test control plane serves State-of-the-World ADS only",
        ))
    }
}

struct StreamState {
    id: u64,
    node_id: Option<String>,
    subscriptions: HashMap<ResourceType, Subscription>,
}

impl StreamState {
    fn node(&self) -> &str {
        self.node_id.as_deref().unwrap_or("")
    }
}

async fn run_stream(
    shared: Arc<Shared>,
    id: u64,
    mut requests: Streaming<DiscoveryRequest>,
    mut commands: mpsc::UnboundedReceiver<StreamCommand>,
    out: Out,
) {
    let mut stream = StreamState {
        id,
        node_id: None,
        subscriptions: HashMap::new(),
    };
    let ended = loop {
        tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => {
                    if stream.node_id.is_none() {
                        let node = request.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
                        shared.set_stream_node(id, &node);
                        shared.log.stream(id, &node, None);
                        stream.node_id = Some(node);
                    }
                    shared.log.request(id, stream.node(), &request);
                    if let Some(kind) = ResourceType::from_type_url(&request.type_url) {
                        stream
                            .subscriptions
                            .entry(kind)
                            .or_default()
                            .on_request(kind, &request.resource_names);
                        if send_due(&shared, &mut stream, &out, &[kind]).await.is_err() {
                            break "the response stream was dropped".to_string();
                        }
                    }
                }
                Ok(None) => break "the client closed the stream".to_string(),
                Err(status) => break format!("receive error: {status}"),
            },
            command = commands.recv() => match command {
                Some(StreamCommand::Push) => {
                    if send_due(&shared, &mut stream, &out, &ResourceType::ALL).await.is_err() {
                        break "the response stream was dropped".to_string();
                    }
                }
                Some(StreamCommand::Raw(response)) => {
                    let names = response.resources.iter().map(raw_name).collect();
                    shared.log.response(id, stream.node(), &response, names, true);
                    if out.send(Ok(response)).await.is_err() {
                        break "the response stream was dropped".to_string();
                    }
                }
                Some(StreamCommand::End(status)) => {
                    let why = format!("ended by the control plane: {}", status.message());
                    let _ = out.send(Err(status)).await;
                    break why;
                }
                None => break "the control plane was dropped".to_string(),
            },
        }
    };
    shared.close_stream(id);
    shared.log.stream(id, stream.node(), Some(ended));
}

/// Sends every response due on this stream for `kinds`.
async fn send_due(
    shared: &Shared,
    stream: &mut StreamState,
    out: &Out,
    kinds: &[ResourceType],
) -> Result<(), ()> {
    for &kind in kinds {
        let Some(subscription) = stream.subscriptions.get_mut(&kind) else {
            continue;
        };
        let response = {
            let mut state = shared.lock_state();
            let state = &mut *state;
            let policy = ResponsePolicy {
                paused: state.paused,
                stopped: state.stopped.get(&kind),
                override_: state.overrides.get(&kind),
            };
            let snapshot = state.types.entry(kind).or_default();
            let nonces = &mut state.next_nonce;
            subscription.due(kind, snapshot, &policy, || {
                *nonces += 1;
                nonces.to_string()
            })
        };
        if let Some((response, names)) = response {
            shared
                .log
                .response(stream.id, stream.node(), &response, names, false);
            out.send(Ok(response)).await.map_err(|_| ())?;
        }
    }
    Ok(())
}

/// The name inside a packed resource, for the log (its type url if it does not decode).
fn raw_name(any: &envoy_types::pb::google::protobuf::Any) -> String {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    };
    use prost::Message as _;
    let bytes = any.value.as_slice();
    let name = match ResourceType::from_type_url(&any.type_url) {
        Some(ResourceType::Listener) => Listener::decode(bytes).ok().map(|m| m.name),
        Some(ResourceType::RouteConfiguration) => {
            RouteConfiguration::decode(bytes).ok().map(|m| m.name)
        }
        Some(ResourceType::Cluster) => Cluster::decode(bytes).ok().map(|m| m.name),
        Some(ResourceType::ClusterLoadAssignment) => ClusterLoadAssignment::decode(bytes)
            .ok()
            .map(|m| m.cluster_name),
        None => None,
    };
    name.unwrap_or_else(|| format!("<{}>", any.type_url))
}
