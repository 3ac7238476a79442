//! Assembling a process: databases, keys, fragments and the shell, into one axum router.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use axum::Router;
use shared_auth::keys::{KeyRing, TokenSigner};
use shared_auth::verify::{HttpJwks, JwksSource, Verifier, VerifierSettings};
use shared_auth::Role;
use tessera_contracts::events::{Event, OrderCancelled, OrderFulfilled, OrderPaid, OrderShort, ProductChanged, StockChanged};
use tessera_kit::db::{Migrations, StoreSettings};
use tessera_kit::events::{EventSigner, HttpTransport, Outbox, Relay, RelaySettings, Target};
use tessera_kit::manifest::ManifestStore;
use tessera_kit::peers::Peers;
use tessera_kit::webhook::WebhookSigner;
use tessera_kit::{FragmentEvents, FragmentRuntime};
use tessera_shell::registry::{Fragment, FragmentRegistry, Upstream};
use tessera_shell::ShellState;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Settings;

type SeedFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// What the server knows about one fragment crate.
pub struct FragmentSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub prefix: &'static str,
    pub migrations: &'static Migrations,
    pub router: fn(FragmentRuntime) -> Router,
    /// Seeds the demo data; the number is how many generated products to add to the classic ones.
    pub seed_demo: for<'a> fn(&'a FragmentRuntime, usize) -> SeedFuture<'a>,
    /// Events this fragment produces, and which fragments subscribe to each.
    pub produces: &'static [(&'static str, &'static [&'static str])],
    /// Background tasks the fragment runs beside its routes (sweepers), started with the process.
    pub background: fn(&FragmentRuntime) -> Vec<tokio::task::JoinHandle<()>>,
    /// Whether its schema has an inbox (it consumes events).
    pub consumes: bool,
    /// Only users with this role see the fragment in the navigation.
    pub nav_role: Option<Role>,
}

/// The three fragments of the storefront.
pub fn fragment_specs() -> [FragmentSpec; 3] {
    [
        FragmentSpec {
            name: tessera_catalog::NAME,
            title: "Catalog",
            prefix: tessera_catalog::PREFIX,
            migrations: &tessera_catalog::server::MIGRATIONS,
            router: tessera_catalog::server::router,
            seed_demo: |runtime, extra| Box::pin(async move { Ok(tessera_catalog::server::seed_demo(runtime, extra).await?) }),
            // The cart keeps its prices honest with it.
            produces: &[(ProductChanged::TYPE, &["cart"])],
            consumes: true,
            background: |_| Vec::new(),
            nav_role: None,
        },
        FragmentSpec {
            name: tessera_cart::NAME,
            title: "Cart",
            prefix: tessera_cart::PREFIX,
            migrations: &tessera_cart::server::MIGRATIONS,
            router: tessera_cart::server::router,
            seed_demo: |runtime, extra| Box::pin(async move { Ok(tessera_cart::server::seed_demo(runtime, extra).await?) }),
            produces: &[(OrderPaid::TYPE, &["inventory"]), (OrderCancelled::TYPE, &["inventory"])],
            consumes: true,
            background: tessera_cart::server::background,
            nav_role: None,
        },
        FragmentSpec {
            name: tessera_inventory::NAME,
            title: "Inventory",
            prefix: tessera_inventory::PREFIX,
            migrations: &tessera_inventory::server::MIGRATIONS,
            router: tessera_inventory::server::router,
            seed_demo: |runtime, extra| Box::pin(async move { Ok(tessera_inventory::server::seed_demo(runtime, extra).await?) }),
            produces: &[(StockChanged::TYPE, &["catalog"]), (OrderFulfilled::TYPE, &["cart"]), (OrderShort::TYPE, &["cart"])],
            consumes: true,
            background: tessera_inventory::server::background,
            nav_role: Some(Role::InventoryAdmin),
        },
    ]
}

/// Which part of the site this process serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The shell, with every fragment that has no `upstream` configured running in this process.
    Site,
    /// One fragment alone, verifying logins with the shell's JWKS over HTTP.
    Fragment(String),
}

pub fn store(settings: &Settings) -> StoreSettings {
    StoreSettings {
        data_dir: settings.data_dir.clone(),
        postgres_url: settings.postgres_url.clone(),
        schema_prefix: settings.schema_prefix.clone(),
        postgres_pool_size: settings.postgres_pool_size,
    }
}

fn verifier_settings(settings: &Settings) -> VerifierSettings {
    let mut verifier = VerifierSettings::new(&settings.issuer, &settings.audience);
    verifier.access_cookie = settings.cookie_policy().access_name();
    // No token the shell issues lives longer than this; anything longer is forged or misconfigured.
    verifier.max_lifetime = Duration::from_secs(settings.access_ttl_seconds.max(60) as u64 + 60);
    verifier
}

