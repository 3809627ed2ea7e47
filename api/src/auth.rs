//! Bearer-token authentication and role-based authorization of the query API (SPEC §6).
//!
//! Every request whose path starts with `/v1/` needs `Authorization: Bearer <JWT>`, an HS256
//! token signed with the configured secret. Its claims:
//!
//! | claim | |
//! |---|---|
//! | `sub` | string, who the caller is (logged, not checked) |
//! | `role` | `storefront`, `seller`, `analyst` or `admin` |
//! | `seller_id` | integer in 1..=2^53−1, required for `seller`, ignored for the others |
//! | `exp` | required, seconds since the epoch; checked with [`LEEWAY_SECS`] of leeway |
//! | `nbf` | optional, seconds since the epoch; a token is refused before it (with [`LEEWAY_SECS`] of leeway) |
//! | `iat` | optional, informational (not checked against the clock) |
//!
//! Who reads what is the pure function [`authorize`]: `storefront` reads `/v1/stock`,
//! `/v1/members`, `/v1/products` and `/v1/orders`; a `seller` reads only
//! `/v1/sellers/{its own id}/…`; `analyst` and `admin` read everything. A missing, malformed,
//! forged or expired token is 401 with `WWW-Authenticate: Bearer`; a valid token reading
//! what is not its role's is 403. Paths outside `/v1/` (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`, the seller web page) are public ([`is_public`]).

use std::fmt;
use std::sync::{Arc, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{new_error, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shopflow_model::MAX_ID;

/// Seconds of clock skew tolerated when checking `exp`.
pub const LEEWAY_SECS: u64 = 30;

/// The shortest accepted secret: RFC 7518 §3.2 asks for a key at least as long as the
/// hash output (256 bits for HS256).
pub const MIN_SECRET_BYTES: usize = 32;

/// The environment variable the binary reads the secret from.
pub const SECRET_ENV: &str = "SHOPFLOW_JWT_SECRET";

/// A caller's role (the `role` claim).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The shop's front end: stock, members, products, orders.
    Storefront,
    /// One seller: only `/v1/sellers/{seller_id}/…` of its own `seller_id`.
    Seller,
    /// Analysts: everything.
    Analyst,
    /// Operators: everything.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Storefront, Role::Seller, Role::Analyst, Role::Admin];

    /// The claim's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Storefront => "storefront",
            Role::Seller => "seller",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (storefront, seller, analyst or admin)"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims of a token, as signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the caller is.
    pub sub: String,
    /// The role's spelling (checked after decoding, so an unknown role gets its own error).
    pub role: String,
    /// The seller, for `role = seller`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<u64>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// A verified caller, put in the request's extensions for the handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The `sub` claim.
    pub sub: String,
    /// The role.
    pub role: Role,
    /// The seller, for sellers.
    pub seller_id: Option<u64>,
}

/// What [`authorize`] decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve the request.
    Allow,
    /// 403.
    Forbid,
}

/// Whether `path` is served without a token: everything outside `/v1/`.
pub fn is_public(path: &str) -> bool {
    !path.starts_with("/v1/")
}

/// Whether a caller of `role` (with the `seller_id` claim, for sellers) may read `path`, the
/// request's raw (not percent-decoded) URI path. Public paths are allowed to everyone.
///
/// A seller's own id is recognised exactly as the handlers parse the path segment
/// (`u64::from_str`), so `/v1/sellers/7/…` and `/v1/sellers/+7/…` are seller 7's, while a
/// segment that does not parse as an integer (`%37`, `x`) is nobody's: 403, not 400.
pub fn authorize(role: Role, seller_id: Option<u64>, path: &str) -> Decision {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Decision::Allow;
    };
    let mut segments = rest.split('/');
    let first = segments.next().unwrap_or("");
    let allowed = match role {
        Role::Analyst | Role::Admin => true,
        Role::Storefront => matches!(first, "stock" | "members" | "products" | "orders"),
        Role::Seller => {
            first == "sellers"
                && match (segments.next(), seller_id) {
                    (Some(id), Some(own)) => id.parse::<u64>() == Ok(own),
                    _ => false,
                }
        }
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::Forbid
    }
}

/// The secret is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Shorter than [`MIN_SECRET_BYTES`].
    #[error("the JWT secret must be at least {MIN_SECRET_BYTES} bytes, got {0} (generate one with e.g. `openssl rand -hex 32`)")]
    TooShort(usize),
}

