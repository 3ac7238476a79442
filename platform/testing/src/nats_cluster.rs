//! A real NATS JetStream cluster for tests: three `nats-server` processes (Debian's package) joined by
//! cluster routes, each with its own store, on free loopback ports ([`NatsCluster`]). A test kills and
//! restarts nodes while events flow, as an operator's cluster loses and regains machines.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts the server, when it is not on the `PATH`.
const DEBIAN_BINARY: &str = "/usr/sbin/nats-server";

/// One node: its ports and, while it runs, its process.
struct Node {
    client_port: u16,
    cluster_port: u16,
    config: PathBuf,
    process: Option<Child>,
}

/// A running cluster of `nats-server` processes; dropped, every node is killed and its store removed.
pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// The `nats-server` binary, if this machine has one (`apt-get install nats-server`).
pub fn nats_server_binary() -> Option<PathBuf> {
    let on_path =
        std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("nats-server")).collect::<Vec<_>>()).unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from(DEBIAN_BINARY)]).find(|path| path.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).map(|addr| addr.port()).expect("a free loopback port")
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

impl NatsCluster {
    /// Starts `size` nodes with JetStream, each routing to all the others, and waits until each takes
    /// clients. (JetStream's leader election follows within seconds; a caller creating replicated
    /// streams retries until it succeeds.) `None` when no `nats-server` is installed.
    pub fn start(size: usize) -> Option<NatsCluster> {
        let binary = nats_server_binary()?;
        let dir = tempfile::tempdir().expect("a scratch directory");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, cluster)| format!("nats-route://127.0.0.1:{cluster}")).collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(index, &(client_port, cluster_port))| {
                let config = dir.path().join(format!("n{index}.conf"));
                let store = dir.path().join(format!("n{index}"));
                std::fs::write(&config, node_config(index, client_port, cluster_port, &store, &routes)).expect("writing a node's configuration");
                Node { client_port, cluster_port, config, process: None }
            })
            .collect();
        let mut cluster = NatsCluster { binary, nodes, _dir: dir };
        for index in 0..size {
            cluster.start_node(index);
        }
        for index in 0..size {
            cluster.wait_listening(index);
        }
        Some(cluster)
    }

    /// The clients' URL: every node, comma-separated (`TESSERA_NATS_URL`).
    pub fn url(&self) -> String {
        self.nodes.iter().map(|node| format!("nats://127.0.0.1:{}", node.client_port)).collect::<Vec<_>>().join(",")
    }

    /// Kills node `index` at once (SIGKILL: a machine lost, not a shutdown).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts node `index` again on its own store and ports, and waits until it takes clients.
    pub fn restart(&mut self, index: usize) {
        self.start_node(index);
        self.wait_listening(index);
    }

    fn start_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let log = std::fs::File::create(node.config.with_extension("log")).expect("a node's log file");
        let process = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        node.process = Some(process);
    }

    fn wait_listening(&self, index: usize) {
        let node = &self.nodes[index];
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(listening(node.client_port) && listening(node.cluster_port)) {
            assert!(Instant::now() < deadline, "nats-server node {index} did not listen on {} within 20 s", node.client_port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}

/// A node's configuration: its name, client and route listeners on loopback, its JetStream store, and
/// routes to every node (its own is ignored).
fn node_config(index: usize, client_port: u16, cluster_port: u16, store: &Path, routes: &[String]) -> String {
    format!(
        "server_name: n{index}\nlisten: 127.0.0.1:{client_port}\njetstream {{\n  store_dir: \"{}\"\n}}\ncluster {{\n  name: tessera-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [\n    {}\n  ]\n}}\n",
        store.display(),
        routes.join("\n    ")
    )
}
