//! Prometheus metrics of the controller: per-RPC counts and latencies (a tower layer on the gRPC
//! servers), notify clients connected, objects per kind.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tonic::codegen::http;

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub notify_clients: IntGaugeVec,
    pub objects: IntGaugeVec,
    pub client_certs: IntCounterVec,
    pub notify_refused: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "controller_rpc_requests_total",
                "gRPC calls by method and initial status code",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "controller_rpc_seconds",
                "time to the response headers of a gRPC call",
            ),
            &["method"],
        )
        .expect("valid metric");
        let notify_clients = IntGaugeVec::new(
            Opts::new("controller_notify_clients", "connected notify clients"),
            &["client_type"],
        )
        .expect("valid metric");
        let objects = IntGaugeVec::new(
            Opts::new("controller_objects", "objects in the region"),
            &["kind"],
        )
        .expect("valid metric");
        let client_certs = IntCounterVec::new(
            Opts::new(
                "controller_client_certificates_total",
                "certificate requests of CRMs and Shepherds by result (issued, refused)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let notify_refused = IntCounterVec::new(
            Opts::new(
                "controller_notify_refused_total",
                "notify streams refused because the region is still loading, by the client type the hello names",
            ),
            &["client_type"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(notify_refused.clone()),
            Box::new(client_certs.clone()),
            Box::new(latency.clone()),
            Box::new(notify_clients.clone()),
            Box::new(objects.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Arc::new(Self {
            registry,
            requests,
            latency,
            client_certs,
            notify_refused,
            notify_clients,
            objects,
        })
    }
}

/// Tower layer recording every gRPC call in [`Metrics`].
#[derive(Clone)]
pub struct MetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // An error returned before any message travels in the headers; success codes in trailers.
            let code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0")
                .to_string();
            metrics
                .requests
                .with_label_values(&[method.as_str(), code.as_str()])
                .inc();
            metrics
                .latency
                .with_label_values(&[method.as_str()])
                .observe(start.elapsed().as_secs_f64());
            Ok(resp)
        })
    }
}
