//! Discovery of the services a process is configured to reach over the network (its upstreams): which of
//! their instances are ready, where each service is (its prefix, for events and calls), and what it
//! consumes (so the local producers address their events to it), and the public keys it signs events and
//! calls with (every instance's, so each may have its own; `tessera_fragment::signature`). Those keys are
//! trusted because they come from the address this process's configuration gives for that service. The
//! same health check as the shell's registry (`crate::pool::Instance::check`).

use std::sync::Arc;
use std::time::Duration;

use tessera_contracts::domain::ServiceName;
use tessera_fragment::fragment::{publishes, Fragment};
use tessera_fragment::peers::Peers;
use tessera_fragment::runtime::FragmentRuntime;
use tessera_fragment::signature::{KeyDirectory, KEY_MEMORY};

use crate::pool::{Clients, Pool, Remote};
use crate::settings::Settings;

/// How often a process reads the descriptions of the services it is configured to reach: soon while one
/// has never answered, then now and then (a redeploy may change what it consumes).
const DISCOVERY_EVERY: Duration = Duration::from_secs(5);
const DISCOVERY_RETRY: Duration = Duration::from_millis(500);

/// Checks the instances of the services configured as upstreams (the same check as the shell's
/// registry, `Instance::check`): which are ready, where the service is (its prefix, for events and
/// calls) and what it consumes (so local producers address events to it).
pub struct Discovery {
    remotes: Vec<(ServiceName, Arc<Pool>)>,
    producers: Vec<(&'static dyn Fragment, FragmentRuntime)>,
    peers: Arc<Peers>,
    keys: Arc<KeyDirectory>,
    clients: Clients,
}

impl Discovery {
    /// The services `settings` configure as upstreams that do not run in this process (`local`: its
    /// fragments with their runtimes, whose outboxes learn the remote subscribers); it sets their routes in
    /// `peers` at once (without a prefix until they describe themselves).
    /// `keys` learns their public signing keys.
    pub fn new(
        settings: &Settings,
        local: Vec<(&'static dyn Fragment, FragmentRuntime)>,
        peers: Arc<Peers>,
        keys: Arc<KeyDirectory>,
        clients: &Clients,
    ) -> Discovery {
        let is_local = |name: &ServiceName| local.iter().any(|(fragment, _)| &fragment.name() == name);
        let remotes = settings
            .site
            .fragments
            .keys()
            .filter(|name| !is_local(name))
            .map(|name| (name.clone(), Arc::new(Pool::of(&settings.instances_of(name)))))
            .filter(|(_, pool)| !pool.instances.is_empty())
            .collect();
        let discovery = Discovery { remotes, producers: local, peers, keys, clients: clients.clone() };
        // Calls use full paths from the contracts, so they can go out before the description is read;
        // event deliveries wait for the prefix (see `HttpTransport`).
        for (name, pool) in &discovery.remotes {
            discovery.peers.set(name.clone(), Remote::target("", pool.clone(), &discovery.clients));
        }
        discovery
    }

    /// Checks every instance; returns whether every configured service has been described.
    pub async fn run_once(&self) -> bool {
        let mut complete = true;
        for (name, pool) in &self.remotes {
            let descriptors = pool.check_all(&self.clients, name).await;
            for descriptor in &descriptors {
                self.keys.learn(name, &descriptor.signing_keys);
            }
            if !descriptors.is_empty() {
                // Keys only unreachable instances published are kept a while (they may come back).
                self.keys.forget_unseen(name, KEY_MEMORY);
            }
            let Some(descriptor) = descriptors.into_iter().next() else {
                if self.peers.get(name).is_none_or(|target| target.prefix().is_empty()) {
                    complete = false;
                    tracing::debug!(%name, "no instance of this service described itself yet; events to it wait");
                }
                continue;
            };
            if !self.keys.knows(name) {
                // Its events and calls cannot be verified yet: look again soon.
                complete = false;
            }
            // The same pool: what the checks and failed calls learned about its instances is kept.
            self.peers.set(name.clone(), Remote::target(descriptor.prefix.clone(), pool.clone(), &self.clients));
            for consumed in &descriptor.consumes {
                for (_, runtime) in self.producers.iter().filter(|(producer, _)| publishes(*producer, &consumed.event_type)) {
                    if let Err(error) = runtime.events.outbox.subscribe(&runtime.db, &consumed.event_type, name).await {
                        tracing::error!(%error, subscriber = %name, event_type = %consumed.event_type, "recording a subscription failed; retried at the next discovery");
                        complete = false;
                    }
                }
            }
        }
        complete
    }

    /// Checks again every few seconds, forever (sooner while a service has never answered, and soon after
    /// a signature under a key not known here: a new instance of a service, or a rotation).
    pub async fn run(self, mut complete: bool) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(if complete { DISCOVERY_EVERY } else { DISCOVERY_RETRY }) => {}
                () = self.keys.unknown_key_seen() => {
                    // At most a few rounds a second, however many such signatures come.
                    tokio::time::sleep(DISCOVERY_RETRY / 2).await;
                }
            }
            complete = self.run_once().await;
        }
    }
}
