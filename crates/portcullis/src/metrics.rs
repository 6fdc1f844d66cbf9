//! `/metrics`: Prometheus metrics in the OpenMetrics text format, encoded at scrape time from the
//! data plane's counters, the published table and the control side's own counts.
//!
//! Metrics that correspond to ingress-nginx's keep its names and labels, so the community
//! Grafana dashboards keep working; the rest are `portcullis_*`. ingress-nginx's counters are
//! exposed without the `_total` suffix OpenMetrics gives counters (as its Go client does), typed
//! `unknown`, so queries such as `rate(nginx_ingress_controller_requests[2m])` work unchanged.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use model::{Diagnostic, Severity};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use proxy::stats::{Histogram, DURATION_BUCKETS, SIZE_BUCKETS};
use table::{BackendTarget, Published};

/// Labels every ingress-nginx metric carries: which controller this is.
#[derive(Clone, Debug, Default)]
pub struct Controller {
    /// The IngressClass controller (`--controller-class`).
    pub class: String,
    /// `POD_NAMESPACE`, when running in a cluster.
    pub namespace: String,
    /// `POD_NAME`.
    pub pod: String,
}

impl Controller {
    /// The controller's labels, from `class` and the downward-API environment.
    pub fn from_env(class: &str) -> Self {
        Controller {
            class: class.to_string(),
            namespace: std::env::var("POD_NAMESPACE").unwrap_or_default(),
            pod: std::env::var("POD_NAME").unwrap_or_default(),
        }
    }
}

/// What the control side counts: translations and publications.
#[derive(Debug, Default)]
pub struct ControlStats {
    reloads: AtomicU64,
    last_reload_unix: AtomicI64,
    translation_micros: AtomicU64,
    diagnostics: [AtomicU64; 3],
}

impl ControlStats {
    /// Records a published table, how long translating it took and what it reported.
    pub fn published(&self, took: Duration, diagnostics: &[Diagnostic]) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.last_reload_unix.store(now, Ordering::Relaxed);
        self.translation_micros
            .store(took.as_micros() as u64, Ordering::Relaxed);
        for (i, severity) in [Severity::Error, Severity::Warning, Severity::Info]
            .iter()
            .enumerate()
        {
            let n = diagnostics
                .iter()
                .filter(|d| d.severity == *severity)
                .count();
            self.diagnostics[i].store(n as u64, Ordering::Relaxed);
        }
    }
}

/// Everything `/metrics` reads.
#[derive(Debug)]
pub struct Metrics {
    /// The data plane's counters and endpoint health.
    pub shared: Arc<proxy::Shared>,
    /// The served table (certificates, endpoints).
    pub published: Arc<Published>,
    /// Translations and publications.
    pub control: ControlStats,
    /// The controller's labels.
    pub controller: Controller,
}

type Labels = Vec<(Cow<'static, str>, Cow<'static, str>)>;

fn label(name: &'static str, value: impl Into<String>) -> (Cow<'static, str>, Cow<'static, str>) {
    (Cow::Borrowed(name), Cow::Owned(value.into()))
}

impl Metrics {
    /// The metrics in the OpenMetrics text format.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collecting(self.clone())));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }

    fn controller_labels(&self) -> Labels {
        vec![
            label("controller_class", self.controller.class.clone()),
            label("controller_namespace", self.controller.namespace.clone()),
            label("controller_pod", self.controller.pod.clone()),
        ]
    }
}

/// The registry's view of [`Metrics`].
#[derive(Debug)]
struct Collecting(Arc<Metrics>);

impl Collector for Collecting {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        encode_requests(m, &mut encoder)?;
        encode_control(m, &mut encoder)?;
        encode_data_plane(m, &mut encoder)?;
        encode_certificates(m, &mut encoder)
    }
}

