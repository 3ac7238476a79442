//! `tessera-fragment`: the SDK a fragment team codes against.
//!
//! A fragment crate owns its domain (pages, server functions, queries, migrations) and implements one
//! trait, [`Fragment`]. This crate holds what every fragment would otherwise copy, and nothing that runs a
//! process: assembling processes, balancing instances, relaying events over HTTP, NATS or PostgreSQL's
//! replication stream, metrics and the OpenID Connect relying party are the host's (`tessera-host`), which
//! only binaries and the shell depend on. A fragment crate depends on this crate, `tessera-contracts` and
//! `shared-auth` only (`cargo xtask test` checks it).
//!
//! Layout, from what a fragment writes down to what it stands on (no module imports one above it):
//! - [`fragment`]: the [`Fragment`] trait (name, prefix, nav, migrations, router, jobs, seed, published
//!   events, subscriptions) and [`describe`](fragment::describe), the description the shell routes by;
//! - [`routes`]: the routes every fragment has under its prefix (page, widget, server functions, bundle,
//!   event endpoint, 404) and page rendering; [`page`]: the HTML document (islands, the empty chrome slot
//!   the shell fills), widgets, status pages; [`api`]: server functions and the one mapping of
//!   [`ApiError`] to HTTP statuses; [`assets`]: the content-hashed bundle; [`manifest`]: the build
//!   manifest read at run time and the hydration tags (with the page runtime `islands.js`);
//!   [`timing`]: the fragment's `Server-Timing`;
//! - [`runtime`]: the runtime handle [`FragmentRuntime`] every handler receives;
//! - events: [`outbox`] (publish in the caller's transaction), [`subscriptions`] (consume, typed
//!   handlers), [`inbox`] (apply once: inbox row and handler in one transaction), [`event_admin`]
//!   (status, dead letters, replay, retention);
//! - calls: [`service`] (signed calls to another service, and checking them), [`peers`] (reaching a
//!   service by name, in process or through the host's pools), [`signature`] (the timestamped HMAC of
//!   events and calls), [`webhook`] (the payment provider's signed webhooks), [`secrets`] (one secret
//!   per trust relationship, loaded on first use);
//! - data: [`db`] (one database per service: SQLite file or PostgreSQL schema, embedded migrations for
//!   both, transient-conflict retries, state enums as text columns), [`lease`] (instances of a fragment
//!   taking turns), [`fs`] (owner-only files).
//!
//! Decisions: sqlx's `Any` driver so one query text serves SQLite and PostgreSQL (`$1` placeholders,
//! `BIGINT` and `TEXT` only); `ring` for HMAC (already in the tree through `jsonwebtoken`); `futures`'
//! `BoxFuture` for the object-safe traits. The fragment-alone test harness runs a fragment as its binary
//! does, so it needs the host: it is `tessera-testing`, a dev-dependency.

pub mod api;
pub mod assets;
pub mod db;
pub mod event_admin;
pub mod fragment;
pub mod fs;
pub mod inbox;
pub mod lease;
pub mod manifest;
pub mod outbox;
pub mod page;
pub mod peers;
pub mod routes;
pub mod runtime;
pub mod secrets;
pub mod service;
pub mod signature;
pub mod subscriptions;
pub mod timing;
pub mod webhook;

pub use fragment::Fragment;
pub use runtime::{init_executor, internal, use_runtime, FragmentRuntime};
/// Stores a fragment's own enum of states as its text in a column (see `tessera_contracts::text_column`).
pub use tessera_contracts::text_column;
pub use tessera_contracts::ApiError;
