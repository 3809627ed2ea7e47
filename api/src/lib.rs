//! The HTTP query API over shopflow's serving views (SPEC §6).
//!
//! Every answer carries `as_of`, the time its data is complete up to. Errors are JSON
//! `{"error": "..."}`: 400 for a malformed id or parameter, 404 for an id no accepted event
//! named or a path no route serves, 405 for a method other than GET.
//! The same routes serve the embedded store and Redis ([`ServingViews`]).
//!
//! Everything under `/v1/` needs a bearer JWT whose role may read it ([`auth`]); the OpenAPI
//! description is at `/openapi.json` ([`openapi`]); the seller web page is at `/seller`
//! ([`seller_page`]). Prometheus metrics are at `/metrics` ([`metrics`]).
#![forbid(missing_docs)]
#![forbid(unsafe_code)]
// Libraries log through `tracing`; only the binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod answers;
pub mod auth;
pub mod metrics;
pub mod openapi;
pub mod paging;
pub mod seller_page;
pub mod serving;

pub use auth::AuthMode;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use shopflow_model::health::Health;
use shopflow_model::sales::Bucket;
use shopflow_model::{Millis, MAX_ID};
use shopflow_sinks::{LedgerViews, SalesStore, ServingViews};

use paging::{PageQuery, LIST_LIMITS, MEMBER_ORDERS_LIMITS};
use serving::{Shared, Store};

/// Shared state of the API.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// Where the serving views are read.
    pub views: ServingViews,
    /// Where the ledgers are read.
    pub ledger: LedgerViews,
    /// Where the sales analytics are read.
    pub sales: SalesStore,
    /// How callers are authenticated (HS256 JWTs; `Disabled` only in unit tests).
    pub auth: AuthMode,
    /// The metrics served at `/metrics`; [`router`] adds the API's latency histogram.
    pub registry: metrics::Registry,
    /// What the pipeline feeding the stores reports failing (the source, a sink): `/readyz`
    /// answers 503 while anything fails.
    pub health: Health,
}

/// An API error, rendered as `{"error": "..."}` with its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A path or query parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The id is not known.
    #[error("{0}")]
    NotFound(String),
    /// The view store failed.
    #[error("view store unavailable: {0}")]
    Unavailable(String),
    /// A store is busy or slow: answered 503 with `Retry-After` ([`serving`]).
    #[error("{0}")]
    Busy(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let retry = matches!(self, ApiError::Busy(_));
        let mut response = (status, Json(json!({"error": self.to_string()}))).into_response();
        if retry {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// Parses a path id: an integer in 1..=2^53−1.
pub fn parse_id(what: &str, raw: &str) -> Result<u64, ApiError> {
    match raw.parse::<u64>() {
        Ok(v) if (1..=MAX_ID).contains(&v) => Ok(v),
        _ => Err(ApiError::BadRequest(format!(
            "{what} must be an integer in 1..=9007199254740991, got {raw:?}"
        ))),
    }
}

/// A route's one path parameter, not yet parsed: like `Path<String>`, but a segment that
/// cannot be read (invalid UTF-8 once percent-decoded) is a JSON 400 like any bad id.
struct RawId(String);

impl<S: Send + Sync> FromRequestParts<S> for RawId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(raw)) => Ok(RawId(raw)),
            Err(e) => Err(ApiError::BadRequest(format!(
                "unreadable path parameter: {}",
                e.body_text()
            ))),
        }
    }
}

/// The answer to a path no route serves: a JSON 404 like an unknown id.
async fn no_route(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such path: {}", uri.path()))
}

/// The answer to a method a route does not serve (every route is GET).
async fn wrong_method() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"error": "method not allowed: the API serves GET only"})),
    )
        .into_response()
}

fn unavailable(e: shopflow_sinks::SinkError) -> ApiError {
    tracing::error!(error = %e, "view store read failed");
    ApiError::Unavailable(e.to_string())
}

/// The answer of a store lookup by id: 503 when the store failed, 404 (`{what} {id} is not
/// known`) when it holds nothing for the id. Every handler reads through it.
fn found<T>(
    what: &str,
    id: u64,
    answer: Result<Option<T>, shopflow_sinks::SinkError>,
) -> Result<T, ApiError> {
    answer
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::NotFound(format!("{what} {id} is not known")))
}

