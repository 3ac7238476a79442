//! What every fragment process says about itself at [`DESCRIPTOR_PATH`], and the shell reads to route to
//! it: the wire format between a fragment and the platform, so it lives here, under the contracts'
//! snapshot test (`tests/contracts.rs`), and changes only with [`crate::CONTRACT_VERSION`].

use serde::{Deserialize, Serialize};

use crate::domain::ServiceName;

use crate::domain::Role;

/// Where every process describes the fragments it serves, as a JSON list of [`FragmentDescriptor`]s (not
/// under a prefix: only the shell and other services ask). A fragment's own binary lists one; a site
/// that runs fragments in process lists those, so a fragment run alone can find them there too.
pub const DESCRIPTOR_PATH: &str = "/.well-known/tessera-fragments";

/// The readiness endpoint every process answers (`200` while it takes traffic, `503` from SIGTERM on).
pub const READINESS_PATH: &str = "/readyz";

/// A fragment's entry in the site navigation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NavEntry {
    /// The link's label.
    pub label: String,
    /// Only users with this role see the link (`None`: everyone).
    pub role: Option<Role>,
}

/// An event type and the version a fragment writes (published) or decodes (consumed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventContract {
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
}

/// What a fragment process publishes about itself at [`DESCRIPTOR_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentDescriptor {
    pub name: ServiceName,
    pub prefix: String,
    pub title: String,
    pub nav: Option<NavEntry>,
    /// The site contract version ([`crate::CONTRACT_VERSION`]: cart API, DOM events, manifest, value
    /// types, this description) the server code was built against; the shell routes only to its own.
    pub contract_version: u32,
    /// The bundle this instance serves (`None`: built without one, pages do not hydrate).
    pub build_id: Option<String>,
    /// The bundle's files (`pkg/catalog-<hash>.js`, …), so asset requests reach an instance that has them.
    #[serde(default)]
    pub assets: Vec<String>,
    /// Event types it publishes, with the version it writes.
    pub publishes: Vec<EventContract>,
    /// Event types it consumes, with the version its handler decodes.
    pub consumes: Vec<EventContract>,
    /// Readiness endpoint.
    pub health: String,
    /// The public halves of the keys this instance signs its events and service calls with (Ed25519): a
    /// consumer or callee trusts a signature of this service only under one of these, learned from the
    /// address its configuration gives for the service, never from what another service says.
    #[serde(default)]
    pub signing_keys: Vec<SigningKey>,
}

/// One public signing key of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SigningKey {
    /// Its key id: derived from the key (the first 16 characters of its SHA-256, unpadded base64url), so
    /// an id names one key only.
    pub kid: String,
    /// The raw 32-byte Ed25519 public key, unpadded base64url.
    pub ed25519: String,
}

/// Where a site routes fragment `name` unless its configuration says otherwise
/// (`TESSERA_FRAGMENTS__<NAME>__PREFIX`): the three fragments of every Tessera site at the prefixes their
/// APIs in these contracts live under (`/cart/api/…`, `/admin/inventory/service/…`), any other at
/// `/<name>`. The shell routes by this, never by what an instance says of itself.
pub fn site_prefix(name: &ServiceName) -> String {
    match name.as_str() {
        "catalog" => "/catalog".to_owned(),
        "cart" => "/cart".to_owned(),
        "inventory" => "/admin/inventory".to_owned(),
        other => format!("/{other}"),
    }
}

impl FragmentDescriptor {
    /// A description with only a name and prefix (no navigation, build, bundle or events), for tests and
    /// tools that stand in for a fragment: add what the case needs with struct update syntax.
    pub fn named(name: ServiceName, prefix: &str) -> FragmentDescriptor {
        FragmentDescriptor {
            title: name.to_string(),
            name,
            prefix: prefix.to_owned(),
            nav: None,
            contract_version: crate::CONTRACT_VERSION,
            build_id: None,
            assets: Vec::new(),
            publishes: Vec::new(),
            consumes: Vec::new(),
            health: READINESS_PATH.to_owned(),
            signing_keys: Vec::new(),
        }
    }
}
