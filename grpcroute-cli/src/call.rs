//! `grpcroute call`: N real unary calls through the mesh's channel, tallied by status,
//! backend, endpoint and latency. The distribution is the answer.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use grpcroute_client::{RoutedTo, code_name};
use grpcroute_echo::RawCodec;
use http::uri::PathAndQuery;
use serde::Serialize;
use tokio::time::Instant;
use tonic::{Code, Status, metadata::MetadataMap};
use tower::ServiceExt;

use crate::{
    InputError, Verdict,
    args::CallArgs,
    explain::{load_mesh, metadata},
    output::{self, Paint, Style, Table, percent, plain},
    progress::Progress,
};

/// The key under which calls that reached no backend or endpoint are counted.
const NONE: &str = "none";

/// The `--json` form.
#[derive(Debug, Serialize)]
struct Report {
    calls: u64,
    by_status: BTreeMap<String, u64>,
    by_backend: BTreeMap<String, u64>,
    by_endpoint: BTreeMap<String, u64>,
    latency_ms: Latency,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// One call's outcome.
#[derive(Debug)]
struct Sample {
    code: Code,
    message: String,
    routed: RoutedTo,
    latency: Duration,
}

pub(crate) async fn run(args: &CallArgs) -> Result<Verdict, InputError> {
    let (mesh, _held) = load_mesh(&args.mesh, &args.call).await?;
    let channel = mesh
        .channel(&args.call.to)
        .map_err(|e| InputError(format!("--to: {e}")))?;
    let path = PathAndQuery::try_from(args.call.method.as_str())
        .map_err(|e| InputError(format!("--method: {e}")))?;
    let headers = metadata(&args.call);

    let next = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let progress = Progress::start(u64::from(args.count), done.clone());
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(args.count) {
        let channel = channel.clone();
        let (path, headers, data) = (path.clone(), headers.clone(), args.data.clone());
        let (next, done, count, timeout) = (next.clone(), done.clone(), args.count, args.timeout);
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let call = OneCall {
                    data: data.clone(),
                    headers: headers.clone(),
                    path: path.clone(),
                    timeout,
                };
                samples.push(call.send(channel.clone()).await);
                done.fetch_add(1, Ordering::Relaxed);
            }
            samples
        }));
    }
    let mut samples = Vec::with_capacity(args.count as usize);
    for worker in workers {
        match worker.await {
            Ok(mut s) => samples.append(&mut s),
            Err(e) => return Err(InputError(format!("a call task failed: {e}"))),
        }
    }
    let elapsed = started.elapsed();
    progress.finish();

    let report = tally(&samples);
    if args.call.json {
        output::print_json(&report);
    } else {
        let heading = format!(
            "{} call{} to {} {} in {:.2} s\n\n",
            report.calls,
            if report.calls == 1 { "" } else { "s" },
            args.call.to,
            args.call.method,
            elapsed.as_secs_f64(),
        );
        let mut text = heading;
        human(&report, &samples, Style::detect(), &mut text);
        output::print(&text);
    }
    let all_ok = samples.iter().all(|s| s.code == Code::Ok);
    Ok(if args.call.expect_ok && !all_ok {
        Verdict::NotOk
    } else {
        Verdict::Ok
    })
}

/// One unary call with raw protobuf bytes.
struct OneCall {
    data: Bytes,
    headers: http::HeaderMap,
    path: PathAndQuery,
    timeout: Duration,
}

impl OneCall {
    async fn send(self, channel: grpcroute_client::Channel) -> Sample {
        // The mesh puts where it sent the call in the HTTP response's extensions; a failed
        // call's `Status` does not carry them, so take them before tonic reads the response.
        let slot: Arc<Mutex<Option<RoutedTo>>> = Arc::default();
        let seen = slot.clone();
        let service = channel.map_response(move |response: http::Response<tonic::body::Body>| {
            if let Some(routed) = response.extensions().get::<RoutedTo>() {
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(routed.clone());
            }
            response
        });
        let mut grpc = tonic::client::Grpc::new(service);
        let mut request = tonic::Request::from_parts(
            MetadataMap::from_headers(self.headers),
            tonic::Extensions::default(),
            self.data,
        );
        request.set_timeout(self.timeout);

        let started = Instant::now();
        let outcome = match grpc.ready().await {
            Ok(()) => tokio::time::timeout(self.timeout, grpc.unary(request, self.path, RawCodec))
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "no answer within {:?}",
                        self.timeout
                    )))
                }),
            Err(never) => match never {},
        };
        let latency = started.elapsed();
        let (code, message) = match outcome {
            Ok(_) => (Code::Ok, String::new()),
            Err(status) => (status.code(), status.message().to_string()),
        };
        let routed = slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        Sample {
            code,
            message,
            routed,
            latency,
        }
    }
}