/// A route's query string: like `Query<T>`, but a malformed one is a JSON 400, reported by
/// [`Params::parsed`] once the handler has checked the path's id (a bad id is reported
/// first).
struct Params<T>(Result<T, ApiError>);

impl<T> Params<T> {
    /// The parsed query, or the 400 saying what is malformed.
    fn parsed(self) -> Result<T, ApiError> {
        self.0
    }
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(Params(
            Query::<T>::from_request_parts(parts, state)
                .await
                .map(|Query(q)| q)
                .map_err(|e| ApiError::BadRequest(e.body_text())),
        ))
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let auth = state.auth.clone();
    let registry = state.registry.clone();
    let routes = Router::new()
        .route("/v1/stock/{sku}", get(stock))
        .route("/v1/orders/{order_id}", get(order))
        .route("/v1/products/{sku}/rating", get(rating))
        .route("/v1/products/{sku}/also-bought", get(also_bought))
        .route("/v1/members/{member_id}", get(member))
        .route("/v1/members/{member_id}/points", get(points))
        .route("/v1/members/{member_id}/orders", get(member_orders))
        .route("/v1/sellers/{seller_id}/settlements", get(settlements))
        .route("/v1/sellers/{seller_id}/payouts", get(payouts))
        .route("/v1/sellers/{seller_id}/tax-invoices", get(tax_invoices))
        .route("/v1/sellers/{seller_id}/sales", get(sales))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics::serve))
        .route("/openapi.json", get(openapi::serve))
        .route("/seller", get(seller_page::serve))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(Arc::new(Shared::new(state)));
    // Wraps every route above, so a route added there is protected too.
    let app = auth::protect(routes, auth);
    // Outermost, so 401s and 403s are timed too.
    metrics::track(app, &registry)
}

async fn stock(
    State(st): State<Arc<Shared>>,
    RawId(raw): RawId,
) -> Result<Json<answers::Stock>, ApiError> {
    let sku = parse_id("sku", &raw)?;
    let (row, as_of) = st
        .limited(Store::Views, async {
            found("sku", sku, st.views.stock(sku).await)
        })
        .await?;
    Ok(Json(answers::Stock::new(&row, as_of)))
}

async fn order(State(st): State<Arc<Shared>>, RawId(raw): RawId) -> Result<Response, ApiError> {
    let id = parse_id("order_id", &raw)?;
    let (row, as_of): (_, Millis) = st
        .limited(Store::Views, async {
            found("order", id, st.views.order(id).await)
        })
        .await?;
    Ok(Json(answers::Order::new(&row, Some(as_of))).into_response())
}

/// A sum of money as JSON: a number, or a decimal string beyond ±(2^63 − 1), which no
/// real workload reaches but a 128-bit sum can hold ([`answers::Money`]).
pub fn money(v: i128) -> Value {
    serde_json::to_value(answers::Money(v)).expect("JSON")
}

async fn member(
    State(st): State<Arc<Shared>>,
    RawId(raw): RawId,
) -> Result<Json<answers::Member>, ApiError> {
    let id = parse_id("member_id", &raw)?;
    let (row, as_of) = st
        .limited(Store::Views, async {
            found("member", id, st.views.member(id).await)
        })
        .await?;
    Ok(Json(answers::Member::new(id, &row, as_of)))
}

async fn points(
    State(st): State<Arc<Shared>>,
    RawId(raw): RawId,
    params: Params<PageQuery>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = parse_id("member_id", &raw)?;
    let q = params.parsed()?;
    st.cached(&uri, &[Store::Ledger], move |st| async move {
        let (entries, as_of) = found("member", id, st.ledger.points(id).await)?;
        let balance: i128 = entries.iter().map(|e| e.points as i128).sum();
        let entries = answers::values(entries.iter().map(answers::PointsItem::from));
        let page = paging::page(entries, as_of, &format!("points/{id}"), &q, LIST_LIMITS)?;
        Ok(Json(json!({
            "member_id": id, "balance": money(balance), "entries": page.items,
            "next_cursor": page.next_cursor_json(), "as_of": page.as_of,
        })))
    })
    .await
}

