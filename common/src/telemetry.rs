//! Tracing setup shared by every binary: human-readable logs by default, JSON logs on request, and
//! OpenTelemetry (OTLP/gRPC) span export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! The log level comes from `RUST_LOG` (default `info`). Each layer has its own filter: a global filter
//! at `warn` would also drop the INFO spans the OTLP exporter needs.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl LogFormat {
    /// JSON lines when `json` (a binary's `--log-json`), else human-readable.
    pub fn json(json: bool) -> Self {
        if json { Self::Json } else { Self::Human }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("setting up the OTLP exporter for {endpoint}: {source}")]
    Otlp {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("installing the tracing subscriber: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps the OpenTelemetry pipeline alive; flushes pending spans when dropped.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global tracing subscriber for the process `service`.
pub fn init(service: &'static str, format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    let env_filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let mut layers = vec![fmt.with_filter(env_filter()).boxed()];

    let mut provider = None;
    if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        // The exporter reads the endpoint (and headers, timeouts) from the standard OTEL_* variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|source| TelemetryError::Otlp { endpoint, source })?;
        let p = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let otel = tracing_opentelemetry::layer().with_tracer(p.tracer(service));
        layers.push(otel.with_filter(LevelFilter::INFO).boxed());
        provider = Some(p);
    }
    Registry::default().with(layers).try_init()?;
    Ok(TelemetryGuard { provider })
}