fn tally(samples: &[Sample]) -> Report {
    let mut report = Report {
        calls: samples.len() as u64,
        by_status: BTreeMap::new(),
        by_backend: BTreeMap::new(),
        by_endpoint: BTreeMap::new(),
        latency_ms: latency(samples),
    };
    for s in samples {
        *report
            .by_status
            .entry(code_name(s.code).to_string())
            .or_default() += 1;
        // For an xDS listener, the cluster names the backend.
        let backend = s
            .routed
            .backend
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| s.routed.cluster.clone());
        *report
            .by_backend
            .entry(backend.unwrap_or_else(|| NONE.into()))
            .or_default() += 1;
        let endpoint = s.routed.endpoint.as_ref().map(ToString::to_string);
        *report
            .by_endpoint
            .entry(endpoint.unwrap_or_else(|| NONE.into()))
            .or_default() += 1;
    }
    report
}

/// Nearest-rank percentiles, in milliseconds rounded to the microsecond.
fn latency(samples: &[Sample]) -> Latency {
    let mut ms: Vec<f64> = samples
        .iter()
        .map(|s| s.latency.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if ms.is_empty() {
            return 0.0;
        }
        let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
        (ms[rank - 1] * 1000.0).round() / 1000.0
    };
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn human(report: &Report, samples: &[Sample], style: Style, out: &mut String) {
    let total = report.calls;
    let mut statuses = Table::new(&["STATUS", ">CALLS", ">SHARE", "FIRST MESSAGE"]);
    for (status, calls) in &report.by_status {
        let first = samples
            .iter()
            .find(|s| code_name(s.code) == status)
            .map(|s| output::one_line(&s.message))
            .unwrap_or_default();
        let paint = if status == "OK" {
            Paint::Good
        } else {
            Paint::Bad
        };
        statuses.row(vec![
            (status.clone(), paint),
            plain(calls.to_string()),
            plain(percent(*calls, total)),
            plain(first),
        ]);
    }
    statuses.render(style, out);
    for (title, counts) in [
        ("BACKEND", &report.by_backend),
        ("ENDPOINT", &report.by_endpoint),
    ] {
        out.push('\n');
        let mut table = Table::new(&[title, ">CALLS", ">SHARE"]);
        for (key, calls) in counts {
            let paint = if key == NONE {
                Paint::Dim
            } else {
                Paint::Plain
            };
            table.row(vec![
                (key.clone(), paint),
                plain(calls.to_string()),
                plain(percent(*calls, total)),
            ]);
        }
        table.render(style, out);
    }
    let l = &report.latency_ms;
    out.push_str(&format!(
        "\n{}  p50 {} ms  p90 {} ms  p99 {} ms  max {} ms\n",
        style.paint(Paint::Bold, "LATENCY"),
        l.p50,
        l.p90,
        l.p99,
        l.max
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(code: Code, ms: u64) -> Sample {
        Sample {
            code,
            message: String::new(),
            routed: RoutedTo::default(),
            latency: Duration::from_millis(ms),
        }
    }

    #[test]
    fn tallies_unrouted_calls_under_none() {
        let samples: Vec<Sample> = (1..=100)
            .map(|ms| {
                sample(
                    if ms <= 90 {
                        Code::Ok
                    } else {
                        Code::Unavailable
                    },
                    ms,
                )
            })
            .collect();
        let r = tally(&samples);
        assert_eq!(r.calls, 100);
        assert_eq!(r.by_status["OK"], 90);
        assert_eq!(r.by_status["UNAVAILABLE"], 10);
        assert_eq!(r.by_backend[NONE], 100);
        assert_eq!(r.by_endpoint[NONE], 100);
        assert_eq!(
            (
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.max
            ),
            (50.0, 90.0, 99.0, 100.0)
        );
    }
}