/// A token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// `seller` without a seller id, or a seller id outside 1..=2^53−1.
    #[error("a seller token needs a seller id in 1..=9007199254740991")]
    SellerId,
    /// A seller id on a role that does not use one.
    #[error("only seller tokens carry a seller id (role {0})")]
    NotASeller(Role),
    /// The clock or the expiry is out of range.
    #[error("token lifetime out of range")]
    Lifetime,
    /// The JWT library failed.
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Why a request is refused with 401.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unauthorized {
    /// No `Authorization` header.
    Missing,
    /// The header is not `Bearer <token>` (or appears twice).
    MalformedHeader,
    /// The token cannot be read, its signature is wrong, it has expired, or its claims
    /// are not acceptable; the text says which.
    InvalidToken(String),
}

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let (message, challenge) = match self {
            Unauthorized::Missing => (
                "missing bearer token: send `Authorization: Bearer <JWT>` (`shopflow token` mints one)".to_string(),
                r#"Bearer realm="shopflow""#,
            ),
            Unauthorized::MalformedHeader => (
                "malformed Authorization header: expected `Bearer <JWT>`".to_string(),
                r#"Bearer realm="shopflow", error="invalid_request""#,
            ),
            Unauthorized::InvalidToken(why) => (
                format!("invalid token: {why}"),
                r#"Bearer realm="shopflow", error="invalid_token""#,
            ),
        };
        let mut resp =
            (StatusCode::UNAUTHORIZED, Json(json!({ "error": message }))).into_response();
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        resp
    }
}

fn forbidden(p: &Principal, path: &str) -> Response {
    let whose = match (p.role, p.seller_id) {
        (Role::Seller, Some(id)) => format!("seller {id}"),
        (role, _) => format!("role {role}"),
    };
    (
        StatusCode::FORBIDDEN,
        Json(json!({ "error": format!("{whose} may not read {path}") })),
    )
        .into_response()
}

/// HS256 keys and the validation rules of the tokens.
pub struct Hs256 {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Hs256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hs256 { secret: <redacted> }")
    }
}

impl Hs256 {
    /// Keys from a shared secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(secret: &[u8]) -> Result<Hs256, SecretError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort(secret.len()));
        }
        install_provider();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        // RFC 7519 §4.1.5: a token is not accepted before its `nbf`, when it has one.
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp".to_string()].into();
        Ok(Hs256 {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// Signs `claims` as they are (tests use this to make bad tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, MintError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// A token for `role` valid for `ttl_secs` from now, with `iat` = now.
    pub fn mint(
        &self,
        sub: &str,
        role: Role,
        seller_id: Option<u64>,
        ttl_secs: u64,
    ) -> Result<String, MintError> {
        match (role, seller_id) {
            (Role::Seller, Some(id)) if (1..=MAX_ID).contains(&id) => {}
            (Role::Seller, _) => return Err(MintError::SellerId),
            (_, Some(_)) => return Err(MintError::NotASeller(role)),
            (_, None) => {}
        }
        let now = now_secs();
        let exp = now.checked_add(ttl_secs).ok_or(MintError::Lifetime)?;
        self.sign(&Claims {
            sub: sub.to_string(),
            role: role.as_str().to_string(),
            seller_id,
            exp,
            iat: Some(now),
        })
    }

    /// Checks a token's signature, algorithm, expiry and claims.
    pub fn verify(&self, token: &str) -> Result<Principal, Unauthorized> {
        let invalid = |why: String| Unauthorized::InvalidToken(why);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "expired".into(),
                    ErrorKind::ImmatureSignature => "not yet valid (nbf)".into(),
                    ErrorKind::InvalidClaimFormat(c) => {
                        format!("`{c}` is not a time in seconds since the epoch")
                    }
                    ErrorKind::InvalidSignature => "bad signature".into(),
                    ErrorKind::InvalidAlgorithm => "the algorithm must be HS256".into(),
                    ErrorKind::MissingRequiredClaim(c) => format!("no `{c}` claim"),
                    ErrorKind::Json(e) => format!("unreadable header or claims ({e})"),
                    _ => "not a well-formed JWT".into(),
                })
            })?;
        if data.header.crit.is_some() {
            return Err(invalid(
                "critical header extensions are not supported".into(),
            ));
        }
        let c = data.claims;
        let role: Role = c
            .role
            .parse()
            .map_err(|_| invalid(format!("unknown role {:?}", c.role)))?;
        let seller_id = match (role, c.seller_id) {
            (Role::Seller, Some(id)) if (1..=MAX_ID).contains(&id) => Some(id),
            (Role::Seller, Some(id)) => {
                return Err(invalid(format!("seller_id {id} out of range")))
            }
            (Role::Seller, None) => return Err(invalid("a seller token needs seller_id".into())),
            _ => None,
        };
        Ok(Principal {
            sub: c.sub,
            role,
            seller_id,
        })
    }
}

