//! `tessera-host`: everything that assembles and runs a Tessera process, whatever it contains — one
//! fragment (`tessera-catalog`), the shell (`tessera-shell`), or the shell with every fragment
//! (`tessera`). Fragment crates never depend on it (they code against `tessera-fragment`); binaries and
//! the shell do.
//!
//! Layout, from what a binary calls down to what it stands on (no module imports one above it):
//! - [`binary`]: a binary's `main` (`main_of`, `run_fragment`, tracing);
//! - [`serve`]: the listener, the layers every process gets, `/healthz` and `/readyz`, draining on
//!   SIGTERM; metrics on a loopback listener of their own; [`security`]: the security headers (CSP with
//!   nonces, frame protection, nosniff, Referrer-Policy, HSTS) of the shell and of every fragment's own
//!   process;
//! - [`assembly`]: [`Host`](assembly::Host) opens each fragment's database, builds its runtime and router,
//!   connects the services in process or over the network, starts relays, jobs and retention, seeds;
//!   [`discovery`]: reading the upstreams' descriptions (readiness, prefix, what they consume);
//! - events: [`relay`] (claims, retries, dead letters, the HTTP transport), [`broker`] (NATS
//!   JetStream: streams, durable consumers), [`cdc`] (the relay fed by PostgreSQL's logical replication
//!   stream);
//! - [`pool`]: the instances of another service, their health check and the power-of-two-choices pick,
//!   and the process's HTTP clients — the shell's registry uses the same;
//! - [`provision`]: `tessera db provision`, one PostgreSQL role per service that owns its schema only;
//! - [`relying_party`]: a fragment on a domain of its own signs its users in at the shell (OpenID
//!   Connect);
//! - [`settings`]: typed, layered settings (defaults, a TOML file, `TESSERA_*` variables), in sections
//!   owned by what reads them; [`login`]: the shared login's settings and the verifier made from them;
//!   [`metrics`]: Prometheus; [`client_ip`]: the client's address behind trusted proxies; [`tls`]: the
//!   certificate authorities every outbound client trusts; [`error`].
//!
//! Libraries, chosen rather than written: `figment` (layered config), `async-nats` (JetStream),
//! `pgwire-replication` (the replication protocol; sqlx has no replication connections), `openidconnect`
//! (code exchange, ID token checks), `metrics` with `metrics-exporter-prometheus`, `reqwest`, `tower-http`.

pub mod assembly;
pub mod binary;
pub mod broker;
pub mod cdc;
pub mod client_ip;
pub mod discovery;
pub mod error;
pub mod login;
pub mod metrics;
pub mod pool;
pub mod provision;
pub mod relay;
pub mod relying_party;
pub mod security;
pub mod serve;
pub mod settings;
pub mod tls;

pub use assembly::{Host, Local, Started};
pub use error::HostError;
pub use serve::Running;
pub use settings::Settings;