/// The shared secret that signs event requests between services: `TESSERA_EVENTS_SECRET` when set (every
/// process of a deployment must share it), else one generated once and kept in the data dir.
fn event_signer(settings: &Settings) -> anyhow::Result<EventSigner> {
    Ok(EventSigner::new(&shared_secrets(settings, settings.events_secret.as_deref().map(|s| vec![s]), "events.secret")?))
}

/// The secrets that sign payment webhooks (`TESSERA_PAYMENT_WEBHOOK_SECRETS`, comma-separated, for
/// rotation), else one generated once and kept in the data dir.
fn webhook_signer(settings: &Settings) -> anyhow::Result<WebhookSigner> {
    let configured = settings.payment_webhook_secrets.as_deref().map(|secrets| secrets.split(',').map(str::trim).collect());
    Ok(WebhookSigner::new(&shared_secrets(settings, configured, "payment-webhook.secret")?))
}

/// Configured secrets, or one random secret generated once into `<data dir>/keys/<file>` (mode 0600).
fn shared_secrets(settings: &Settings, configured: Option<Vec<&str>>, file: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let configured: Vec<Vec<u8>> = configured.unwrap_or_default().into_iter().filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec()).collect();
    if !configured.is_empty() {
        return Ok(configured);
    }
    let dir = settings.data_dir.join("keys");
    let path = dir.join(file);
    if !path.exists() {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut secret).map_err(|_| anyhow::anyhow!("no system randomness"))?;
        std::fs::create_dir_all(&dir)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&path)?, &secret)?;
    }
    Ok(vec![std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?])
}

async fn fragment_runtime(
    settings: &Settings,
    spec: &FragmentSpec,
    jwks: impl JwksSource,
    signer: &EventSigner,
    webhooks: &WebhookSigner,
) -> anyhow::Result<FragmentRuntime> {
    let db = store(settings).open(spec.name, spec.migrations).await?;
    let routes = spec.produces.iter().map(|(event, subscribers)| (*event, subscribers.iter().map(|s| s.to_string()).collect())).collect();
    Ok(FragmentRuntime {
        name: spec.name,
        prefix: spec.prefix,
        db,
        verifier: Verifier::new(verifier_settings(settings), jwks),
        manifests: Arc::new(ManifestStore::new(FragmentRuntime::bundle_dir(&settings.site_dir, spec.name))),
        csrf: Arc::new(settings.csrf_policy()),
        events: Arc::new(FragmentEvents {
            outbox: Outbox::new(spec.name, routes),
            signer: signer.clone(),
            has_outbox: !spec.produces.is_empty(),
            has_inbox: spec.consumes,
        }),
        peers: Arc::new(Peers::default()),
        webhooks: webhooks.clone(),
        secure_cookies: settings.secure_cookies(),
    })
}

/// Starts the relay of every producing fragment in this process, delivering to in-process routers or to
/// the configured upstream of each subscriber.
fn start_relays(settings: &Settings, local: &[(FragmentSpec, FragmentRuntime, Router)], signer: &EventSigner) -> Vec<tokio::task::JoinHandle<()>> {
    let specs = fragment_specs();
    let mut relays = Vec::new();
    for (spec, runtime, _) in local.iter().filter(|(spec, _, _)| !spec.produces.is_empty()) {
        let mut targets = HashMap::new();
        for subscriber in spec.produces.iter().flat_map(|(_, subscribers)| subscribers.iter()) {
            let Some(subscriber_spec) = specs.iter().find(|candidate| candidate.name == *subscriber) else { continue };
            let prefix = subscriber_spec.prefix.to_owned();
            if let Some((_, _, router)) = local.iter().find(|(candidate, _, _)| candidate.name == *subscriber) {
                targets.insert(subscriber.to_string(), Target::InProcess { prefix, router: router.clone() });
            } else if let Some(base) = settings.fragments.get(*subscriber).and_then(|f| f.upstream.clone()) {
                targets.insert(subscriber.to_string(), Target::Http { prefix, base });
            } else {
                tracing::warn!(producer = spec.name, subscriber, "no route to a subscriber; its deliveries will wait and then dead-letter");
            }
        }
        let transport = Arc::new(HttpTransport::new(spec.name, signer.clone(), targets));
        let relay_settings =
            RelaySettings { max_attempts: settings.events_max_attempts, base_backoff_ms: settings.events_base_backoff_ms, ..RelaySettings::default() };
        relays.push(Relay::new(runtime.db.clone(), &runtime.events.outbox, transport, relay_settings).spawn());
    }
    relays
}

