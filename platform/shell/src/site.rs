//! A site: the shell, the fragments a binary contains, and the fragments it is told to reach.
//!
//! The one place that chooses which fragments a binary contains is that binary's `main`: `tessera-shell`
//! passes none, the all-in-one `tessera` passes every fragment. A fragment with configured upstreams
//! (`TESSERA_FRAGMENTS__<NAME>__UPSTREAM(S)`) is reached over HTTP even when the binary contains it; a
//! configured name the binary does not know is registered when one of its instances first describes
//! itself, so adding a fragment to a running deployment needs no shell rebuild.
//!
//! Unless `TESSERA_PAYMENT_URL` names another process, the sandbox payment provider runs here too: its
//! pages must be on the origin the shopper's browser uses.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use shared_auth::keys::TokenSigner;
use tessera_contracts::descriptor::{site_prefix, EventContract};
use tessera_contracts::domain::ServiceName;
use tessera_fragment::db::Migrations;
use tessera_fragment::fragment::Fragment as FragmentCrate;
use tessera_fragment::peers::ClearOnDrop;
use tessera_host::assembly::{descriptors_route, Host};
use tessera_host::login::verifier_settings;
use tessera_host::pool::Pool;
use tessera_host::serve::{Exposure, Running};
use tessera_host::{HostError, Settings};

use crate::registry::{Fragment, FragmentRegistry, Pending, Upstream};
use crate::settings::ShellSettings;
use crate::{ShellConfig, ShellState};

/// A built site: its router and the background tasks it runs.
pub struct Site {
    pub router: Router,
    pub background: Vec<tokio::task::JoinHandle<()>>,
    pub teardown: ClearOnDrop,
    /// The site faces the public: metrics only on their own listener.
    pub exposure: Exposure,
}