/// How the API authenticates.
#[derive(Clone, Debug)]
pub enum AuthMode {
    /// No authentication at all: **for unit tests only**. The binary never builds it;
    /// [`protect`] logs a warning when it is used.
    Disabled,
    /// HS256 bearer tokens (SPEC §6).
    Hs256(Arc<Hs256>),
}

impl AuthMode {
    /// HS256 with `secret`.
    pub fn hs256(secret: &[u8]) -> Result<AuthMode, SecretError> {
        Ok(AuthMode::Hs256(Arc::new(Hs256::new(secret)?)))
    }
}

/// Wraps every route of `routes` (and its 404 fallback) in the auth middleware.
pub fn protect(routes: Router, mode: AuthMode) -> Router {
    if matches!(mode, AuthMode::Disabled) {
        tracing::warn!("API authentication is DISABLED (AuthMode::Disabled): for unit tests only");
    }
    routes.layer(axum::middleware::from_fn_with_state(mode, require))
}

/// The middleware: public paths pass; `/v1/…` needs a valid token whose role may read it.
async fn require(State(mode): State<AuthMode>, mut req: Request, next: Next) -> Response {
    let keys = match &mode {
        AuthMode::Disabled => return next.run(req).await,
        AuthMode::Hs256(keys) => keys,
    };
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    let principal = match bearer(req.headers()).and_then(|t| keys.verify(t)) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(path, reason = ?e, "401");
            return e.into_response();
        }
    };
    if authorize(principal.role, principal.seller_id, path) == Decision::Forbid {
        tracing::debug!(path, sub = %principal.sub, role = %principal.role, "403");
        return forbidden(&principal, path);
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, Unauthorized> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(Unauthorized::Missing)?;
    if values.next().is_some() {
        return Err(Unauthorized::MalformedHeader);
    }
    let text = value.to_str().map_err(|_| Unauthorized::MalformedHeader)?;
    let (scheme, token) = text
        .trim()
        .split_once(' ')
        .ok_or(Unauthorized::MalformedHeader)?;
    let token = token.trim_start();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(Unauthorized::MalformedHeader);
    }
    Ok(token)
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh random secret: 32 bytes from the OS, as 64 hex digits.
pub fn random_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

// --- The HS256-only crypto provider -------------------------------------------------------
//
// jsonwebtoken 10+ delegates signing to a `CryptoProvider`; its two bundled ones bring either
// a C library (aws-lc-rs) or every RustCrypto algorithm (RSA, P-256, P-384, Ed25519). HS256
// needs only HMAC-SHA256, so this provider implements just that and refuses the rest.

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

struct Hs256Signer(HmacSha256);
struct Hs256Verifier(HmacSha256);

fn hmac_key(family: AlgorithmFamily, secret: &[u8]) -> jsonwebtoken::errors::Result<HmacSha256> {
    use hmac::Mac;
    if family != AlgorithmFamily::Hmac {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    HmacSha256::new_from_slice(secret).map_err(|_| new_error(ErrorKind::InvalidKeyFormat))
}

impl Signer<Vec<u8>> for Hs256Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        use hmac::Mac;
        let mut mac = self.0.clone();
        mac.update(msg);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl JwtSigner for Hs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl Verifier<Vec<u8>> for Hs256Verifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        use hmac::Mac;
        let mut mac = self.0.clone();
        mac.update(msg);
        // Constant-time comparison.
        mac.verify_slice(sig).map_err(signature::Error::from_source)
    }
}

impl JwtVerifier for Hs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