/// A sample of an `unknown`-typed family: a name without a suffix (ingress-nginx's counters).
fn untyped(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Unknown)?;
    for (labels, value) in samples {
        let gauge = ConstGauge::new(*value as i64);
        gauge.encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn histograms<const N: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    bounds: &[f64; N],
    scale: f64,
    samples: &[(Labels, &Histogram<N>)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        // The encoder cumulates: it takes each bucket's own count.
        let (cumulative, count, sum) = h.read();
        if count == 0 {
            continue;
        }
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(N + 1);
        for (bound, up_to) in bounds.iter().zip(cumulative) {
            buckets.push((*bound, up_to - below));
            below = up_to;
        }
        buckets.push((f64::INFINITY, count - below));
        family
            .encode_family(labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum as f64 / scale,
                count,
                &buckets,
                None,
            )?;
    }
    Ok(())
}

fn encode_requests(m: &Metrics, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let totals = m.shared.stats.totals();
    let base = m.controller_labels();
    let route_labels = |r: &proxy::stats::RouteLabels| {
        let mut l = base.clone();
        l.extend([
            label("namespace", r.namespace.clone()),
            label("ingress", r.ingress.clone()),
            label("service", r.service.clone()),
            label("host", r.host.clone()),
            label("path", r.path.clone()),
            label("canary", ""),
        ]);
        l
    };
    let mut requests = Vec::new();
    for (r, c) in &totals.routes {
        for (status, method, n) in c.requests() {
            let mut l = route_labels(r);
            l.push(label("method", method));
            l.push(label("status", status.to_string()));
            requests.push((l, n));
        }
    }
    untyped(
        e,
        "nginx_ingress_controller_requests",
        "Requests answered, by route, status and method.",
        &requests,
    )?;
    let hist = |pick: fn(&proxy::stats::RouteCounters) -> &Histogram<11>| {
        totals
            .routes
            .iter()
            .map(|(r, c)| (route_labels(r), pick(c)))
            .collect::<Vec<_>>()
    };
    histograms(
        e,
        "nginx_ingress_controller_request_duration_seconds",
        "Time from the request head to the end of the response.",
        &DURATION_BUCKETS,
        1e6,
        &hist(|c| &c.request_duration),
    )?;
    histograms(
        e,
        "nginx_ingress_controller_response_duration_seconds",
        "Time from sending the request upstream to the end of its response.",
        &DURATION_BUCKETS,
        1e6,
        &hist(|c| &c.response_duration),
    )?;
    let sizes = |pick: fn(&proxy::stats::RouteCounters) -> &Histogram<7>| {
        totals
            .routes
            .iter()
            .map(|(r, c)| (route_labels(r), pick(c)))
            .collect::<Vec<_>>()
    };
    histograms(
        e,
        "nginx_ingress_controller_request_size",
        "Request sizes in bytes (head and declared body).",
        &SIZE_BUCKETS,
        1.0,
        &sizes(|c| &c.request_size),
    )?;
    histograms(
        e,
        "nginx_ingress_controller_response_size",
        "Response sizes in bytes (head and body).",
        &SIZE_BUCKETS,
        1.0,
        &sizes(|c| &c.response_size),
    )?;
    let connections: Vec<(Labels, i64)> = [
        ("http", "http1"),
        ("https", "http1"),
        ("http", "http2"),
        ("https", "http2"),
    ]
    .iter()
    .zip(totals.connections)
    .map(|((listener, protocol), n)| {
        (
            vec![label("listener", *listener), label("protocol", *protocol)],
            n,
        )
    })
    .collect();
    gauges(
        e,
        "portcullis_connections",
        "Open client connections by listener and protocol.",
        &connections,
    )?;
    let errors: Vec<(Labels, u64)> = totals
        .backends
        .iter()
        .map(|(b, connect, _)| (vec![label("backend", b.clone())], *connect))
        .collect();
    counters(
        e,
        "portcullis_upstream_connect_errors",
        "Upstream connections that could not be made, by backend.",
        &errors,
    )?;
    let retries: Vec<(Labels, u64)> = totals
        .backends
        .iter()
        .map(|(b, _, retries)| (vec![label("backend", b.clone())], *retries))
        .collect();
    counters(
        e,
        "portcullis_upstream_retries",
        "Attempts repeated on another endpoint, by backend.",
        &retries,
    )?;
    counters(
        e,
        "portcullis_proxy_protocol_refused",
        "Client connections closed for want of a valid PROXY protocol header.",
        &[(Vec::new(), totals.refused_proxy_headers)],
    )
}

