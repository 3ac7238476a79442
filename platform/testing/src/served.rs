//! A server a test started ([`Served`]), stopped as SIGTERM would stop it when the test lets go of it:
//! the harnesses of the fragments, the shell and the whole site hold one each instead of four copies of
//! the same teardown.

use tessera_fragment::db::StoreSettings;
use tessera_host::Running;

use crate::backend::drop_schemas;

/// A running server, its data directory, and what it left in PostgreSQL. Dropping it starts a graceful
/// drain (not an abort: the server closes its kept-alive connections, so no connection task — another
/// test server's client may hold one open — keeps its pools alive after the test), aborts its background
/// work, and drops its schemas.
pub struct Served {
    pub running: Running,
    /// `(url, schema prefix, services)` to drop afterwards, when on PostgreSQL.
    schemas: Option<(String, String, Vec<String>)>,
    _data: tempfile::TempDir,
}

impl Served {
    /// `running` with its data under `data`, on the database `store` names; `services` are the schemas
    /// it made there.
    pub fn new(running: Running, data: tempfile::TempDir, store: &StoreSettings, services: &[&str]) -> Served {
        let schemas = store.postgres_url.clone().map(|url| (url, store.schema_prefix.clone(), services.iter().map(|service| (*service).to_owned()).collect()));
        Served { running, schemas, _data: data }
    }

    /// Stops the server's background work (its relays, sweepers, discovery) while it keeps serving: a
    /// test that drives a relay of its own on the outbox then has the only one.
    pub fn stop_background(&mut self) {
        for task in self.running.background.drain(..) {
            task.abort();
        }
    }

    /// Starts a drain, as SIGTERM does; [`Running::handle`] ends when it is done.
    pub fn stop(&self) {
        self.running.stop.notify_one();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
        for task in &self.running.background {
            task.abort();
        }
        if let Some((url, prefix, services)) = self.schemas.take() {
            drop_schemas(url, prefix, services);
        }
    }
}
