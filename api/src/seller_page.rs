//! The seller web page, `GET /seller`: one self-contained HTML file
//! (`dashboards/seller/index.html`, compiled in) that signs in with a JWT, reads
//! `/v1/sellers/{id}/sales`, `/settlements`, `/payouts` and `/tax-invoices` with it, and
//! draws a live sales chart and the settlement summary.
//!
//! The page itself is public (it holds no data); every number on it comes from the `/v1/` API
//! with the caller's own bearer token. It loads nothing from anywhere else, and the
//! Content-Security-Policy sent with it ([`CSP`]) makes the browser refuse any outside
//! script, style, image, font or connection, so it works offline.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::IntoResponse;

/// The page.
pub const SELLER_HTML: &str = include_str!("../../dashboards/seller/index.html");

/// What the page may load: its own inline script and style, `data:` images (the empty
/// favicon) and requests to this server only.
pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                       img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                       frame-ancestors 'none'";

/// `GET /seller`.
pub async fn serve() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, CSP),
            (REFERRER_POLICY, "no-referrer"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
        ],
        SELLER_HTML,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{router, ApiState, AuthMode};
    use axum::http::{Request, StatusCode};
    use shopflow_sinks::{LedgerViews, MemoryStore, SalesStore, ServingViews};
    use tower::ServiceExt;

    #[test]
    fn page_is_self_contained() {
        let page = SELLER_HTML.to_ascii_lowercase();
        for outside in [
            "src=\"http",
            "src='http",
            "href=\"http",
            "href='http",
            "src=\"//",
            "href=\"//",
            "<script src",
            "<link rel=\"stylesheet\"",
            "@import",
            "url(",
            "fetch(\"http",
            "fetch('http",
        ] {
            assert!(
                !page.contains(outside),
                "the page refers outside: {outside}"
            );
        }
        // The only absolute URL is the SVG namespace (a name, not a request).
        let absolute: Vec<&str> = page
            .match_indices("http")
            .map(|(i, _)| &page[i..(i + 30).min(page.len())])
            .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
            .collect();
        assert!(
            absolute
                .iter()
                .all(|s| s.starts_with("http://www.w3.org/2000/svg")),
            "{absolute:?}"
        );
        assert!(!page.contains("innerhtml"), "data is inserted as text only");
        // The hooks the browser test and users' scripts read.
        for id in [
            "id=\"status\"",
            "id=\"sales-chart\"",
            "data-testid=\"series-count\"",
            "id=\"total-gross\"",
            "id=\"total-net\"",
            "id=\"settle-gross\"",
            "id=\"settle-commission\"",
            "id=\"settle-fee\"",
            "id=\"settle-payout\"",
            "id=\"payouts\"",
            "id=\"invoices\"",
            "id=\"as-of\"",
            "/v1/sellers/",
            "#token=",
        ] {
            assert!(SELLER_HTML.contains(id), "{id}");
        }
    }

    #[tokio::test]
    async fn served_without_a_token_with_a_strict_policy() {
        let store = MemoryStore::new();
        let app = router(ApiState {
            views: ServingViews::Memory(store.clone()),
            ledger: LedgerViews::Memory(store.clone()),
            sales: SalesStore::Memory(store),
            auth: AuthMode::hs256(&[7u8; 32]).unwrap(),
            registry: crate::metrics::Registry::new(),
            health: Default::default(),
        });
        let resp = app
            .oneshot(
                Request::get("/seller")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[CONTENT_SECURITY_POLICY], CSP);
        assert!(CSP.contains("connect-src 'self'") && CSP.contains("default-src 'none'"));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(body, SELLER_HTML.as_bytes());
    }
}
