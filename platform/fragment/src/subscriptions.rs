//! The events a fragment consumes, with their handlers: `Subscriptions::new().on::<OrderPaid>(handler)`.
//!
//! The consumer subscribes; a producer never names its subscribers. The runtime turns a fragment's
//! subscriptions into the one event endpoint (`POST <prefix>/events`, `crate::routes`) and into the host's
//! broker consumers, and applies each event through `crate::inbox`: the inbox row and the handler's
//! effect in one transaction.
//!
//! The types are generic over the runtime handle `R` a handler receives, so this module needs nothing of
//! the runtime that holds the subscriptions; fragments use the alias `crate::runtime::Subscriptions`.

use futures::future::BoxFuture;
use sqlx::AnyConnection;
use tessera_contracts::events::{DecodeError, Envelope, Event};
use tessera_contracts::ApiError;

use crate::db::AsDbError;

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

impl AsDbError for HandlerError {
    fn db_error(&self) -> Option<&sqlx::Error> {
        match self {
            HandlerError::Database(error) => Some(error),
            HandlerError::Refused(_) => None,
        }
    }
}

/// A typed handler: applies `E` on the consumer's transaction (`tx`), which also holds the inbox row.
pub type Handler<R, E> = for<'a> fn(&'a R, &'a mut AnyConnection, &'a Envelope, E) -> BoxFuture<'a, Result<(), HandlerError>>;

type ErasedHandler<R> = Box<dyn for<'a> Fn(&'a R, &'a mut AnyConnection, &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> + Send + Sync>;

/// Work to do once an event's transaction committed (outside it, in the background).
pub type AfterCommit<R> = fn(R) -> BoxFuture<'static, ()>;

/// Takes, first thing in a transaction that applies `envelopes`, the row locks their handlers will take,
/// in one fixed order. A batch applies many events in one transaction; without this, its locks are taken
/// in the events' order while a request takes the same rows in another, and PostgreSQL breaks the
/// deadlock by failing one of them after its `deadlock_timeout` (a second lost each time).
pub type LockFirst<R> = for<'a> fn(&'a R, &'a mut AnyConnection, &'a [&'a Envelope]) -> BoxFuture<'a, Result<(), sqlx::Error>>;

/// One consumed event type.
pub struct Subscription<R> {
    /// Event type, e.g. `cart.order_paid`.
    pub event_type: &'static str,
    /// The schema version the handler decodes.
    pub version: u32,
    handle: ErasedHandler<R>,
    after_commit: Option<AfterCommit<R>>,
}

impl<R> Subscription<R> {
    /// Decodes the envelope and applies it on `tx`.
    pub fn apply<'a>(&'a self, runtime: &'a R, tx: &'a mut AnyConnection, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        (self.handle)(runtime, tx, envelope)
    }

    pub fn after_commit(&self) -> Option<AfterCommit<R>> {
        self.after_commit
    }
}

/// The events a fragment consumes.
pub struct Subscriptions<R> {
    list: Vec<Subscription<R>>,
    lock_first: Option<LockFirst<R>>,
}

impl<R> Default for Subscriptions<R> {
    fn default() -> Self {
        Subscriptions { list: Vec::new(), lock_first: None }
    }
}

impl<R: Sync + 'static> Subscriptions<R> {
    pub fn new() -> Subscriptions<R> {
        Subscriptions::default()
    }

    /// Subscribes to `E` with `handler`.
    pub fn on<E: Event + Send + 'static>(self, handler: Handler<R, E>) -> Subscriptions<R> {
        self.push::<E>(handler, None)
    }

    /// Subscribes to `E` with `handler`, and runs `after` once an applied event committed.
    pub fn on_then<E: Event + Send + 'static>(self, handler: Handler<R, E>, after: AfterCommit<R>) -> Subscriptions<R> {
        self.push::<E>(handler, Some(after))
    }

    /// Runs `locks` at the start of every transaction that applies events (see [`LockFirst`]).
    pub fn lock_first(mut self, locks: LockFirst<R>) -> Subscriptions<R> {
        self.lock_first = Some(locks);
        self
    }

    fn push<E: Event + Send + 'static>(mut self, handler: Handler<R, E>, after_commit: Option<AfterCommit<R>>) -> Subscriptions<R> {
        assert!(self.get(E::TYPE).is_none(), "{} subscribed twice", E::TYPE);
        let handle: ErasedHandler<R> = Box::new(move |runtime, tx, envelope| {
            Box::pin(async move {
                let event = envelope.decode::<E>()?;
                handler(runtime, tx, envelope, event).await
            })
        });
        self.list.push(Subscription { event_type: E::TYPE, version: E::VERSION, handle, after_commit });
        self
    }
}

impl<R> Subscriptions<R> {
    /// The subscription to `event_type`, if any.
    pub fn get(&self, event_type: &str) -> Option<&Subscription<R>> {
        self.list.iter().find(|subscription| subscription.event_type == event_type)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Takes the locks applying `envelopes` needs, in order, if the fragment said how.
    pub async fn take_locks(&self, runtime: &R, tx: &mut AnyConnection, envelopes: &[&Envelope]) -> Result<(), sqlx::Error> {
        match self.lock_first {
            Some(locks) if !envelopes.is_empty() => locks(runtime, tx, envelopes).await,
            _ => Ok(()),
        }
    }

    /// The consumed event types and versions.
    pub fn types(&self) -> Vec<(&'static str, u32)> {
        self.list.iter().map(|subscription| (subscription.event_type, subscription.version)).collect()
    }
}