async fn member_orders(
    State(st): State<Arc<Shared>>,
    RawId(raw): RawId,
    params: Params<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id("member_id", &raw)?;
    let q = params.parsed()?;
    let (orders, as_of) = st
        .limited(Store::Views, async {
            found("member", id, st.views.member_orders(id).await)
        })
        .await?;
    let orders = answers::values(orders.iter().map(|o| answers::Order::new(o, None)));
    let page = paging::page(
        orders,
        as_of,
        &format!("orders/{id}"),
        &q,
        MEMBER_ORDERS_LIMITS,
    )?;
    Ok(Json(json!({
        "member_id": id, "orders": page.items, "next_cursor": page.next_cursor_json(),
        "as_of": page.as_of,
    })))
}

/// Query of `settlements` and `sales`: a time range [from, to) in epoch ms (and a bucket).
#[derive(Debug, serde::Deserialize)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
    /// `limit` and `cursor`.
    #[serde(flatten)]
    page: PageQuery,
}

fn parse_range(q: &RangeQuery) -> Result<(Millis, Millis), ApiError> {
    let from = parse_millis("from", q.from.as_deref(), 0)?;
    let to = parse_millis("to", q.to.as_deref(), MAX_ID + 1)?;
    if from > to {
        return Err(ApiError::BadRequest(format!(
            "from ({from}) must not be after to ({to})"
        )));
    }
    Ok((from, to))
}

async fn sales(
    State(st): State<Arc<Shared>>,
    RawId(raw): RawId,
    params: Params<RangeQuery>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = parse_id("seller_id", &raw)?;
    let q = params.parsed()?;
    st.cached(&uri, &[Store::Ledger, Store::Sales], move |st| async move {
        let (from, to) = parse_range(&q)?;
        let bucket = match q.bucket.as_deref() {
            None => Bucket::Hour,
            Some(text) => Bucket::parse(text).ok_or_else(|| {
                ApiError::BadRequest(format!("bucket must be minute, hour or day, got {text:?}"))
            })?,
        };
        // A seller is known from the catalog, which the ledger store keeps.
        if !st.ledger.seller_known(id).await.map_err(unavailable)? {
            return Err(ApiError::NotFound(format!("seller {id} is not known")));
        }
        let (points, as_of) = st
            .sales
            .sales(id, from, to, bucket)
            .await
            .map_err(unavailable)?;
        let series = answers::values(points.iter().map(answers::SalesItem::from));
        let page = paging::page(
            series,
            as_of,
            &format!("sales/{id}?from={from}&to={to}&bucket={}", bucket.as_str()),
            &q.page,
            LIST_LIMITS,
        )?;
        Ok(Json(json!({
            "seller_id": id, "bucket": bucket.as_str(), "from": from, "to": to,
            "series": page.items, "next_cursor": page.next_cursor_json(), "as_of": page.as_of,
        })))
    })
    .await
}

fn parse_millis(what: &str, raw: Option<&str>, default: Millis) -> Result<Millis, ApiError> {
    match raw {
        None => Ok(default),
        Some(text) => match text.parse::<u64>() {
            Ok(v) if v <= MAX_ID => Ok(v),
            _ => Err(ApiError::BadRequest(format!(
                "{what} must be epoch milliseconds in 0..=9007199254740991, got {text:?}"
            ))),
        },
    }
}

async fn settlements(
    State(st): State<Arc<Shared>>,
    RawId(raw): RawId,
    params: Params<RangeQuery>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = parse_id("seller_id", &raw)?;
    let q = params.parsed()?;
    st.cached(&uri, &[Store::Ledger], move |st| async move {
        let (from, to) = parse_range(&q)?;
        let (entries, as_of) = found("seller", id, st.ledger.settlements(id, from, to).await)?;
        let mut totals = [0i128; 4];
        for e in &entries {
            totals[0] += e.gross as i128;
            totals[1] += e.commission as i128;
            totals[2] += e.payment_fee as i128;
            totals[3] += e.payout as i128;
        }
        let rows = answers::values(entries.iter().map(answers::SettlementItem::from));
        let page = paging::page(
            rows,
            as_of,
            &format!("settlements/{id}?from={from}&to={to}"),
            &q.page,
            LIST_LIMITS,
        )?;
        Ok(Json(json!({
            "seller_id": id, "from": from, "to": to, "entries": page.items,
            "next_cursor": page.next_cursor_json(),
            "totals": {"gross": money(totals[0]), "commission": money(totals[1]),
                       "payment_fee": money(totals[2]), "payout": money(totals[3])},
            "as_of": page.as_of,
        })))
    })
    .await
}

