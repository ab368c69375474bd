//! NATS for tests: a stream of its own on the shared server (deleted afterwards), or a private
//! `nats-server` process that a test can stop and start again to play a broker outage, either
//! open (as the shared development server) or checking logins and TLS as `deploy/` runs it
//! ([`BrokerSecurity`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use platform::nats::NatsAuth;
use uuid::Uuid;

use crate::block_on_cleanup;
use crate::nats_security::{BrokerSecurity, Login};

pub const SHARED_NATS: &str = "nats://127.0.0.1:4222";

/// A stream name and subject prefix no other test uses.
pub struct TestStream {
    pub url: String,
    pub name: String,
    pub prefix: String,
    pub partitions: u32,
    /// The `DATA_KEK` the test's services run with (a fresh one per test: every test exercises
    /// wrapped data keys, as production does).
    pub kek: String,
    /// The broker's logins and CA, when it checks them (None: the open shared server).
    pub security: Option<Arc<BrokerSecurity>>,
}

impl TestStream {
    /// The settings every service process of a test needs: its database (`database_url`, the
    /// owner's; the services log in as their own roles), this stream and its partitions (add the
    /// test's own after them).
    pub fn service_env(&self, database_url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("MIGRATION_DATABASE_URL", database_url.to_owned()),
            (
                "DATABASE_URL",
                crate::login_url(database_url, "ventros_app"),
            ),
            (
                "SYSTEM_DATABASE_URL",
                crate::login_url(database_url, "ventros_projector"),
            ),
            ("NATS_URL", self.url.clone()),
            ("NATS_STREAM", self.name.clone()),
            ("NATS_SUBJECT_PREFIX", self.prefix.clone()),
            ("EVENT_PARTITIONS", self.partitions.to_string()),
            ("DATA_KEK", self.kek.clone()),
        ]
    }

    /// The login settings of a service logging in as `login` (none on an open broker).
    pub fn login_env(&self, login: Login) -> Vec<(&'static str, String)> {
        self.security
            .as_ref()
            .map(|s| s.env(login))
            .unwrap_or_default()
    }

    /// The login of `login` as settings (the default, anonymous, on an open broker).
    pub fn auth(&self, login: Login) -> NatsAuth {
        self.security
            .as_ref()
            .map(|s| s.auth(login))
            .unwrap_or_default()
    }

    /// A client with the operator's login, for a test's inspection of the stream.
    pub async fn admin_client(&self) -> async_nats::Client {
        platform::nats::connect(&self.url, &self.auth(Login::Admin))
            .await
            .expect("nats")
    }

    /// The data keys as the test's services hold them (for a rebuild or verify in the test).
    pub fn keys(&self) -> platform::personal::DataKeys {
        let kek = platform::crypto::Kek::from_base64(&self.kek).expect("a generated KEK");
        platform::personal::DataKeys::new(platform::crypto::Keyring::new(Some(kek), vec![]), 0)
    }

    pub fn new(url: Option<String>, partitions: u32) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        Self {
            url: url.unwrap_or_else(|| {
                std::env::var("TEST_NATS_URL").unwrap_or_else(|_| SHARED_NATS.to_owned())
            }),
            name: format!("TEST_{id}"),
            prefix: format!("test.{id}"),
            partitions,
            kek: platform::crypto::Kek::generate_base64().to_string(),
            security: None,
        }
    }

    /// The stream `security`'s broker at `url` was configured for.
    pub fn secured(url: String, partitions: u32, security: Arc<BrokerSecurity>) -> Self {
        Self {
            url,
            name: security.stream.clone(),
            prefix: security.prefix.clone(),
            partitions,
            kek: platform::crypto::Kek::generate_base64().to_string(),
            security: Some(security),
        }
    }
}

/// A private broker that checks logins and TLS as `deploy/` runs it (`deploy/nats/auth.conf`),
/// with a stream of its own: what the system suites run on, so that each shows its promises hold
/// with the services logged in as in production.
pub struct SecuredBroker {
    // First: the stream is deleted while its server still runs.
    pub stream: TestStream,
    pub server: NatsServer,
}

impl SecuredBroker {
    pub async fn start(partitions: u32) -> Self {
        let security = BrokerSecurity::new();
        let server = NatsServer::start_secured(security.clone()).await;
        Self {
            stream: TestStream::secured(server.url(), partitions, security),
            server,
        }
    }

    /// The options of a [`crate::TestSystem`] on this broker.
    pub fn options(&self, options: crate::Options) -> crate::Options {
        crate::Options {
            nats_url: Some(self.server.url()),
            nats_security: self.stream.security.clone(),
            partitions: self.stream.partitions,
            ..options
        }
    }
}

impl TestStream {
    /// [`TestStream::service_env`] plus the broker login of command-service.
    pub fn command_env(&self, database_url: &str) -> Vec<(&'static str, String)> {
        [
            self.service_env(database_url),
            self.login_env(Login::Command),
        ]
        .concat()
    }

    /// [`TestStream::service_env`] plus the broker login of projection-service.
    pub fn projection_env(&self, database_url: &str) -> Vec<(&'static str, String)> {
        [
            self.service_env(database_url),
            self.login_env(Login::Projection),
        ]
        .concat()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let (url, name, auth) = (self.url.clone(), self.name.clone(), self.auth(Login::Admin));
        block_on_cleanup(async move {
            let Ok(options) = auth
                .apply(async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2)))
                .await
            else {
                return;
            };
            let connect = options.connect(platform::nats::server_list(&url));
            if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(3), connect).await {
                let js = async_nats::jetstream::new(client);
                let _ = tokio::time::timeout(Duration::from_secs(3), js.delete_stream(&name)).await;
            }
        });
    }
}

/// A private JetStream server on a free loopback port, with its own store directory.
pub struct NatsServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    security: Option<Arc<BrokerSecurity>>,
    /// The server's stderr (outside the store directory, which tests read as the broker's files).
    log: tempfile::NamedTempFile,
}

/// Whether every partition's projection consumer on `stream` has nothing waiting and nothing
/// unacknowledged (false while the broker does not answer).
pub async fn consumers_drained(
    stream: &async_nats::jetstream::stream::Stream,
    partitions: u32,
) -> bool {
    for partition in 0..partitions {
        match stream
            .consumer_info(projection_service::worker::durable_name(partition))
            .await
        {
            Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {}
            _ => return false,
        }
    }
    true
}

/// The `nats-server` the tests start (`NATS_SERVER_BIN`, default Debian's).
pub fn nats_server_binary() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

impl NatsServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server as `deploy/` runs one: TLS, and only the logins of `deploy/nats/auth.conf`.
    pub async fn start_secured(security: Arc<BrokerSecurity>) -> Self {
        Self::start_with(Some(security)).await
    }

    async fn start_with(security: Option<Arc<BrokerSecurity>>) -> Self {
        let port = crate::process::free_port();
        let mut server = Self {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            security,
            log: tempfile::NamedTempFile::new().expect("log file"),
        };
        server.resume().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory (`-sd`): what the broker keeps on disk.
    pub fn store_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Starts the server again on the same port and store (after [`NatsServer::kill`]).
    pub async fn resume(&mut self) {
        let mut command = Command::new(nats_server_binary());
        if let Some(security) = &self.security {
            security.configure(&mut command);
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(self.log.reopen().expect("log file"))
            .spawn()
            .expect("nats-server (set NATS_SERVER_BIN if it is not /usr/sbin/nats-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not start on {}:\n{}",
                self.port,
                std::fs::read_to_string(self.log.path()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server at once (SIGKILL), as a crash or an outage would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
