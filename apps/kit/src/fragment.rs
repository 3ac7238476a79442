//! What a fragment is to the platform: one trait each fragment crate implements, so the shell, the
//! all-in-one site and a fragment's own binary assemble whatever fragments they are given.
//!
//! A fragment says who it is (name, prefix, title, navigation entry), what it needs (migrations, demo
//! seed, background jobs), what it serves (its router) and how it takes part in events: the event types it
//! publishes, and the ones it consumes with their handlers (`Subscriptions::new().on::<OrderPaid>(…)`).
//! The consumer subscribes; a producer never names its subscribers. The runtime turns the subscriptions
//! into the one event endpoint (`POST <prefix>/events`, see `crate::routes`): it verifies the signature,
//! decodes the event, and runs the inbox row and the handler in one transaction.

use std::future::Future;
use std::pin::Pin;

use axum::Router;
use serde::{Deserialize, Serialize};
use shared_auth::Role;
use sqlx::AnyConnection;
use tessera_contracts::events::{DecodeError, Envelope, Event};
use tessera_contracts::ApiError;

use crate::db::Migrations;
use crate::FragmentRuntime;

/// A boxed future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a demo seed failed (each fragment's own error, boxed).
pub type SeedError = Box<dyn std::error::Error + Send + Sync>;

/// A fragment's entry in the site navigation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NavEntry {
    /// The link's label.
    pub label: String,
    /// Only users with this role see the link (`None`: everyone).
    pub role: Option<Role>,
}

/// One Tessera fragment, as the runtime assembles it.
pub trait Fragment: Send + Sync + 'static {
    /// Name, e.g. `catalog`: also its database's name and its service name in events and calls.
    fn name(&self) -> &'static str;
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

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event cannot be applied, ever (malformed, contradicts what the consumer knows): refused with a
    /// 422 so the producer dead-letters it visibly instead of retrying forever.
    #[error("{0}")]
    Refused(String),
    /// A database error: the transaction rolls back and the producer retries later.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<DecodeError> for HandlerError {
    fn from(error: DecodeError) -> HandlerError {
        HandlerError::Refused(error.to_string())
    }
}

impl From<ApiError> for HandlerError {
    fn from(error: ApiError) -> HandlerError {
        if error.status() < 500 {
            HandlerError::Refused(error.to_string())
        } else {
            HandlerError::Refused(format!("internal error: {error}"))
        }
    }
}

impl crate::db::AsDbError for HandlerError {
    fn db_error(&self) -> Option<&sqlx::Error> {
        match self {
            HandlerError::Database(error) => Some(error),
            HandlerError::Refused(_) => None,
        }
    }
}

/// A typed handler: applies `E` on the consumer's transaction (`tx`), which also holds the inbox row.
pub type Handler<E> = for<'a> fn(&'a FragmentRuntime, &'a mut AnyConnection, &'a Envelope, E) -> BoxFuture<'a, Result<(), HandlerError>>;

type ErasedHandler = Box<dyn for<'a> Fn(&'a FragmentRuntime, &'a mut AnyConnection, &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> + Send + Sync>;

/// Work to do once an event's transaction committed (outside it, in the background).
pub type AfterCommit = fn(FragmentRuntime) -> BoxFuture<'static, ()>;

/// One consumed event type.
pub struct Subscription {
    /// Event type, e.g. `cart.order_paid`.
    pub event_type: &'static str,
    /// The schema version the handler decodes.
    pub version: u32,
    handle: ErasedHandler,
    after_commit: Option<AfterCommit>,
}

impl Subscription {
    /// Decodes the envelope and applies it on `tx`.
    pub fn apply<'a>(&'a self, runtime: &'a FragmentRuntime, tx: &'a mut AnyConnection, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        (self.handle)(runtime, tx, envelope)
    }

    pub fn after_commit(&self) -> Option<AfterCommit> {
        self.after_commit
    }
}

/// The events a fragment consumes.
#[derive(Default)]
pub struct Subscriptions {
    list: Vec<Subscription>,
}

impl Subscriptions {
    pub fn new() -> Subscriptions {
        Subscriptions::default()
    }

    /// Subscribes to `E` with `handler`.
    pub fn on<E: Event + Send + 'static>(self, handler: Handler<E>) -> Subscriptions {
        self.push::<E>(handler, None)
    }

    /// Subscribes to `E` with `handler`, and runs `after` once an applied event committed.
    pub fn on_then<E: Event + Send + 'static>(self, handler: Handler<E>, after: AfterCommit) -> Subscriptions {
        self.push::<E>(handler, Some(after))
    }

    fn push<E: Event + Send + 'static>(mut self, handler: Handler<E>, after_commit: Option<AfterCommit>) -> Subscriptions {
        assert!(self.get(E::TYPE).is_none(), "{} subscribed twice", E::TYPE);
        let handle: ErasedHandler = Box::new(move |runtime, tx, envelope| {
            Box::pin(async move {
                let event = envelope.decode::<E>()?;
                handler(runtime, tx, envelope, event).await
            })
        });
        self.list.push(Subscription { event_type: E::TYPE, version: E::VERSION, handle, after_commit });
        self
    }

    /// The subscription to `event_type`, if any.
    pub fn get(&self, event_type: &str) -> Option<&Subscription> {
        self.list.iter().find(|subscription| subscription.event_type == event_type)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The consumed event types and versions.
    pub fn types(&self) -> Vec<(&'static str, u32)> {
        self.list.iter().map(|subscription| (subscription.event_type, subscription.version)).collect()
    }
}
