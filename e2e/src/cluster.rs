//! A 3-node NATS JetStream cluster on loopback for tests: the shape of `deploy/nats/` (cluster
//! `ventros`, JetStream on every node), on free ports, each node with its own store directory in
//! a temporary directory. A node can be killed (SIGKILL) and started again on the same ports and
//! store, as a crashed and restarted server. [`NatsCluster::start_secured`] runs it as `deploy/`
//! does: TLS and the logins of `deploy/nats/auth.conf`, no anonymous client.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use platform::nats::{NatsAuth, StreamSettings};

use crate::nats_security::{BrokerSecurity, Login};

/// One `nats-server` of the cluster.
struct Node {
    name: String,
    client_port: u16,
    route_port: u16,
    child: Option<Child>,
}

pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
    security: Option<Arc<BrokerSecurity>>,
}

impl NatsCluster {
    /// Starts three nodes and waits until JetStream has a meta leader (streams can be created).
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The same, with TLS on the client ports and only the logins of `deploy/nats/auth.conf`.
    pub async fn start_secured(security: Arc<BrokerSecurity>) -> Self {
        Self::start_with(Some(security)).await
    }

    async fn start_with(security: Option<Arc<BrokerSecurity>>) -> Self {
        let nodes = (1..=3)
            .map(|n| Node {
                name: format!("nats-{n}"),
                client_port: crate::process::free_port(),
                route_port: crate::process::free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Self {
            nodes,
            dir: tempfile::tempdir().expect("temp dir"),
            security,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_listening(i).await;
        }
        cluster.wait_for_meta_leader().await;
        cluster
    }

    /// Every node's client URL, comma-separated: what `NATS_URL` takes.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One node's client URL.
    pub fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[node].client_port)
    }

    /// The operator's login (anonymous on an open cluster): the harness's own requests.
    pub fn admin_auth(&self) -> NatsAuth {
        self.security
            .as_ref()
            .map(|s| s.auth(Login::Admin))
            .unwrap_or_default()
    }

    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.nodes[node].name)),
        )
        .unwrap_or_default()
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.route_port))
            .collect();
        let node = &self.nodes[i];
        let store = self.dir.path().join(&node.name);
        let mut command = Command::new(crate::nats::nats_server_binary());
        if let Some(security) = &self.security {
            security.configure(&mut command);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &node.client_port.to_string()])
            .args(["-js", "-sd"])
            .arg(&store)
            .args(["--server_name", &node.name, "--cluster_name", "ventros"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.route_port),
                "--routes",
                &routes.join(","),
            ])
            .arg("-l")
            .arg(self.dir.path().join(format!("{}.log", node.name)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (set NATS_SERVER_BIN if it is not /usr/sbin/nats-server)");
        self.nodes[i].child = Some(child);
    }

    async fn wait_listening(&self, i: usize) {
        let port = self.nodes[i].client_port;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not start on {port}:\n{}",
                self.nodes[i].name,
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the JetStream API answers through the cluster (a meta leader is elected).
    /// Asks `$JS.API.INFO` raw: the client's typed account info does not parse 2.9's answer.
    pub async fn wait_for_meta_leader(&self) {
        let client = platform::nats::connect(&self.urls(), &self.admin_auth())
            .await
            .expect("nats");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                client.request("$JS.API.INFO", "".into()),
            )
            .await;
            let outcome = match answer {
                Ok(Ok(message)) => serde_json::from_slice::<serde_json::Value>(&message.payload)
                    .map_err(|e| e.to_string())
                    .and_then(|v| match v.get("error") {
                        None => Ok(()),
                        Some(error) => Err(error.to_string()),
                    }),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer in 2 s".to_owned()),
            };
            match outcome {
                Ok(()) => return,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "no JetStream meta leader: {e}\n{}",
                    self.log(0)
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates the stream (retrying while the cluster settles), with the replicas in `settings`.
    pub async fn create_stream(&self, settings: &StreamSettings) {
        let client = platform::nats::connect(&self.urls(), &self.admin_auth())
            .await
            .expect("nats");
        let js = async_nats::jetstream::new(client);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match platform::nats::ensure_stream(&js, settings).await {
                Ok(_) => break,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "stream {} not created: {e}",
                    settings.name
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let info = js
            .get_stream(&settings.name)
            .await
            .expect("stream")
            .get_info()
            .await
            .expect("stream info");
        assert_eq!(info.config.num_replicas, settings.replicas);
    }

    /// SIGKILL of one node, as a crash.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again, on its ports and store; it rejoins the cluster.
    pub async fn restart(&mut self, node: usize) {
        self.kill(node);
        self.spawn(node);
        self.wait_listening(node).await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
