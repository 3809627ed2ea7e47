//! API tokens: `shopflow token` mints one, and `run`/`demo` turn `--jwt-secret` (or
//! `SHOPFLOW_JWT_SECRET`) into the API's [`AuthMode`].

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use shopflow_api::auth::{random_secret, Hs256, Role, MIN_SECRET_BYTES, SECRET_ENV};
use shopflow_api::AuthMode;

/// `shopflow token`
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The caller's role.
    #[arg(long, value_parser = ["storefront", "seller", "analyst", "admin"])]
    role: String,
    /// The seller a `seller` token may read (required for `--role seller`, refused otherwise).
    #[arg(long)]
    seller_id: Option<u64>,
    /// The `sub` claim (default: the role, or `seller-{id}`).
    #[arg(long)]
    sub: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
    /// The HS256 secret the API was started with.
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    secret: Option<String>,
}

/// The one-line refusal when no secret is configured.
fn no_secret(what: &str) -> anyhow::Error {
    anyhow!(
        "{what} needs the API's JWT secret: set {SECRET_ENV} or pass --{} (at least {MIN_SECRET_BYTES} bytes, e.g. from `openssl rand -hex 32`)",
        if what == "token" { "secret" } else { "jwt-secret" }
    )
}

/// `shopflow token`: prints a signed token on stdout, nothing else.
pub fn token(args: TokenArgs) -> Result<()> {
    let secret = args.secret.ok_or_else(|| no_secret("token"))?;
    let keys = Hs256::new(secret.as_bytes())?;
    let role: Role = args.role.parse().map_err(|e: String| anyhow!(e))?;
    let sub = args.sub.unwrap_or_else(|| match args.seller_id {
        Some(id) if role == Role::Seller => format!("seller-{id}"),
        _ => role.to_string(),
    });
    if args.ttl_secs == 0 {
        bail!("--ttl-secs must be at least 1");
    }
    println!("{}", keys.mint(&sub, role, args.seller_id, args.ttl_secs)?);
    Ok(())
}

/// The API's auth for `run`: a configured secret, or a one-line refusal.
pub fn run_auth(secret: Option<&str>) -> Result<AuthMode> {
    let secret = secret.ok_or_else(|| no_secret("run"))?;
    AuthMode::hs256(secret.as_bytes()).context("--jwt-secret / SHOPFLOW_JWT_SECRET")
}

/// The API's auth for `demo`: the configured secret, or a random one for this session.
pub struct DemoAuth {
    /// What the API checks.
    pub mode: AuthMode,
    /// The keys, to mint the tokens the demo prints.
    pub keys: Hs256,
    /// The secret, when generated here (so that `shopflow token` can mint more).
    pub generated: Option<String>,
}

/// See [`DemoAuth`].
pub fn demo_auth(secret: Option<&str>) -> Result<DemoAuth> {
    let (secret, generated) = match secret {
        Some(s) => (s.to_string(), None),
        None => {
            let s = random_secret().context("cannot generate a JWT secret")?;
            (s.clone(), Some(s))
        }
    };
    let context = "--jwt-secret / SHOPFLOW_JWT_SECRET";
    Ok(DemoAuth {
        mode: AuthMode::hs256(secret.as_bytes()).context(context)?,
        keys: Hs256::new(secret.as_bytes()).context(context)?,
        generated,
    })
}