/// Tells every service in this process how to reach the others: in process when they run here, over
/// HTTP when an upstream is configured. The sandbox payment provider is `payments`.
fn connect_peers(settings: &Settings, local: &[(FragmentSpec, FragmentRuntime, Router)], payments: Option<&Router>, sandbox_peers: Option<&Peers>) {
    let mut targets = Vec::new();
    for spec in fragment_specs() {
        let prefix = spec.prefix.to_owned();
        if let Some((_, _, router)) = local.iter().find(|(candidate, _, _)| candidate.name == spec.name) {
            targets.push((spec.name.to_owned(), Target::InProcess { prefix, router: router.clone() }));
        } else if let Some(base) = settings.fragments.get(spec.name).and_then(|f| f.upstream.clone()) {
            targets.push((spec.name.to_owned(), Target::Http { prefix, base }));
        }
    }
    let prefix = tessera_contracts::payments::SANDBOX_PREFIX.to_owned();
    match (payments, &settings.payment_url) {
        (_, Some(base)) => targets.push(("payments".into(), Target::Http { prefix, base: base.clone() })),
        (Some(router), None) => targets.push(("payments".into(), Target::InProcess { prefix, router: router.clone() })),
        (None, None) => {}
    }
    for (_, runtime, _) in local {
        for (name, target) in &targets {
            runtime.peers.set(name, target.clone());
        }
    }
    if let Some(peers) = sandbox_peers {
        for (name, target) in &targets {
            peers.set(name, target.clone());
        }
    }
}