fn encode_control(m: &Metrics, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let c = &m.control;
    let base = m.controller_labels();
    let reloads = c.reloads.load(Ordering::Relaxed);
    untyped(
        e,
        "nginx_ingress_controller_success",
        "Routing tables published (there is no reload that can fail: a bad input keeps the last good objects).",
        &[(base.clone(), reloads)],
    )?;
    gauges(
        e,
        "nginx_ingress_controller_config_last_reload_successful",
        "Whether the last configuration change was applied (always 1: changes never fail to apply).",
        &[(base.clone(), i64::from(reloads > 0))],
    )?;
    gauges(
        e,
        "nginx_ingress_controller_config_last_reload_successful_timestamp_seconds",
        "When the last routing table was published, in seconds since the Unix epoch.",
        &[(base, c.last_reload_unix.load(Ordering::Relaxed))],
    )?;
    counters(
        e,
        "portcullis_config_reloads",
        "Routing tables published.",
        &[(Vec::new(), reloads)],
    )?;
    let mut family = e.encode_descriptor(
        "portcullis_config_translation_seconds",
        "How long the last translation took.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(c.translation_micros.load(Ordering::Relaxed) as f64 / 1e6)
        .encode(family.encode_family(&Vec::<(Cow<'static, str>, Cow<'static, str>)>::new())?)?;
    let diagnostics: Vec<(Labels, i64)> = ["error", "warning", "info"]
        .iter()
        .zip(&c.diagnostics)
        .map(|(s, n)| {
            (
                vec![label("severity", *s)],
                n.load(Ordering::Relaxed) as i64,
            )
        })
        .collect();
    gauges(
        e,
        "portcullis_config_diagnostics",
        "Diagnostics of the last translation, by severity.",
        &diagnostics,
    )
}

fn encode_data_plane(m: &Metrics, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let health = &m.shared.health;
    counters(
        e,
        "portcullis_endpoint_ejections",
        "Endpoints ejected after consecutive failures.",
        &[(Vec::new(), health.ejections_total.load(Ordering::Relaxed))],
    )?;
    let table = m.published.load_full();
    let mut samples = Vec::new();
    for backend in &table.backends {
        if let BackendTarget::Endpoints { ready, .. } = &backend.target {
            for addr in ready {
                samples.push((
                    vec![
                        label("backend", backend.name.clone()),
                        label("endpoint", addr.to_string()),
                    ],
                    i64::from(health.usable(&backend.name, *addr)),
                ));
            }
        }
    }
    gauges(
        e,
        "portcullis_endpoint_healthy",
        "1 while a ready endpoint gets requests, 0 while it is ejected or failing its checks.",
        &samples,
    )
}

fn encode_certificates(m: &Metrics, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let table = m.published.load_full();
    let base = m.controller_labels();
    let mut samples = Vec::new();
    let names = table.tls.exact.iter().map(|(h, c)| (h.clone(), c)).chain(
        table
            .tls
            .wildcard
            .iter()
            .map(|(s, c)| (format!("*.{s}"), c)),
    );
    for (host, cert) in names {
        let (namespace, secret) = cert.source.split_once('/').unwrap_or(("", &cert.source));
        let mut l = base.clone();
        l.extend([
            label("host", host),
            label("namespace", namespace),
            label("secret_name", secret),
        ]);
        samples.push((l, cert.not_after));
    }
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    gauges(
        e,
        "nginx_ingress_controller_ssl_expire_time_seconds",
        "When each host's certificate expires, in seconds since the Unix epoch.",
        &samples,
    )
}
