//! Each process's `/metrics` (Prometheus text format, from the `prometheus-client` crate) and,
//! for gateways, `/connections` (JSON), served by axum. The counters and gauges stay plain
//! atomics in each role's `Stats` (the hot paths never take a lock for them) and are read at
//! scrape time; the histograms are the crate's, observed where the time is spent.

use anyhow::Context as _;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What a process exposes.
#[derive(Clone)]
pub enum Source {
    Register(Arc<register::stats::Stats>),
    Gateway(Arc<gateway::Stats>, gateway::Lister),
    /// A worker, with the chat's metrics when it runs the chat.
    Business(Arc<business::Stats>, Option<Arc<events::metrics::Metrics>>),
    /// A process that runs the chat outside a worker (`line`, `api`), named by its role.
    Chat(&'static str, Arc<events::metrics::Metrics>),
}

impl Source {
    fn role(&self) -> &'static str {
        match self {
            Source::Register(_) => "register",
            Source::Gateway(..) => "gateway",
            Source::Business(..) => "business",
            Source::Chat(role, _) => role,
        }
    }

    fn samples(&self) -> Vec<register::stats::Sample> {
        match self {
            Source::Register(s) => s.snapshot(),
            Source::Gateway(s, _) => s.snapshot(),
            Source::Business(s, _) => s.snapshot(),
            Source::Chat(..) => Vec::new(),
        }
    }

    /// The registry scraped at `/metrics`: `switchboard_*{role=…}` and the process's own.
    fn registry(&self) -> Registry {
        let mut top = Registry::default();
        top.register_collector(Box::new(ProcessUsage));
        let ours = top.sub_registry_with_prefix("switchboard").sub_registry_with_label(("role".into(), self.role().into()));
        ours.register_collector(Box::new(Samples(self.clone())));
        let distributions = match self {
            Source::Register(_) | Source::Chat(..) => Vec::new(),
            Source::Gateway(s, _) => s.distributions(),
            Source::Business(s, _) => s.distributions(),
        };
        for (name, help, histogram) in distributions {
            ours.register(name, help, histogram);
        }
        if let Source::Business(_, Some(chat)) | Source::Chat(_, chat) = self {
            chat.register(ours);
        }
        top
    }
}

/// A role's counters and gauges, read when scraped.
struct Samples(Source);

impl std::fmt::Debug for Samples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Samples({})", self.0.role())
    }
}

impl Collector for Samples {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, counter, value) in self.0.samples() {
            if counter {
                // The encoder adds `_total` to counters itself.
                let metric = ConstCounter::new(value);
                let name = name.strip_suffix("_total").unwrap_or(name);
                metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
            } else {
                let metric = ConstGauge::new(value as i64);
                metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// CPU seconds and resident memory, as every Prometheus client names them.
#[derive(Debug)]
struct ProcessUsage;

impl Collector for ProcessUsage {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (cpu, rss) = crate::supervisor::status::proc_usage(std::process::id());
        let cpu = ConstCounter::new(cpu);
        cpu.encode(encoder.encode_descriptor("process_cpu_seconds", "CPU time used, user and system", None, cpu.metric_type())?)?;
        let rss = ConstGauge::new(rss as i64);
        rss.encode(encoder.encode_descriptor("process_resident_memory_bytes", "resident memory", None, rss.metric_type())?)?;
        Ok(())
    }
}

struct Served {
    registry: Registry,
    source: Source,
}

async fn metrics(State(s): State<Arc<Served>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("metrics not encoded: {e}\n")).into_response(),
    }
}

async fn connections(State(s): State<Arc<Served>>) -> impl IntoResponse {
    match &s.source {
        Source::Gateway(_, lister) => axum::Json(lister.connections().await).into_response(),
        _ => (axum::http::StatusCode::NOT_FOUND, "only gateways list connections\n").into_response(),
    }
}

/// Binds `addr` and serves in the background; returns the bound address (for port 0).
pub async fn serve(addr: SocketAddr, source: Source) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("metrics listener {addr}"))?;
    let bound = listener.local_addr()?;
    let served = Arc::new(Served { registry: source.registry(), source });
    let app = axum::Router::new().route("/metrics", get(metrics)).route("/connections", get(connections)).with_state(served);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("metrics server stopped: {e}");
        }
    });
    Ok(bound)
}

/// GETs `path` from a metrics endpoint (used by the master for `status` and `connections`).
pub async fn fetch(addr: &str, path: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let resp = client.get(format!("http://{addr}{path}")).send().await?.error_for_status()?;
    Ok(resp.text().await?)
}

/// Reads the value of `switchboard_<name>` (a gauge, or a counter named with its `_total`)
/// out of an exposition.
pub fn value(exposition: &str, name: &str) -> Option<u64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(&format!("switchboard_{name}{{"))?;
        rest.rsplit_once(' ')?.1.trim().parse().ok()
    })
}
