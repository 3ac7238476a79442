//! The runtime handle: everything a fragment's routes, SSR renders, server functions, event handlers and
//! jobs share ([`FragmentRuntime`]), built by the process host for each fragment it runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::FromRef;
use shared_auth::csrf::CsrfPolicy;
use shared_auth::verify::Verifier;
use sqlx::AnyPool;
use tessera_contracts::domain::ServiceName;
use tessera_contracts::ApiError;

use crate::manifest::ManifestStore;
use crate::outbox::Outbox;
use crate::peers::Peers;
use crate::secrets::Secrets;
use crate::signature::{CallSigner, EventSigner};

/// The events a fragment consumes, with handlers that receive its runtime.
pub type Subscriptions = crate::subscriptions::Subscriptions<FragmentRuntime>;

/// Everything a fragment's handlers, SSR and server functions need. Cheap to clone.
#[derive(Clone)]
pub struct FragmentRuntime {
    /// Fragment name, e.g. `catalog`.
    pub name: ServiceName,
    /// URL prefix it owns, e.g. `/catalog`.
    pub prefix: &'static str,
    /// The fragment's own database.
    pub db: AnyPool,
    /// Verifies the shared login with the shell's public keys.
    pub verifier: Verifier,
    /// The fragment's build manifest, for its hydration tags.
    pub manifests: Arc<ManifestStore>,
    /// Which origins may send this fragment state-changing requests.
    pub csrf: Arc<CsrfPolicy>,
    /// The fragment's side of the event platform.
    pub events: Arc<FragmentEvents>,
    /// Routes to the services this one calls.
    pub peers: Arc<Peers>,
    /// The deployment's secrets, loaded when a part of the fragment first needs one (the cart the
    /// payment secrets).
    pub secrets: Arc<Secrets>,
    /// Whether cookies the fragment sets itself carry `Secure` (the site is served over https).
    pub secure_cookies: bool,
}

/// A fragment's outbox (if it produces events), its subscriptions, and the signer that authenticates
/// event requests.
pub struct FragmentEvents {
    pub outbox: Outbox,
    /// Signs with the fragment's own keys; verifies with the process's directory of services' public keys.
    pub signer: EventSigner,
    /// The events it consumes, with their handlers (served at `POST <prefix>/events`).
    pub subscriptions: Subscriptions,
    /// Oldest event it accepts, milliseconds: as long as it keeps the inbox rows that make a redelivery
    /// harmless, so an event older than that cannot be applied a second time (`crate::inbox::admissible`).
    pub max_age_ms: i64,
    /// A subscription of its events whose oldest undelivered event is older than this is behind
    /// (`crate::event_admin::status`).
    pub max_lag_ms: i64,
}

impl FragmentRuntime {
    /// Signs this fragment's calls to other services and verifies calls to it, with the same keys as
    /// its events (`crate::signature`).
    pub fn service_calls(&self) -> CallSigner {
        CallSigner::keyed(self.events.signer.clone())
    }

    /// Directory of this fragment's bundle: `<site_dir>/<name>`.
    pub fn bundle_dir(site_dir: &Path, name: &str) -> PathBuf {
        site_dir.join(name)
    }
}

impl FromRef<FragmentRuntime> for Verifier {
    fn from_ref(runtime: &FragmentRuntime) -> Verifier {
        runtime.verifier.clone()
    }
}

/// The runtime of the current server function or SSR render (provided as Leptos context by the fragment).
pub fn use_runtime() -> Result<FragmentRuntime, ApiError> {
    leptos::prelude::use_context::<FragmentRuntime>().ok_or_else(|| {
        tracing::error!("FragmentRuntime missing from the Leptos context");
        ApiError::Internal
    })
}

/// Logs a database error with its cause and turns it into the generic internal error.
pub fn internal(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "internal error");
    ApiError::Internal
}

/// Starts Leptos' task executor on tokio; SSR spawns its resources there. Safe to call more than once.
pub fn init_executor() {
    let _ = any_spawner::Executor::init_tokio();
}