async fn payouts(
    State(st): State<Arc<Shared>>,
    RawId(raw): RawId,
    params: Params<PageQuery>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = parse_id("seller_id", &raw)?;
    let q = params.parsed()?;
    st.cached(&uri, &[Store::Ledger], move |st| async move {
        let (rows, as_of) = found("seller", id, st.ledger.payouts(id).await)?;
        let rows = answers::values(
            rows.iter()
                .map(|(p, fin)| answers::PayoutItem::new(p, *fin)),
        );
        let page = paging::page(rows, as_of, &format!("payouts/{id}"), &q, LIST_LIMITS)?;
        Ok(Json(json!({
            "seller_id": id, "payouts": page.items, "next_cursor": page.next_cursor_json(),
            "as_of": page.as_of,
        })))
    })
    .await
}

async fn tax_invoices(
    State(st): State<Arc<Shared>>,
    RawId(raw): RawId,
    params: Params<PageQuery>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = parse_id("seller_id", &raw)?;
    let q = params.parsed()?;
    st.cached(&uri, &[Store::Ledger], move |st| async move {
        let (rows, as_of) = found("seller", id, st.ledger.invoices(id).await)?;
        let rows = answers::values(
            rows.iter()
                .map(|(i, fin)| answers::InvoiceItem::new(i, *fin)),
        );
        let page = paging::page(rows, as_of, &format!("tax_invoices/{id}"), &q, LIST_LIMITS)?;
        Ok(Json(json!({
            "seller_id": id, "tax_invoices": page.items, "next_cursor": page.next_cursor_json(),
            "as_of": page.as_of,
        })))
    })
    .await
}

async fn rating(
    State(st): State<Arc<Shared>>,
    RawId(raw): RawId,
) -> Result<Json<answers::Rating>, ApiError> {
    let sku = parse_id("sku", &raw)?;
    let (row, as_of) = st
        .limited(Store::Views, async {
            found("sku", sku, st.views.rating(sku).await)
        })
        .await?;
    Ok(Json(answers::Rating::new(sku, &row, as_of)))
}

/// Query of `also-bought`.
#[derive(Debug, serde::Deserialize)]
struct LimitQuery {
    limit: Option<String>,
}

async fn also_bought(
    State(st): State<Arc<Shared>>,
    RawId(raw): RawId,
    params: Params<LimitQuery>,
) -> Result<Json<answers::AlsoBoughtAnswer>, ApiError> {
    let sku = parse_id("sku", &raw)?;
    let q = params.parsed()?;
    let limit = match q.limit.as_deref() {
        None => 10,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=20).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit must be an integer in 1..=20, got {text:?}"
                )))
            }
        },
    };
    let (row, as_of) = st
        .limited(Store::Views, async {
            found("sku", sku, st.views.also_bought(sku).await)
        })
        .await?;
    Ok(Json(answers::AlsoBoughtAnswer::new(
        sku, &row, limit, as_of,
    )))
}