static HS256_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: |alg, key| match alg {
        Algorithm::HS256 => Ok(Box::new(Hs256Signer(hmac_key(
            key.family(),
            key.as_bytes(),
        )?))),
        _ => Err(new_error(ErrorKind::InvalidAlgorithm)),
    },
    verifier_factory: |alg, key| match alg {
        Algorithm::HS256 => Ok(Box::new(Hs256Verifier(hmac_key(
            key.family(),
            key.try_get_as_bytes()?,
        )?))),
        _ => Err(new_error(ErrorKind::InvalidAlgorithm)),
    },
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes [`HS256_ONLY`] jsonwebtoken's provider for the process (before its first use).
fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if HS256_ONLY.install_default().is_err() {
            // Another provider was installed first; it handles HS256 as well.
            tracing::debug!("jsonwebtoken crypto provider already installed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{router, ApiState};
    use axum::http::StatusCode;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use serde_json::Value;
    use shopflow_model::{Output, StockLevel, ViewBatch};
    use shopflow_sinks::{LedgerViews, MemoryStore, SalesStore, ServingViews};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";
    const OTHER_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210-other";

    /// Every endpoint of SPEC §6 under /v1, with seller 4 where a seller id goes, and
    /// whether it is a storefront (true) or a seller (false) endpoint.
    const ENDPOINTS: [(&str, bool); 11] = [
        ("/v1/stock/7", true),
        ("/v1/members/2", true),
        ("/v1/members/2/points", true),
        ("/v1/members/2/orders", true),
        ("/v1/products/7/rating", true),
        ("/v1/products/7/also-bought?limit=5", true),
        ("/v1/orders/9", true),
        ("/v1/sellers/4/settlements?from=0&to=10", false),
        ("/v1/sellers/4/payouts", false),
        ("/v1/sellers/4/tax-invoices", false),
        ("/v1/sellers/4/sales?bucket=day", false),
    ];

    /// The rule of SPEC §6 written independently of [`authorize`].
    fn expected(
        role: Role,
        claim: Option<u64>,
        storefront_endpoint: bool,
        seller: u64,
    ) -> Decision {
        let ok = match role {
            Role::Analyst | Role::Admin => true,
            Role::Storefront => storefront_endpoint,
            Role::Seller => !storefront_endpoint && claim == Some(seller),
        };
        if ok {
            Decision::Allow
        } else {
            Decision::Forbid
        }
    }

    fn path_of(uri: &str) -> &str {
        uri.split('?').next().unwrap()
    }

    #[test]
    fn authorize_every_role_claim_and_endpoint() {
        for role in Role::ALL {
            for claim in [None, Some(4), Some(5), Some(40)] {
                for (uri, storefront) in ENDPOINTS {
                    for seller in [4u64, 5] {
                        let uri = uri.replace("/sellers/4/", &format!("/sellers/{seller}/"));
                        assert_eq!(
                            authorize(role, claim, path_of(&uri)),
                            expected(role, claim, storefront, seller),
                            "{role} claim {claim:?} {uri}"
                        );
                    }
                }
                for public in [
                    "/healthz",
                    "/readyz",
                    "/metrics",
                    "/openapi.json",
                    "/seller",
                    "/seller/app.js",
                    "/",
                    "/v1",
                ] {
                    assert!(is_public(public), "{public}");
                    assert_eq!(
                        authorize(role, claim, public),
                        Decision::Allow,
                        "{role} {public}"
                    );
                }
            }
        }
    }

    #[test]
    fn authorize_corner_paths() {
        use Decision::{Allow, Forbid};
        let seller7 = |p| authorize(Role::Seller, Some(7), p);
        let store = |p| authorize(Role::Storefront, None, p);
        for (path, want) in [
            ("/v1/sellers/7", Allow),
            ("/v1/sellers/7/", Allow),
            ("/v1/sellers/7/anything/else", Allow),
            ("/v1/sellers/+7/payouts", Allow), // the handler reads +7 as 7 too
            ("/v1/sellers/007/payouts", Allow),
            ("/v1/sellers/70/payouts", Forbid),
            ("/v1/sellers/%37/payouts", Forbid),
            ("/v1/sellers/x/payouts", Forbid),
            ("/v1/sellers//payouts", Forbid),
            ("/v1/sellers", Forbid),
            ("/v1/sellers/", Forbid),
            ("/v1/sellersX/7/payouts", Forbid),
            ("/v1/Sellers/7/payouts", Forbid),
            ("/v1//sellers/7/payouts", Forbid),
            ("/v1/stock/7", Forbid),
            ("/v1/unknown", Forbid),
            ("/v1/", Forbid),
        ] {
            assert_eq!(seller7(path), want, "seller 7 {path}");
        }
        assert_eq!(
            authorize(Role::Seller, None, "/v1/sellers/7/payouts"),
            Forbid
        );
        for (path, want) in [
            ("/v1/stock", Allow),
            ("/v1/stock/", Allow),
            ("/v1/members/1/points", Allow),
            ("/v1/stockpile/1", Forbid),
            ("/v1/sellers/1/payouts", Forbid),
            ("/v1/unknown", Forbid),
            ("/v1/", Forbid),
            ("/v1//stock/1", Forbid),
        ] {
            assert_eq!(store(path), want, "storefront {path}");
        }
        for role in [Role::Analyst, Role::Admin] {
            assert_eq!(authorize(role, None, "/v1/unknown"), Allow);
            assert_eq!(authorize(role, None, "/v1/sellers/9/sales"), Allow);
        }
    }

    fn app() -> Router {
        let store = MemoryStore::new();
        store.apply(Output::Views(ViewBatch {
            as_of: 1234,
            stock: vec![StockLevel {
                sku: 7,
                on_hand: 5,
                reserved: 1,
                available: 4,
            }],
            ..ViewBatch::default()
        }));
        router(ApiState {
            views: ServingViews::Memory(store.clone()),
            ledger: LedgerViews::Memory(store.clone()),
            sales: SalesStore::Memory(store.clone()),
            auth: AuthMode::hs256(SECRET).unwrap(),
            registry: crate::metrics::Registry::new(),
            health: Default::default(),
        })
    }

    fn keys() -> Hs256 {
        Hs256::new(SECRET).unwrap()
    }

    fn token(role: Role, seller: Option<u64>) -> String {
        keys().mint("test", role, seller, 600).unwrap()
    }

    /// GET `uri` with the given headers: (status, WWW-Authenticate, body).
    async fn call(
        app: &Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, Value) {
        use tower::ServiceExt;
        let mut req = axum::http::Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app
            .clone()
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, challenge, body)
    }

    async fn call_as(app: &Router, uri: &str, token: &str) -> (StatusCode, Option<String>, Value) {
        call(app, uri, &[("authorization", &format!("Bearer {token}"))]).await
    }

    #[tokio::test]
    async fn every_role_on_every_endpoint() {
        let app = app();
        let tokens = [
            (Role::Storefront, None),
            (Role::Seller, Some(4)),
            (Role::Seller, Some(5)),
            (Role::Analyst, None),
            (Role::Admin, None),
        ];
        for (role, seller) in tokens {
            let t = token(role, seller);
            for (uri, storefront) in ENDPOINTS {
                let (s, challenge, body) = call_as(&app, uri, &t).await;
                let who = format!("{role} {seller:?} {uri}");
                match expected(role, seller, storefront, 4) {
                    Decision::Allow => {
                        assert!(
                            ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&s),
                            "{who}: {s} {body}"
                        );
                        // Served by the route's handler: an answer or its own 404.
                        assert!(
                            s == StatusCode::OK
                                || (s == StatusCode::NOT_FOUND && body["error"].is_string()),
                            "{who}: {s} {body}"
                        );
                    }
                    Decision::Forbid => {
                        assert_eq!(s, StatusCode::FORBIDDEN, "{who}: {body}");
                        assert!(
                            body["error"].as_str().unwrap().contains("may not read"),
                            "{who}: {body}"
                        );
                        assert_eq!(challenge, None, "{who}");
                    }
                }
            }
        }
        // A served answer goes through: storefront reads stock 7.
        let (s, _, b) = call_as(&app, "/v1/stock/7", &token(Role::Storefront, None)).await;
        assert_eq!((s, b["available"].clone()), (StatusCode::OK, 4.into()));
        // A seller reading another seller: 403 whatever the endpoint, known seller or not.
        let seller4 = token(Role::Seller, Some(4));
        for uri in [
            "/v1/sellers/5/payouts",
            "/v1/sellers/5/sales",
            "/v1/sellers/40/settlements",
            "/v1/stock/7",
            "/v1/orders/9",
        ] {
            assert_eq!(
                call_as(&app, uri, &seller4).await.0,
                StatusCode::FORBIDDEN,
                "{uri}"
            );
        }
        // Unknown /v1 path: 401 without a token, 404 for admin, 403 for storefront.
        assert_eq!(
            call(&app, "/v1/nothing", &[]).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call_as(&app, "/v1/nothing", &token(Role::Admin, None))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call_as(&app, "/v1/nothing", &token(Role::Storefront, None))
                .await
                .0,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn public_paths_need_no_token() {
        let app = app();
        let (s, _, _) = call(&app, "/healthz", &[]).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, b) = call(&app, "/readyz", &[]).await;
        assert_eq!((s, b["ready"].clone()), (StatusCode::OK, true.into()));
        let (s, _, b) = call(&app, "/openapi.json", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            b,
            serde_json::from_str::<Value>(crate::openapi::OPENAPI_JSON).unwrap()
        );
        // A bad token on a public path is ignored, not refused.
        let (s, _, _) = call(&app, "/healthz", &[("authorization", "Bearer nonsense")]).await;
        assert_eq!(s, StatusCode::OK);
        // The seller page is public (its data comes from /v1/ with the caller's token).
        assert_eq!(call(&app, "/seller", &[]).await.0, StatusCode::OK);
        // Not routed, but public: 404, not 401.
        assert_eq!(call(&app, "/nothing", &[]).await.0, StatusCode::NOT_FOUND);
    }

    /// A token with the given header and claims JSON, signed with HMAC-SHA256 of `secret`
    /// whatever the header says.
    fn raw_token(header: &str, claims: &Value, secret: &[u8]) -> String {
        use hmac::Mac;
        let msg = format!("{}.{}", B64.encode(header), B64.encode(claims.to_string()));
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(msg.as_bytes());
        format!("{msg}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    #[tokio::test]
    async fn bad_tokens_are_401_with_a_challenge() {
        let app = app();
        let uri = "/v1/stock/7";
        let now = now_secs();
        let good = serde_json::json!({"sub": "a", "role": "admin", "exp": now + 600});
        let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
        // Sanity: the hand-made token is accepted.
        let ok = raw_token(hs256, &good, SECRET);
        assert_eq!(call_as(&app, uri, &ok).await.0, StatusCode::OK);
        let forged = Hs256::new(OTHER_SECRET)
            .unwrap()
            .mint("a", Role::Admin, None, 600)
            .unwrap();
        let expired = keys()
            .sign(&Claims {
                sub: "a".into(),
                role: "admin".into(),
                seller_id: None,
                exp: now - LEEWAY_SECS - 60,
                iat: None,
            })
            .unwrap();
        let alg_none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(good.to_string())
        );
        let mut tampered = ok.clone();
        tampered.insert_str(ok.find('.').unwrap() + 1, "eyJ"); // claims no longer signed
        type Headers = Vec<(&'static str, String)>;
        let cases: Vec<(&str, Headers, &str)> = vec![
            ("missing header", vec![], r#"Bearer realm="shopflow""#),
            (
                "empty header",
                vec![("authorization", String::new())],
                "invalid_request",
            ),
            (
                "basic auth",
                vec![("authorization", "Basic YWRtaW46YWRtaW4=".into())],
                "invalid_request",
            ),
            (
                "bearer without token",
                vec![("authorization", "Bearer".into())],
                "invalid_request",
            ),
            (
                "bearer with blank token",
                vec![("authorization", "Bearer   ".into())],
                "invalid_request",
            ),
            (
                "token with a space",
                vec![("authorization", format!("Bearer {ok} x"))],
                "invalid_request",
            ),
            (
                "two headers",
                vec![
                    ("authorization", format!("Bearer {ok}")),
                    ("authorization", format!("Bearer {ok}")),
                ],
                "invalid_request",
            ),
            (
                "not a JWT",
                vec![("authorization", "Bearer abc.def".into())],
                "invalid_token",
            ),
            (
                "garbage",
                vec![("authorization", "Bearer !!!.???.***".into())],
                "invalid_token",
            ),
            (
                "forged (other secret)",
                vec![("authorization", format!("Bearer {forged}"))],
                "invalid_token",
            ),
            (
                "tampered claims",
                vec![("authorization", format!("Bearer {tampered}"))],
                "invalid_token",
            ),
            (
                "expired",
                vec![("authorization", format!("Bearer {expired}"))],
                "invalid_token",
            ),
            (
                "alg none",
                vec![("authorization", format!("Bearer {alg_none}"))],
                "invalid_token",
            ),
            (
                "alg none, with a signature",
                vec![(
                    "authorization",
                    format!("Bearer {}", raw_token(r#"{"alg":"none"}"#, &good, SECRET)),
                )],
                "invalid_token",
            ),
            (
                "alg HS384 (HS256-signed)",
                vec![(
                    "authorization",
                    format!("Bearer {}", raw_token(r#"{"alg":"HS384"}"#, &good, SECRET)),
                )],
                "invalid_token",
            ),
            (
                "alg RS256",
                vec![(
                    "authorization",
                    format!("Bearer {}", raw_token(r#"{"alg":"RS256"}"#, &good, SECRET)),
                )],
                "invalid_token",
            ),
            (
                "crit header",
                vec![(
                    "authorization",
                    format!(
                        "Bearer {}",
                        raw_token(r#"{"alg":"HS256","crit":["x"],"x":1}"#, &good, SECRET)
                    ),
                )],
                "invalid_token",
            ),
        ];
        let claims_cases = [
            ("no exp", serde_json::json!({"sub": "a", "role": "admin"})),
            (
                "exp not a number",
                serde_json::json!({"sub": "a", "role": "admin", "exp": "tomorrow"}),
            ),
            ("no role", serde_json::json!({"sub": "a", "exp": now + 600})),
            (
                "unknown role",
                serde_json::json!({"sub": "a", "role": "root", "exp": now + 600}),
            ),
            (
                "role in capitals",
                serde_json::json!({"sub": "a", "role": "ADMIN", "exp": now + 600}),
            ),
            (
                "no sub",
                serde_json::json!({"role": "admin", "exp": now + 600}),
            ),
            (
                "seller without seller_id",
                serde_json::json!({"sub": "s", "role": "seller", "exp": now + 600}),
            ),
            (
                "seller_id 0",
                serde_json::json!({"sub": "s", "role": "seller", "seller_id": 0, "exp": now + 600}),
            ),
            (
                "seller_id as a string",
                serde_json::json!({"sub": "s", "role": "seller", "seller_id": "4", "exp": now + 600}),
            ),
        ];
        let claims_tokens: Vec<(String, String)> = claims_cases
            .iter()
            .map(|(what, c)| (what.to_string(), raw_token(hs256, c, SECRET)))
            .collect();
        let mut all: Vec<(String, Headers, &str)> = cases
            .into_iter()
            .map(|(w, h, c)| (w.to_string(), h, c))
            .collect();
        for (what, t) in &claims_tokens {
            all.push((
                what.clone(),
                vec![("authorization", format!("Bearer {t}"))],
                "invalid_token",
            ));
        }
        for (what, headers, challenge) in all {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            for uri in [uri, "/v1/sellers/4/payouts", "/v1/nothing"] {
                let (s, got, body) = call(&app, uri, &headers).await;
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{what} {uri}: {body}");
                let got = got.unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
                assert!(got.starts_with("Bearer "), "{what}: {got}");
                assert!(got.contains(challenge), "{what}: {got}");
                assert!(body["error"].is_string(), "{what}: {body}");
            }
        }
    }

    #[tokio::test]
    async fn token_details() {
        let app = app();
        let now = now_secs();
        // Within the leeway an expired token still passes; the scheme is case-insensitive.
        let t = keys()
            .sign(&Claims {
                sub: "a".into(),
                role: "analyst".into(),
                seller_id: None,
                exp: now - 5,
                iat: None,
            })
            .unwrap();
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let (s, _, b) = call(
                &app,
                "/v1/stock/7",
                &[("authorization", &format!("{scheme} {t}"))],
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{scheme}: {b}");
        }
        // A seller_id on another role is ignored; extra claims are ignored.
        let t = raw_token(
            r#"{"alg":"HS256"}"#,
            &serde_json::json!({"sub": "x", "role": "storefront", "seller_id": 4, "exp": now + 60, "aux": [1]}),
            SECRET,
        );
        assert_eq!(call_as(&app, "/v1/stock/7", &t).await.0, StatusCode::OK);
        assert_eq!(
            call_as(&app, "/v1/sellers/4/payouts", &t).await.0,
            StatusCode::FORBIDDEN
        );
        // Messages say what is wrong.
        let expired = keys().sign(&Claims {
            sub: "a".into(),
            role: "admin".into(),
            seller_id: None,
            exp: now - 3600,
            iat: Some(now - 7200),
        });
        let (_, _, b) = call_as(&app, "/v1/stock/7", &expired.unwrap()).await;
        assert_eq!(b["error"], "invalid token: expired");
        let (_, _, b) = call_as(&app, "/v1/sellers/5/payouts", &token(Role::Seller, Some(4))).await;
        assert_eq!(b["error"], "seller 4 may not read /v1/sellers/5/payouts");
        let (_, _, b) = call_as(
            &app,
            "/v1/sellers/5/payouts",
            &token(Role::Storefront, None),
        )
        .await;
        assert_eq!(
            b["error"],
            "role storefront may not read /v1/sellers/5/payouts"
        );
    }

    /// Found by tests/fuzz.rs: `nbf` was not checked, so a token was accepted before its
    /// not-before time.
    #[tokio::test]
    async fn not_before_is_checked() {
        let app = app();
        let now = now_secs();
        let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
        let with_nbf = |nbf: Value| {
            let claims =
                serde_json::json!({"sub": "a", "role": "admin", "exp": now + 600, "nbf": nbf});
            raw_token(hs256, &claims, SECRET)
        };
        for (nbf, want, error) in [
            (Value::from(now - 60), StatusCode::OK, None),
            (Value::from(now + 5), StatusCode::OK, None), // within the leeway
            (
                Value::from(now + LEEWAY_SECS + 60),
                StatusCode::UNAUTHORIZED,
                Some("invalid token: not yet valid (nbf)"),
            ),
            (
                Value::from(u64::MAX),
                StatusCode::UNAUTHORIZED,
                Some("invalid token: not yet valid (nbf)"),
            ),
            (
                Value::from("yesterday"),
                StatusCode::UNAUTHORIZED,
                Some("invalid token: `nbf` is not a time in seconds since the epoch"),
            ),
            (Value::from(-1), StatusCode::UNAUTHORIZED, None),
        ] {
            let (s, _, b) = call_as(&app, "/v1/stock/7", &with_nbf(nbf.clone())).await;
            assert_eq!(s, want, "nbf {nbf}: {b}");
            if let Some(e) = error {
                assert_eq!(b["error"], e, "nbf {nbf}");
            }
        }
    }

    #[test]
    fn keys_and_minting() {
        assert!(matches!(
            Hs256::new(b"short"),
            Err(SecretError::TooShort(5))
        ));
        assert!(Hs256::new(&[b'x'; MIN_SECRET_BYTES]).is_ok());
        let k = keys();
        assert!(matches!(
            k.mint("s", Role::Seller, None, 60),
            Err(MintError::SellerId)
        ));
        assert!(matches!(
            k.mint("s", Role::Seller, Some(0), 60),
            Err(MintError::SellerId)
        ));
        assert!(matches!(
            k.mint("s", Role::Admin, Some(3), 60),
            Err(MintError::NotASeller(Role::Admin))
        ));
        assert!(matches!(
            k.mint("s", Role::Admin, None, u64::MAX),
            Err(MintError::Lifetime)
        ));
        let t = k.mint("bob", Role::Seller, Some(7), 60).unwrap();
        assert_eq!(
            k.verify(&t),
            Ok(Principal {
                sub: "bob".into(),
                role: Role::Seller,
                seller_id: Some(7)
            })
        );
        let claims: Value =
            serde_json::from_slice(&B64.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        let now = now_secs();
        assert_eq!(claims["role"], "seller");
        assert!(
            claims["exp"].as_u64().unwrap().abs_diff(now + 60) <= 2,
            "{claims}"
        );
        assert!(
            claims["iat"].as_u64().unwrap().abs_diff(now) <= 2,
            "{claims}"
        );
        let header: Value =
            serde_json::from_slice(&B64.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
        let s = random_secret().unwrap();
        assert_eq!(s.len(), 64);
        assert_ne!(s, random_secret().unwrap());
        assert!(Hs256::new(s.as_bytes()).is_ok());
        assert!(!format!("{:?}", AuthMode::hs256(SECRET).unwrap()).contains("0123"));
    }

    #[tokio::test]
    async fn disabled_mode_lets_everything_through() {
        let store = MemoryStore::new();
        let app = router(ApiState {
            views: ServingViews::Memory(store.clone()),
            ledger: LedgerViews::Memory(store.clone()),
            sales: SalesStore::Memory(store.clone()),
            auth: AuthMode::Disabled,
            registry: crate::metrics::Registry::new(),
            health: Default::default(),
        });
        assert_eq!(
            call(&app, "/v1/stock/7", &[]).await.0,
            StatusCode::NOT_FOUND
        );
        // Each described /v1 route reaches its handler: a bad id is the handler's 400.
        let doc: Value = serde_json::from_str(crate::openapi::OPENAPI_JSON).unwrap();
        for path in doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|p| p.starts_with("/v1/"))
        {
            let uri = path
                .replace("{seller_id}", "0")
                .replace("{sku}", "0")
                .replace("{member_id}", "0")
                .replace("{order_id}", "0");
            let (s, _, b) = call(&app, &uri, &[]).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {b}");
            assert!(
                b["error"].as_str().unwrap().contains("must be an integer"),
                "{path}: {b}"
            );
        }
    }
}
