//! What a binary's `main` calls: tracing, and serving one fragment alone the way its own deployable does
//! (`tessera-catalog`, `tessera-cart`, `tessera-inventory`, and `tessera serve --fragment NAME`).

use std::sync::Arc;
use tessera_contracts::domain::ServiceName;

use axum::Router;
use futures::future::BoxFuture;
use tessera_fragment::fragment::Fragment;
use tessera_fragment::init_executor;

use crate::assembly::{fragment_app, Host};
use crate::error::HostError;
use crate::pool::{Pool, Remote};
use crate::relying_party;
use crate::serve::{serve, Running};
use crate::settings::Settings;

/// Starts tracing (`TESSERA_LOG` filter) for a binary.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// Adds services beside a fragment running alone and returns their routes (the cart's sandbox provider).
pub type Extra = for<'a> fn(&'a mut Host) -> BoxFuture<'a, Result<Option<Router>, HostError>>;

/// Serves one fragment alone, as its own binary does: the shell's keys from its JWKS over HTTP, the
/// other services as configured upstreams, and whatever `extra` adds. The payment provider is the one
/// `TESSERA_PAYMENT_URL` names, else the shell at `TESSERA_PUBLIC_URL` (which serves the sandbox on the
/// shopper's origin): a fragment reaches a provider over HTTP only.
pub async fn run_fragment(settings: &Settings, fragment: &'static dyn Fragment, extra: Option<Extra>) -> Result<Running, HostError> {
    init_executor();
    let mut host = Host::new(settings)?;
    if settings.site.payment_url.is_none() {
        let shell = settings.login.public_url.trim_end_matches('/').to_owned();
        host.peers.set(ServiceName::PAYMENTS, Remote::target(tessera_contracts::payments::SANDBOX_PREFIX, Arc::new(Pool::of(&[shell])), &host.clients));
    }
    let jwks = shared_auth::verify::HttpJwks::with_client(settings.login.jwks_url(), host.roots.http());
    host.add_fragment(fragment, jwks).await?;
    let extra_routes = match extra {
        Some(extra) => extra(&mut host).await?,
        None => None,
    };
    tracing::info!(fragment = %fragment.name(), jwks = %settings.login.jwks_url(), "serving one fragment");
    let started = host.start().await?;
    let mut app = fragment_app(&started.local[0]);
    if let Some(routes) = extra_routes {
        app = app.merge(routes);
    }
    // On a domain of its own the fragment signs its users in at the shell (OpenID Connect).
    let app = relying_party::attach(app, settings.site.oidc_provider.as_ref(), &settings.login, fragment.prefix(), &started.roots)?;
    // Reached directly (its own domain, a subdomain, its port), it defends itself as the shell does.
    let app = crate::security::protect_fragment(app, &crate::security::Policy::for_fragment(settings));
    let exposure = started.exposure();
    serve(&settings.server, app, started.background, started.teardown, exposure).await
}

/// The `main` of a fragment's own binary (`tessera-<fragment>`): settings from the environment (and
/// `TESSERA_CONFIG`), `--demo` to seed demo data, then serve until SIGTERM and drain.
pub async fn main_of(fragment: &'static dyn Fragment) -> Result<(), Box<dyn std::error::Error>> {
    init_tracing();
    let mut settings = Settings::load()?;
    for argument in std::env::args().skip(1) {
        match argument.as_str() {
            "--demo" => settings.site.demo = true,
            "--help" | "-h" => {
                println!(
                    "tessera-{name}: the {name} fragment alone, on TESSERA_ADDR (default 127.0.0.1:3000).\n\
                     Options: --demo (seed demo data). Settings: TESSERA_* variables (docs/settings.md).",
                    name = fragment.name()
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    tracing::info!(?settings, fragment = %fragment.name(), "starting");
    let running = run_fragment(&settings, fragment, None).await?;
    tracing::info!(addr = %running.addr, "listening on http://{}", running.addr);
    running.handle.await??;
    Ok(())
}