/// 200 once the view store holds a batch and nothing the pipeline depends on is failing;
/// 503 with the reason otherwise (a sink or the broker down: the views are going stale).
async fn ready(State(st): State<Arc<Shared>>) -> Response {
    let problems = st.health.problems();
    let (status, mut answer) = if !problems.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "error": problems.join("; ")}),
        )
    } else {
        match st.views.as_of().await {
            Ok(Some(as_of)) => (StatusCode::OK, json!({"ready": true, "as_of": as_of})),
            Ok(None) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ready": false, "error": "no view batch written yet"}),
            ),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ready": false, "error": e.to_string()}),
            ),
        }
    };
    // In a cluster: which process this is and which streams it reads.
    if let (Some(p), Some(map)) = (st.health.placement(), answer.as_object_mut()) {
        map.insert("process".into(), json!(p.process));
        map.insert("processes".into(), json!(p.processes));
        map.insert("streams".into(), json!(p.streams));
    }
    (status, Json(answer)).into_response()
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopflow_model::{OrderStatus, OrderView, Output, StatusChange, StockLevel, ViewBatch};
    use shopflow_sinks::MemoryStore;

    async fn call(app: &Router, uri: &str) -> (StatusCode, Value) {
        use tower::ServiceExt;
        let resp = app
            .clone()
            .oneshot(
                axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }

    #[tokio::test]
    async fn stock_and_order_answers_and_errors() {
        let store = MemoryStore::new();
        let app = router(ApiState {
            views: ServingViews::Memory(store.clone()),
            ledger: LedgerViews::Memory(store.clone()),
            sales: SalesStore::Memory(store.clone()),
            auth: AuthMode::Disabled,
            registry: metrics::Registry::new(),
            health: Default::default(),
        });
        assert_eq!(
            call(&app, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        store.apply(Output::Views(ViewBatch {
            as_of: 1234,
            complete: false,
            stock: vec![StockLevel {
                sku: 7,
                on_hand: 5,
                reserved: 8,
                available: -3,
            }],
            orders: vec![OrderView {
                order_id: 9,
                member_id: 2,
                status: OrderStatus::Paid,
                location: None,
                history: vec![
                    StatusChange {
                        status: OrderStatus::Placed,
                        ts: 1000,
                    },
                    StatusChange {
                        status: OrderStatus::Paid,
                        ts: 1200,
                    },
                ],
            }],
            alerts: vec![],
            ratings: vec![shopflow_model::RatingView {
                sku: 7,
                count: 2,
                sum: 9,
                histogram: [0, 0, 0, 1, 1],
            }],
            also_bought: vec![shopflow_model::AlsoBought {
                sku: 7,
                items: vec![(3, 5), (1, 2), (9, 2)],
            }],
            ..ViewBatch::default()
        }));
        store.apply(Output::Views(ViewBatch {
            as_of: 1234,
            stock: vec![StockLevel {
                sku: 8,
                on_hand: 0,
                reserved: 0,
                available: 0,
            }],
            ..ViewBatch::default()
        }));
        let (s, b) = call(&app, "/v1/products/7/rating").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            b,
            json!({"sku": 7, "count": 2, "sum": 9, "average": 4.5,
                   "histogram": {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1}, "as_of": 1234})
        );
        let (_, b) = call(&app, "/v1/products/8/rating").await;
        assert_eq!(b["average"], Value::Null, "no reviews: average is null");
        assert_eq!(b["count"], 0);
        let (s, b) = call(&app, "/v1/products/7/also-bought?limit=2").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            b,
            json!({"sku": 7, "items": [{"sku": 3, "weight": 5}, {"sku": 1, "weight": 2}], "as_of": 1234})
        );
        let (_, b) = call(&app, "/v1/products/7/also-bought").await;
        assert_eq!(
            b["items"].as_array().map(Vec::len),
            Some(3),
            "default limit 10"
        );
        let (_, b) = call(&app, "/v1/products/8/also-bought").await;
        assert_eq!(b["items"], json!([]));
        for (uri, want) in [
            (
                "/v1/products/7/also-bought?limit=0",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/v1/products/7/also-bought?limit=21",
                StatusCode::BAD_REQUEST,
            ),
            (
                "/v1/products/7/also-bought?limit=x",
                StatusCode::BAD_REQUEST,
            ),
            ("/v1/products/99/also-bought", StatusCode::NOT_FOUND),
            ("/v1/products/99/rating", StatusCode::NOT_FOUND),
            ("/v1/products/0/rating", StatusCode::BAD_REQUEST),
        ] {
            let (s, b) = call(&app, uri).await;
            assert_eq!(s, want, "{uri}");
            assert!(b["error"].is_string(), "{uri}: {b}");
        }
        let (s, b) = call(&app, "/v1/stock/7").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            b,
            json!({"sku": 7, "on_hand": 5, "reserved": 8, "available": -3, "as_of": 1234})
        );
        let (s, b) = call(&app, "/v1/orders/9").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            b,
            json!({"order_id": 9, "member_id": 2, "status": "PAID", "location": null,
                   "history": [{"status": "PLACED", "ts": 1000}, {"status": "PAID", "ts": 1200}],
                   "as_of": 1234})
        );
        for (uri, want) in [
            ("/v1/stock/18", StatusCode::NOT_FOUND),
            ("/v1/orders/10", StatusCode::NOT_FOUND),
            ("/v1/stock/0", StatusCode::BAD_REQUEST),
            ("/v1/stock/-1", StatusCode::BAD_REQUEST),
            ("/v1/stock/abc", StatusCode::BAD_REQUEST),
            ("/v1/stock/9007199254740992", StatusCode::BAD_REQUEST),
            ("/v1/orders/1.5", StatusCode::BAD_REQUEST),
        ] {
            let (s, b) = call(&app, uri).await;
            assert_eq!(s, want, "{uri}");
            assert!(b["error"].is_string(), "{uri}: {b}");
        }
        let (s, b) = call(&app, "/readyz").await;
        assert_eq!((s, b["as_of"].clone()), (StatusCode::OK, json!(1234)));
    }

    #[tokio::test]
    async fn readyz_is_503_while_a_sink_or_the_source_fails() {
        let store = MemoryStore::new();
        store.write_views(&ViewBatch {
            as_of: 1234,
            ..ViewBatch::default()
        });
        let health = Health::new();
        let app = router(ApiState {
            views: ServingViews::Memory(store.clone()),
            ledger: LedgerViews::Memory(store.clone()),
            sales: SalesStore::Memory(store.clone()),
            auth: AuthMode::Disabled,
            registry: metrics::Registry::new(),
            health: health.clone(),
        });
        assert_eq!(call(&app, "/readyz").await.0, StatusCode::OK);
        health.failed("mysql", 0, "connection refused");
        let (s, b) = call(&app, "/readyz").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["ready"], json!(false));
        let error = b["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("mysql failing") && error.contains("connection refused"),
            "{b}"
        );
        health.failed("kafka", 1, "broker down");
        health.recovered("mysql", 0);
        let (s, b) = call(&app, "/readyz").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            b["error"]
                .as_str()
                .unwrap_or_default()
                .contains("kafka failing"),
            "{b}"
        );
        health.recovered("kafka", 1);
        assert_eq!(call(&app, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn member_and_seller_answers_and_errors() {
        use shopflow_model::{
            EntryCause, Grade, MemberOrders, MemberView, Payout, PointsEntry, SettlementEntry,
            TaxInvoice,
        };
        let store = MemoryStore::new();
        let app = router(ApiState {
            views: ServingViews::Memory(store.clone()),
            ledger: LedgerViews::Memory(store.clone()),
            sales: SalesStore::Memory(store.clone()),
            auth: AuthMode::Disabled,
            registry: metrics::Registry::new(),
            health: Default::default(),
        });
        // 2026-11-09 00:00 KST (a Monday) = 2026-11-08T15:00:00Z.
        let monday = 1_794_150_000_000;
        let entry = |id: &str, ts, sign: i64| SettlementEntry {
            id: id.into(),
            seller_id: 4,
            order_id: 9,
            line_no: 1,
            sku: 7,
            cause: if sign > 0 {
                EntryCause::Confirmed
            } else {
                EntryCause::Refund
            },
            ts,
            qty: sign * 2,
            unit_price: 10_000,
            commission_bp: 1000,
            gross: sign * 20_000,
            commission: sign * 2_000,
            payment_fee: sign * 500,
            payout: sign * 17_500,
        };
        store.apply(Output::Views(ViewBatch {
            as_of: monday + 7 * 86_400_000,
            orders: vec![OrderView {
                order_id: 9,
                member_id: 2,
                status: OrderStatus::Confirmed,
                location: Some("Seoul".into()),
                history: vec![StatusChange {
                    status: OrderStatus::Placed,
                    ts: 1000,
                }],
            }],
            members: vec![MemberView::new(2, 120_000, true)],
            member_orders: vec![MemberOrders {
                member_id: 2,
                order_ids: vec![9, 404],
            }],
            points: vec![PointsEntry {
                id: "9:confirmed".into(),
                member_id: 2,
                order_id: 9,
                cause: EntryCause::Confirmed,
                ts: monday,
                rate_bp: 200,
                amount: 120_000,
                points: 2_400,
            }],
            settlements: vec![
                entry("9:1:confirmed", monday - 1, 1),
                entry("9:1:refund:1", monday, -1),
            ],
            payouts: vec![
                Payout {
                    seller_id: 4,
                    week_start: monday - 7 * 86_400_000,
                    amount: 17_500,
                    entries: 1,
                },
                Payout {
                    seller_id: 4,
                    week_start: monday,
                    amount: -17_500,
                    entries: 1,
                },
            ],
            invoices: vec![TaxInvoice::new(4, 1_793_545_200_000, 0, 2)],
            sellers: vec![4],
            ..ViewBatch::default()
        }));
        let (s, b) = call(&app, "/v1/members/2").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            b,
            json!({"member_id": 2, "grade": Grade::Silver.as_str(), "spend_6m": 120_000,
                   "accrual_bp": 200, "wow": true, "as_of": monday + 7 * 86_400_000})
        );
        let (_, b) = call(&app, "/v1/members/2/points").await;
        assert_eq!(b["balance"], 2_400);
        assert_eq!(b["entries"][0]["cause"], "confirmed");
        let (_, b) = call(&app, "/v1/members/2/orders").await;
        // Order 404 is in the list but has no row: it is skipped, not an error.
        assert_eq!(b["orders"].as_array().map(Vec::len), Some(1));
        assert_eq!(b["orders"][0]["location"], "Seoul");
        let (_, b) = call(&app, &format!("/v1/sellers/4/settlements?from={monday}")).await;
        assert_eq!(b["entries"].as_array().map(Vec::len), Some(1));
        assert_eq!(b["totals"]["payout"], -17_500);
        let (_, b) = call(&app, "/v1/sellers/4/settlements").await;
        assert_eq!(b["totals"]["gross"], 0);
        let (_, b) = call(&app, "/v1/sellers/4/payouts").await;
        assert_eq!(
            b["payouts"],
            json!([
                {"week_start": "2026-11-02", "amount": 17_500, "entries": 1, "final": true},
                {"week_start": "2026-11-09", "amount": -17_500, "entries": 1, "final": true}
            ])
        );
        let (_, b) = call(&app, "/v1/sellers/4/tax-invoices").await;
        assert_eq!(
            b["tax_invoices"],
            json!([{"month": "2026-11", "supply": 0, "vat": 0, "total": 0, "entries": 2,
                    "final": false}])
        );

        // Paged: a walk one item per page gives the whole list, with whole-list totals on
        // every page and the first page's as_of.
        let whole = call(&app, "/v1/sellers/4/settlements").await.1;
        assert_eq!(whole["next_cursor"], Value::Null, "one page: {whole}");
        let first = call(&app, "/v1/sellers/4/settlements?limit=1").await.1;
        assert_eq!(first["entries"], json!([whole["entries"][0]]));
        assert_eq!(first["totals"], whole["totals"]);
        let cursor = first["next_cursor"]
            .as_str()
            .expect("a second page")
            .to_string();
        // The views move on (another member's points); this list does not.
        store.apply(Output::Views(ViewBatch {
            as_of: monday + 8 * 86_400_000,
            members: vec![MemberView::new(77, 0, false)],
            ..ViewBatch::default()
        }));
        let second = call(
            &app,
            &format!("/v1/sellers/4/settlements?limit=1&cursor={cursor}"),
        )
        .await
        .1;
        assert_eq!(second["entries"], json!([whole["entries"][1]]));
        assert_eq!(second["totals"], whole["totals"]);
        assert_eq!(second["as_of"], first["as_of"], "tied to the first page");
        assert_eq!(second["next_cursor"], Value::Null, "the last page");
        // The cursor belongs to that query only.
        let (s, b) = call(
            &app,
            &format!("/v1/sellers/4/settlements?from=1&limit=1&cursor={cursor}"),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        // The list changes under a walk: the cursor expires.
        let payouts_first = call(&app, "/v1/sellers/4/payouts?limit=1").await.1;
        let cursor = payouts_first["next_cursor"].as_str().expect("2 payouts");
        store.apply(Output::Views(ViewBatch {
            as_of: monday + 9 * 86_400_000,
            payouts: vec![Payout {
                seller_id: 4,
                week_start: monday,
                amount: -17_000,
                entries: 2,
            }],
            ..ViewBatch::default()
        }));
        let (s, b) = call(
            &app,
            &format!("/v1/sellers/4/payouts?limit=1&cursor={cursor}"),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(
            b["error"]
                .as_str()
                .unwrap_or_default()
                .contains("cursor expired"),
            "{b}"
        );
        for uri in [
            "/v1/sellers/4/payouts?limit=0",
            "/v1/sellers/4/tax-invoices?limit=10001",
            "/v1/members/2/orders?limit=21",
            "/v1/members/2/points?cursor=nope",
            "/v1/sellers/4/sales?limit=x",
        ] {
            let (s, b) = call(&app, uri).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {b}");
        }

        for (uri, want) in [
            ("/v1/members/3", StatusCode::NOT_FOUND),
            ("/v1/members/3/points", StatusCode::NOT_FOUND),
            ("/v1/members/3/orders", StatusCode::NOT_FOUND),
            ("/v1/members/0", StatusCode::BAD_REQUEST),
            ("/v1/sellers/5/payouts", StatusCode::NOT_FOUND),
            ("/v1/sellers/5/tax-invoices", StatusCode::NOT_FOUND),
            ("/v1/sellers/5/settlements", StatusCode::NOT_FOUND),
            ("/v1/sellers/4/settlements?from=x", StatusCode::BAD_REQUEST),
            (
                "/v1/sellers/4/settlements?from=5&to=4",
                StatusCode::BAD_REQUEST,
            ),
            ("/v1/sellers/4/settlements?to=-1", StatusCode::BAD_REQUEST),
        ] {
            let (s, b) = call(&app, uri).await;
            assert_eq!(s, want, "{uri}");
            assert!(b["error"].is_string(), "{uri}: {b}");
        }
    }

    /// Found by tests/fuzz.rs: these were answered with an empty or plain-text body.
    #[tokio::test]
    async fn every_error_has_a_json_body() {
        use tower::ServiceExt;
        let store = MemoryStore::new();
        let app = router(ApiState {
            views: ServingViews::Memory(store.clone()),
            ledger: LedgerViews::Memory(store.clone()),
            sales: SalesStore::Memory(store.clone()),
            auth: AuthMode::Disabled,
            registry: metrics::Registry::new(),
            health: Default::default(),
        });
        for (uri, want) in [
            ("/v1/stock/%FF", StatusCode::BAD_REQUEST),
            ("/v1/sellers/7%C3%28/payouts", StatusCode::BAD_REQUEST),
            ("/v1/stock/", StatusCode::NOT_FOUND),
            ("/v1/stock/7/", StatusCode::NOT_FOUND),
            ("/nothing", StatusCode::NOT_FOUND),
            ("/", StatusCode::NOT_FOUND),
        ] {
            let (s, b) = call(&app, uri).await;
            assert_eq!(s, want, "{uri}");
            assert!(b["error"].is_string(), "{uri}: {b}");
        }
        let (_, b) = call(&app, "/v1/stock/%FF").await;
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .starts_with("unreadable path parameter"),
            "{b}"
        );
        for method in [axum::http::Method::POST, axum::http::Method::DELETE] {
            let resp = app
                .clone()
                .oneshot(
                    axum::http::Request::builder()
                        .method(method.clone())
                        .uri("/v1/stock/7")
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let b: Value = serde_json::from_slice(&bytes).unwrap();
            assert!(b["error"].is_string(), "{method}: {b}");
        }
    }

    #[tokio::test]
    async fn metrics_are_public_text_with_the_http_histogram() {
        use tower::ServiceExt;
        let store = MemoryStore::new();
        let registry = metrics::Registry::new();
        let app = router(ApiState {
            views: ServingViews::Memory(store.clone()),
            ledger: LedgerViews::Memory(store.clone()),
            sales: SalesStore::Memory(store.clone()),
            auth: AuthMode::hs256(b"0123456789abcdef0123456789abcdef-test").unwrap(),
            registry: registry.clone(),
            health: Default::default(),
        });
        let get = |uri: &str| {
            app.clone().oneshot(
                axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
        };
        // A /v1 request without a token (401), a bad route (404), then the metrics.
        assert_eq!(
            get("/v1/stock/7").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get("/nowhere").await.unwrap().status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
        let resp = get("/metrics").await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "no token needed");
        let ctype = resp.headers()[axum::http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(ctype, "text/plain; version=0.0.4");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for line in [
            "# TYPE shopflow_http_request_duration_seconds histogram",
            r#"shopflow_http_request_duration_seconds_count{method="GET",route="/v1/stock/{sku}",status="401"} 1"#,
            r#"shopflow_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"} 1"#,
            r#"shopflow_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        // A second router on the same registry replaces the histogram instead of failing.
        let again = router(ApiState {
            views: ServingViews::Memory(store.clone()),
            ledger: LedgerViews::Memory(store.clone()),
            sales: SalesStore::Memory(store.clone()),
            auth: AuthMode::Disabled,
            registry: registry.clone(),
            health: Default::default(),
        });
        assert_eq!(call(&again, "/healthz").await.0, StatusCode::OK);
        let series: Vec<usize> = registry
            .gather()
            .iter()
            .filter(|f| f.name() == "shopflow_http_request_duration_seconds")
            .map(|f| f.get_metric().len())
            .collect();
        assert_eq!(series, vec![1], "only the new router's series");
    }
}