fn instances(settings: &Settings, name: &ServiceName) -> Result<Option<Arc<Pool>>, HostError> {
    let bases = settings.instances_of(name);
    if bases.is_empty() {
        return Ok(None);
    }
    let urls = bases
        .iter()
        .map(|base| url::Url::parse(base).map_err(|error| HostError::Config(format!("upstream of {name}: {base:?}: {error}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Arc::new(Pool::new(urls))))
}

/// `keys rotate`: adds a signing key to the shell's database (importing a file ring of an earlier
/// release first, if the table is still empty). Running replicas follow within seconds.
pub async fn rotate_keys(settings: &Settings, publish_delay_seconds: i64) -> Result<shared_auth::keys::KeyEntry, HostError> {
    let (sqlite, postgres) = crate::migrators();
    let shell_db = settings.store.open("shell", &Migrations { sqlite, postgres }).await?;
    let failed = |error: crate::keys::KeysError| HostError::Config(format!("rotating the signing keys: {error}"));
    let sealing = crate::keys::Sealing::of(settings).map_err(failed)?;
    let lock = settings.store.start_lock("shell").await?;
    let opened = crate::keys::open(&shell_db, &sealing, &settings.store.data_dir.join("keys"), settings.login.access_ttl_seconds).await;
    lock.release().await;
    opened.map_err(failed)?;
    let entry = crate::keys::rotate(&shell_db, &sealing, publish_delay_seconds).await.map_err(failed)?;
    shell_db.close().await;
    Ok(entry)
}

/// Builds the site: opens the shell's database (seeding the demo accounts if asked), its key ring, every
/// contained fragment without upstreams in this process, the registry, and the sandbox provider.
pub async fn build(settings: &ShellSettings, contained: &[&'static dyn FragmentCrate]) -> Result<Site, HostError> {
    tessera_fragment::init_executor();
    let (shell_db, sealing, signer) = open_shell(&settings.host).await?;
    let (keys_db, keys_signer) = (shell_db.clone(), signer.clone());
    let mut host = Host::new(&settings.host)?;
    let registry = Arc::new(registry(settings, contained, &mut host, &signer).await?);
    let pruned_db = shell_db.clone();
    let shell = ShellState::new(shell_db, signer, verifier_settings(&settings.host.login), registry.clone(), shell_config(settings)?);
    let router = crate::router(shell);
    // The provider's pages are not part of the store: no chrome, served beside the shell.
    let sandbox = match settings.host.site.payment_url {
        None => Some(tessera_paysandbox::attach(&mut host).await?),
        Some(_) => None,
    };
    // Learn what is out there before the first request, then keep checking.
    registry.check_health().await;
    let mut started = host.start().await?;
    started.background.push(crate::keys::follow(keys_db, sealing, keys_signer));
    started.background.push(crate::retention::spawn_pruning(pruned_db, settings.sessions.sessions_retention_days.max(1) * 24 * 3600));
    started.background.push(FragmentRegistry::spawn_health_checks(registry, Duration::from_millis(settings.registry.health_interval_ms.max(100))));
    // The in-process fragments' descriptions, for fragments run alone beside this site (`cargo xtask dev`).
    let router = router.merge(descriptors_route(&started.local));
    // Last, so every response has them: the shell's and every fragment's; the sandbox keeps its own policy.
    let policy = crate::security::policy(settings);
    let mut router = tessera_host::security::protect(router, &policy);
    if let Some(sandbox) = sandbox {
        router = router.merge(tessera_host::security::protect_static(sandbox, &policy));
    }
    let exposure = started.exposure();
    Ok(Site { router, background: started.background, teardown: started.teardown, exposure })
}

/// The shell's database (with the demo accounts if asked), the sealing of its keys, and the token signer
/// of its key ring.
async fn open_shell(settings: &Settings) -> Result<(sqlx::AnyPool, Arc<crate::keys::Sealing>, Arc<TokenSigner>), HostError> {
    let (sqlite, postgres) = crate::migrators();
    let shell_db = settings.store.open("shell", &Migrations { sqlite, postgres }).await?;
    if settings.site.demo {
        crate::users::seed_demo(&shell_db).await.map_err(|error| HostError::Config(format!("seeding the demo accounts: {error}")))?;
    }
    let failed = |error| HostError::Config(format!("opening the signing keys: {error}"));
    let sealing = crate::keys::Sealing::of(settings).map_err(failed)?;
    // Replicas starting together on an empty table create one first key, not one each.
    let lock = settings.store.start_lock("shell").await?;
    let ring = crate::keys::open(&shell_db, &sealing, &settings.store.data_dir.join("keys"), settings.login.access_ttl_seconds).await;
    lock.release().await;
    let ring = ring.map_err(failed)?;
    Ok((shell_db, Arc::new(sealing), Arc::new(TokenSigner::new(ring, &settings.login.issuer, &settings.login.audience, settings.login.access_ttl_seconds))))
}

/// The fragments the shell composes: each contained one in this process unless upstreams are
/// configured for it, and configured ones this binary does not contain, learned from their description.
async fn registry(
    settings: &ShellSettings,
    contained: &[&'static dyn FragmentCrate],
    host: &mut Host,
    signer: &Arc<TokenSigner>,
) -> Result<FragmentRegistry, HostError> {
    let mut fragments = Vec::new();
    for &fragment in contained {
        let routed = configured_prefix(settings, &fragment.name())?.unwrap_or_else(|| site_prefix(&fragment.name()));
        if routed != fragment.prefix() {
            return Err(HostError::Config(format!(
                "this site routes {routed:?} to {} (TESSERA_FRAGMENTS__{}__PREFIX), but this build serves it at {:?}",
                fragment.name(),
                fragment.name().as_str().to_uppercase(),
                fragment.prefix()
            )));
        }
        let timeout = fragment_timeout(settings, &fragment.name());
        let upstream = match instances(&settings.host, &fragment.name())? {
            Some(pool) => Upstream::Instances(pool),
            None => Upstream::InProcess(host.add_fragment(fragment, crate::in_process_jwks(signer)).await?.router.clone()),
        };
        let nav = fragment.nav();
        let event = |&(event_type, version): &(&str, u32)| EventContract { event_type: event_type.to_owned(), version };
        fragments.push(Fragment {
            publishes: fragment.publishes().iter().map(event).collect(),
            consumes: fragment.subscriptions().types().iter().map(event).collect(),
            name: fragment.name(),
            title: fragment.title().into(),
            prefix: fragment.prefix().into(),
            upstream,
            timeout,
            in_nav: nav.is_some(),
            nav_role: nav.and_then(|nav| nav.role),
        });
    }
    // Configured fragments this binary does not contain: learned from their own description.
    let mut pending = Vec::new();
    for name in settings.host.site.fragments.keys().filter(|name| !contained.iter().any(|fragment| &fragment.name() == *name)) {
        if let Some(pool) = instances(&settings.host, name)? {
            let prefix = configured_prefix(settings, name)?.unwrap_or_else(|| site_prefix(name));
            pending.push(Pending { name: name.clone(), pool, timeout: fragment_timeout(settings, name), prefix });
        }
    }
    let credentials = crate::confinement::Credentials::new(signer.clone(), &settings.host.login.cookie_policy());
    Ok(FragmentRegistry::new(fragments, pending, host.clients.clone()).with_credentials(credentials))
}

/// The shell's settings, from the process's.
fn shell_config(settings: &ShellSettings) -> Result<ShellConfig, HostError> {
    Ok(ShellConfig {
        cookies: settings.host.login.cookie_policy(),
        sessions: settings.sessions.clone(),
        throttle: settings.throttle.clone(),
        csrf: settings.host.login.csrf_policy(),
        oidc: crate::oidc::Provider::from_settings(&settings.host.login, &settings.oidc.oidc_clients).map_err(|error| HostError::Config(error.to_string()))?,
    })
}

/// The prefix configured for fragment `name` (`TESSERA_FRAGMENTS__<NAME>__PREFIX`), checked: one or more
/// whole segments of plain characters, no dot segment, not the site's root.
fn configured_prefix(settings: &ShellSettings, name: &ServiceName) -> Result<Option<String>, HostError> {
    let Some(prefix) = settings.host.site.fragments.get(name).and_then(|fragment| fragment.prefix.clone()) else {
        return Ok(None);
    };
    let plain = |segment: &str| !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let valid = prefix.strip_prefix('/').is_some_and(|rest| rest.split('/').all(plain)) && !crate::paths::has_dot_segment(&prefix);
    if !valid {
        return Err(HostError::Config(format!(
            "TESSERA_FRAGMENTS__{}__PREFIX {prefix:?} must be a path like /reviews: segments of letters, digits, '-' and '_'",
            name.as_str().to_uppercase()
        )));
    }
    Ok(Some(prefix))
}

fn fragment_timeout(settings: &ShellSettings, name: &ServiceName) -> Duration {
    let configured = settings.host.site.fragments.get(name).and_then(|fragment| fragment.timeout_ms);
    Duration::from_millis(configured.unwrap_or(settings.registry.fragment_timeout_ms))
}

/// Builds the site and serves it on `settings.addr` until SIGTERM (then drains).
pub async fn serve(settings: &ShellSettings, contained: &[&'static dyn FragmentCrate]) -> Result<Running, HostError> {
    let Site { router, background, teardown, exposure } = build(settings, contained).await?;
    tessera_host::serve::serve(&settings.host.server, router, background, teardown, exposure).await
}
