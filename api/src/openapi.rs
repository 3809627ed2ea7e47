//! The OpenAPI 3.0 description of the API, served at `GET /openapi.json` without a token.
//!
//! The document is hand-written JSON (`api/openapi.json`) compiled into the binary; the
//! tests below keep it in step with the router: every `/v1/` route is described, every
//! described route is served, and each operation's `x-roles` agree with [`crate::auth::authorize`].

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// The document.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{authorize, Decision, Role};
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
    }

    /// The `/v1/` paths the router serves, read from the `.route("…")` calls in lib.rs, so a
    /// route added there without being described fails here.
    fn routed_v1_paths() -> Vec<String> {
        let src = include_str!("lib.rs");
        let mut out: Vec<String> = src
            .split(".route(\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .filter(|p| p.starts_with("/v1/"))
            .map(str::to_string)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn is_openapi_3_with_bearer_security() {
        let d = doc();
        assert!(d["openapi"].as_str().unwrap().starts_with("3.0."));
        let scheme = &d["components"]["securitySchemes"]["bearerAuth"];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        assert_eq!(scheme["bearerFormat"], "JWT");
        assert_eq!(d["security"], serde_json::json!([{"bearerAuth": []}]));
        assert!(d["components"]["schemas"]["Error"]["properties"]["error"].is_object());
        // Every $ref points at something that exists.
        let text = OPENAPI_JSON;
        for r in text.split("\"$ref\": \"#/").skip(1) {
            let target = r.split('"').next().unwrap();
            let mut node = &d;
            for part in target.split('/') {
                node = &node[part];
            }
            assert!(node.is_object(), "dangling $ref #/{target}");
        }
    }

    #[test]
    fn describes_every_routed_path_and_only_those() {
        let d = doc();
        let paths = d["paths"].as_object().unwrap();
        let routed = routed_v1_paths();
        assert!(routed.len() >= 11, "{routed:?}");
        for p in &routed {
            assert!(paths.contains_key(p), "route {p} is not in openapi.json");
        }
        for p in paths.keys() {
            if p.starts_with("/v1/") {
                assert!(
                    routed.contains(p),
                    "openapi.json describes {p}, which is not routed"
                );
            } else {
                // Public paths say so.
                assert_eq!(paths[p]["get"]["security"], serde_json::json!([]), "{p}");
            }
        }
        for public in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            assert!(paths.contains_key(public), "{public}");
        }
        for sales in ["/v1/sellers/{seller_id}/sales"] {
            let params = paths[sales]["get"]["parameters"].to_string();
            for q in ["seller_id", "from", "to", "bucket"] {
                assert!(
                    params.contains(&format!("parameters/{q}\"")),
                    "{sales}: {q}"
                );
            }
        }
    }

    #[test]
    fn x_roles_agree_with_authorize() {
        let d = doc();
        for (path, item) in d["paths"].as_object().unwrap() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let op = &item["get"];
            assert!(op["responses"]["401"].is_object(), "{path}");
            assert!(op["responses"]["403"].is_object(), "{path}");
            let roles: Vec<&str> = op["x-roles"]
                .as_array()
                .unwrap_or_else(|| panic!("{path}: x-roles"))
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let concrete = path
                .replace("{seller_id}", "4")
                .replace("{sku}", "4")
                .replace("{member_id}", "4")
                .replace("{order_id}", "4");
            for role in Role::ALL {
                let want = if roles.contains(&role.as_str()) {
                    Decision::Allow
                } else {
                    Decision::Forbid
                };
                assert_eq!(authorize(role, Some(4), &concrete), want, "{role} {path}");
            }
        }
    }
}
