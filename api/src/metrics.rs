//! `GET /metrics`: the Prometheus registry in the text exposition format (0.0.4), and the
//! API's own latency histogram.
//!
//! The registry is the process's one [`Registry`]: the pipeline and the sink writer
//! register their metrics into it (`shopflow_pipelines::metrics`,
//! `shopflow_sinks::metrics`) and [`crate::router`] adds
//! `shopflow_http_request_duration_seconds{route,method,status}`, observed by a middleware
//! around every route (and the 404 fallback). `route` is the route's template (e.g.
//! `/v1/stock/{sku}`), never the raw path, so ids do not become label values; `unmatched`
//! when no route matched.
//!
//! `/metrics` is public like `/healthz` (the auth middleware only guards `/v1/`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
pub use prometheus::Registry;
use prometheus::{Encoder, HistogramOpts, HistogramVec, TextEncoder};

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Seconds per request: 0.5 ms to 10 s.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn http_histogram() -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(
            "shopflow_http_request_duration_seconds",
            "API request latency, by route template, method and status code.",
        )
        .buckets(BUCKETS.to_vec()),
        &["route", "method", "status"],
    )
    .expect("valid metric")
}

/// Wraps every route of `app` in the latency middleware and registers its histogram in
/// `registry`. A router built again on the same registry replaces the earlier histogram.
pub fn track(app: Router, registry: &Registry) -> Router {
    let histogram = http_histogram();
    if registry.register(Box::new(histogram.clone())).is_err() {
        // Already there from an earlier router: unregistering goes by description, so
        // this removes that one.
        let _ = registry.unregister(Box::new(histogram.clone()));
        if let Err(e) = registry.register(Box::new(histogram.clone())) {
            tracing::warn!(error = %e, "cannot register the HTTP latency histogram");
        }
    }
    app.layer(axum::middleware::from_fn_with_state(histogram, observe))
}

async fn observe(State(histogram): State<HistogramVec>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = method_label(req.method());
    let resp = next.run(req).await;
    histogram
        .with_label_values(&[
            route.as_deref().unwrap_or(UNMATCHED),
            method,
            resp.status().as_str(),
        ])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The method as a label: the standard ones by name, anything else `other` (so a client
/// cannot create series at will).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`.
pub async fn serve(State(st): State<Arc<crate::serving::Shared>>) -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&st.registry.gather(), &mut body) {
        Ok(()) => ([(CONTENT_TYPE, encoder.format_type().to_owned())], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}