/// Connects the services of this process to each other and, when `with_sandbox`, runs the sandbox
/// payment provider beside them (its routes merged into `router`, its webhook deliverer started).
async fn connect_services(
    settings: &Settings,
    local: &[(FragmentSpec, FragmentRuntime, Router)],
    with_sandbox: bool,
    router: Router,
    (signer, webhooks): (&EventSigner, &WebhookSigner),
    background: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Router> {
    if !with_sandbox {
        connect_peers(settings, local, None, None);
        return Ok(router);
    }
    let peers = Arc::new(Peers::default());
    let sandbox = tessera_paysandbox::open(&store(settings), signer.clone(), webhooks.clone(), peers.clone()).await?;
    let sandbox_router = tessera_paysandbox::router(sandbox.clone());
    connect_peers(settings, local, Some(&sandbox_router), Some(&peers));
    background.push(tessera_paysandbox::spawn_deliverer(sandbox));
    // The provider's pages are not part of the store: no chrome, served beside the shell or fragment.
    Ok(router.merge(sandbox_router))
}

/// Seeds the demo data of the fragments in this process (after the relays run, so events flow).
async fn seed_fragments(settings: &Settings, local: &[(FragmentSpec, FragmentRuntime, Router)]) -> anyhow::Result<()> {
    if settings.demo {
        for (spec, runtime, _) in local {
            (spec.seed_demo)(runtime, settings.demo_extra_products).await.with_context(|| format!("seeding the {} demo data", spec.name))?;
        }
    }
    Ok(())
}

/// A process's router and the background tasks (relays) it runs.
pub struct Built {
    pub router: Router,
    pub background: Vec<tokio::task::JoinHandle<()>>,
}

/// Largest header block accepted (all names and values together). Real requests, cookies included, stay
/// far below it; past it a request is refused before any handler runs.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

async fn reject_oversized_headers(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let size: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if size > MAX_HEADER_BYTES {
        tracing::warn!(size, "request headers too large");
        return (
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("The request's headers are too large ({size} bytes; at most {MAX_HEADER_BYTES}). Clearing this site's cookies may help."),
        )
            .into_response();
    }
    next.run(request).await
}

/// Layers every process gets: request ids, tracing, header limits, panics turned into 500s.
fn with_common_layers(router: Router) -> Router {
    router
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(reject_oversized_headers))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Builds the router for `mode`: opens and migrates the databases, starts relays, seeds demo data if asked.
pub async fn build(settings: &Settings, mode: &Mode) -> anyhow::Result<Built> {
    tessera_kit::init_executor();
    let event_signer = event_signer(settings)?;
    let webhooks = webhook_signer(settings)?;
    match mode {
        Mode::Fragment(name) => {
            let spec = fragment_specs()
                .into_iter()
                .find(|spec| spec.name == name)
                .with_context(|| format!("there is no fragment called {name:?} (catalog, cart, inventory)"))?;
            let runtime = fragment_runtime(settings, &spec, HttpJwks::new(settings.jwks_url()), &event_signer, &webhooks).await?;
            tracing::info!(fragment = name, jwks = %settings.jwks_url(), "serving one fragment");
            let router = (spec.router)(runtime.clone());
            // The cart alone brings its own sandbox provider unless a provider is configured.
            let with_sandbox = spec.name == tessera_cart::NAME && settings.payment_url.is_none();
            let local = vec![(spec, runtime, router.clone())];
            let mut background = start_relays(settings, &local, &event_signer);
            let router = connect_services(settings, &local, with_sandbox, router, (&event_signer, &webhooks), &mut background).await?;
            background.extend(local.iter().flat_map(|(spec, runtime, _)| (spec.background)(runtime)));
            seed_fragments(settings, &local).await?;
            Ok(Built { router: with_common_layers(router), background })
        }
        Mode::Site => {
            let store = store(settings);
            let (sqlite, postgres) = tessera_shell::migrators();
            let shell_db = store.open("shell", &Migrations { sqlite, postgres }).await?;
            if settings.demo {
                tessera_shell::users::seed_demo(&shell_db).await.context("seeding the demo accounts")?;
            }
            let ring = KeyRing::open(&settings.data_dir.join("keys"), settings.access_ttl_seconds)?;
            let signer = Arc::new(TokenSigner::new(ring, &settings.issuer, &settings.audience, settings.access_ttl_seconds));
            let mut fragments = Vec::new();
            let mut local = Vec::new();
            for spec in fragment_specs() {
                let configured = settings.fragments.get(spec.name).cloned().unwrap_or_default();
                let timeout = Duration::from_millis(configured.timeout_ms.unwrap_or(settings.fragment_timeout_ms));
                let upstream = match configured.upstream {
                    Some(url) => Upstream::Http(url.parse().with_context(|| format!("upstream of {}: {url:?}", spec.name))?),
                    None => {
                        let runtime = fragment_runtime(settings, &spec, tessera_shell::in_process_jwks(&signer), &event_signer, &webhooks).await?;
                        // A panic inside a fragment becomes its 500, and so the shell's fallback page.
                        let router = (spec.router)(runtime.clone()).layer(CatchPanicLayer::new());
                        local.push((fragment_specs().into_iter().find(|s| s.name == spec.name).expect("the same spec"), runtime, router.clone()));
                        Upstream::InProcess(router)
                    }
                };
                fragments.push(Fragment {
                    name: spec.name.into(),
                    title: spec.title.into(),
                    prefix: spec.prefix.into(),
                    upstream,
                    timeout,
                    nav_role: spec.nav_role,
                });
            }
            let shell = ShellState::new(
                shell_db,
                signer,
                verifier_settings(settings),
                FragmentRegistry::new(fragments),
                tessera_shell::ShellConfig {
                    cookies: settings.cookie_policy(),
                    sessions: tessera_shell::sessions::SessionSettings {
                        session_ttl_seconds: settings.session_ttl_seconds,
                        reuse_grace_seconds: settings.refresh_reuse_grace_seconds,
                    },
                    throttle: tessera_shell::throttle::ThrottleSettings {
                        window_seconds: settings.login_throttle_window_seconds,
                        max_failures_per_account: settings.login_max_failures_per_account,
                        max_failures_per_address: settings.login_max_failures_per_address,
                    },
                    csrf: settings.csrf_policy(),
                },
            );
            let mut background = start_relays(settings, &local, &event_signer);
            let with_sandbox = settings.payment_url.is_none();
            let router = connect_services(settings, &local, with_sandbox, tessera_shell::router(shell), (&event_signer, &webhooks), &mut background).await?;
            background.extend(local.iter().flat_map(|(spec, runtime, _)| (spec.background)(runtime)));
            seed_fragments(settings, &local).await?;
            Ok(Built { router: with_common_layers(router), background })
        }
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Relays and other background tasks; abort them with the server.
    pub background: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds `settings.addr` (port 0 picks a free one) and serves `mode` in the background.
pub async fn spawn(settings: &Settings, mode: &Mode) -> anyhow::Result<Running> {
    let Built { router, background } = build(settings, mode).await?;
    let listener = TcpListener::bind(settings.addr).await.with_context(|| format!("binding {}", settings.addr))?;
    let addr = listener.local_addr()?;
    // Pages stream in several writes; with Nagle's algorithm each response would wait for the client's
    // delayed ACK (~40 ms) between them.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    });
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let handle = tokio::spawn(async move { axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await });
    Ok(Running { addr, handle, background })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// `tessera inventory verify`: checks the inventory's invariants on its database (the same one `serve`
/// uses with these settings). Returns the report; the caller decides the exit status.
pub async fn verify_inventory(settings: &Settings) -> anyhow::Result<tessera_inventory::verify::Report> {
    let db = store(settings).open(tessera_inventory::NAME, &tessera_inventory::server::MIGRATIONS).await?;
    let report = tessera_inventory::verify::verify(&db).await.context("reading the inventory database")?;
    db.close().await;
    Ok(report)
}
