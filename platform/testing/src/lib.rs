//! `tessera-testing`: test support for every Tessera crate, a dev-dependency only (it runs processes,
//! so it uses the host, which no fragment may depend on for real).
//!
//! - [`alone`]: **one fragment alone** in its own crate's tests ([`Alone`]), served as its binary serves
//!   it, against a database of its own, with the rest of the site met only at the contract boundary:
//!   - **signed-in users** carry an access token signed by a key of the test's own, which the fragment
//!     trusts as it trusts the shell's (the shell is not running) ([`Alone::cookie_of`]);
//!   - **events in** are signed envelopes delivered to the fragment's inbox, as a producer's relay
//!     sends them ([`Alone::deliver`]); a forged one is refused as it would be in production;
//!   - **calls in** are signed service calls ([`Alone::service_client`]), as another fragment makes them;
//!   - **calls out** reach a [`Double`] of the other service: a small router the test writes to answer
//!     that service's contract paths, never a stand-in for anyone's database.
//! - [`web`]: talking to any running process — the one set of request, sign-in, cookie and waiting
//!   helpers the fragments', the shell's and the whole site's harnesses share.
//! - [`served`]: a server a test started ([`Served`]), drained and cleaned up when the test lets go.
//! - [`nats_cluster`]: a three-node NATS JetStream cluster of real `nats-server` processes whose nodes a
//!   test kills and restarts ([`NatsCluster`]).
//! - [`backend`]: SQLite or PostgreSQL ([`Backend`], [`each_backend!`](crate::each_backend)), the
//!   settings every test process starts from, and cleaning up PostgreSQL schemas.
//!
//! Who tests what: a fragment's behaviour in its own crate (`fragments/<name>/tests`), the shell's
//! (sign-in, sessions, the OpenID Connect provider, composition, the registry) in `platform/shell/tests`
//! with probe fragments, the SDK's and the host's in theirs, and what crosses services in `site/tests`.

pub mod alone;
pub mod backend;
pub mod nats_cluster;
pub mod served;
pub mod web;

pub use alone::{Alone, Double, Options};
pub use backend::{nats_url, postgres_configured, postgres_url, test_settings, Backend};
pub use nats_cluster::NatsCluster;
pub use reqwest::StatusCode;
pub use served::Served;
pub use web::Http;
