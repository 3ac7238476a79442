//! What a fragment is to the platform: one trait each fragment crate implements, so the shell, the
//! all-in-one site and a fragment's own binary assemble whatever fragments they are given.
//!
//! A fragment says who it is (name, prefix, title, navigation entry), what it needs (migrations, demo
//! seed, background jobs), what it serves (its router) and how it takes part in events: the event types it
//! publishes, and the ones it consumes with their handlers (`Subscriptions::new().on::<OrderPaid>(…)`,
//! see `crate::subscriptions`). The consumer subscribes; a producer never names its subscribers.
//! [`describe`] turns a running fragment into the description the shell routes by.

use axum::Router;
use tessera_contracts::descriptor::{EventContract, FragmentDescriptor, NavEntry, READINESS_PATH};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::Event;

use crate::db::Migrations;
use crate::runtime::{FragmentRuntime, Subscriptions};

pub use futures::future::BoxFuture;

/// Why a demo seed failed (each fragment's own error, boxed).
pub type SeedError = Box<dyn std::error::Error + Send + Sync>;

/// One Tessera fragment, as the runtime assembles it.
pub trait Fragment: Send + Sync + 'static {
    /// Name, e.g. `catalog`: also its database's name and its service name in events and calls.
    fn name(&self) -> ServiceName;
    /// The URL prefix it owns, e.g. `/catalog`.
    fn prefix(&self) -> &'static str;
    /// Human title, e.g. `Catalog` (fallback pages, admin pages).
    fn title(&self) -> &'static str;
    /// Its navigation entry; `None` keeps it out of the navigation.
    fn nav(&self) -> Option<NavEntry> {
        Some(NavEntry { label: self.title().to_owned(), role: None })
    }
    /// Its database's migrations.
    fn migrations(&self) -> &'static Migrations;
    /// Every route it owns, under its prefix.
    fn router(&self, runtime: FragmentRuntime) -> Router;
    /// Background work it runs beside its routes (sweepers, retries), started with the process. Every job
    /// must be safe to run in several instances at once.
    fn background(&self, _runtime: &FragmentRuntime) -> Vec<tokio::task::JoinHandle<()>> {
        Vec::new()
    }
    /// Seeds demo data (`extra`: generated products beside the classic ones). Idempotent.
    fn seed_demo<'a>(&'a self, runtime: &'a FragmentRuntime, extra: usize) -> BoxFuture<'a, Result<(), SeedError>>;
    /// Event types (and versions) it publishes through its outbox: `&[published::<StockChanged>()]`.
    fn publishes(&self) -> &'static [(&'static str, u32)] {
        &[]
    }
    /// The events it consumes, with their handlers.
    fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new()
    }
}

/// An event type and the version its producer writes, for [`Fragment::publishes`].
pub const fn published<E: Event>() -> (&'static str, u32) {
    (E::TYPE, E::VERSION)
}

/// Whether `fragment` publishes `event_type`.
pub fn publishes(fragment: &dyn Fragment, event_type: &str) -> bool {
    fragment.publishes().iter().any(|(published, _)| *published == event_type)
}

/// The description of a fragment running with `runtime` (its subscriptions as the runtime holds them, its
/// bundle as its manifest says now), as its process publishes it.
pub fn describe(fragment: &dyn Fragment, runtime: &FragmentRuntime) -> FragmentDescriptor {
    let manifest = runtime.manifests.current();
    let contract = |(event_type, version): (&str, u32)| EventContract { event_type: event_type.to_owned(), version };
    FragmentDescriptor {
        name: fragment.name(),
        prefix: fragment.prefix().to_owned(),
        title: fragment.title().to_owned(),
        nav: fragment.nav(),
        contract_version: tessera_contracts::CONTRACT_VERSION,
        build_id: manifest.as_ref().map(|manifest| manifest.build_id.clone()),
        assets: manifest.iter().flat_map(|manifest| manifest.assets.iter().map(|asset| asset.path.clone())).collect(),
        publishes: fragment.publishes().iter().copied().map(contract).collect(),
        consumes: runtime.events.subscriptions.types().into_iter().map(contract).collect(),
        health: READINESS_PATH.into(),
        signing_keys: runtime.events.signer.public_keys(),
    }
}
