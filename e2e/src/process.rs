//! The real service binaries, started as processes so a test can signal or kill them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The path of a workspace binary, built (once per process) with the cargo that runs the tests.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    BUILT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        // Cargo sets these for the test process (the e2e package's name, manifest, ...), not for
        // a build: ring's build script reruns when they change, so passing them on rebuilt
        // everything above ring twice per test run (here, then for the next test build).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&name.as_ref())
            {
                cargo.env_remove(name.as_ref());
            }
        }
        let output = cargo
            .args([
                "build",
                "--bins",
                "-p",
                "command-service",
                "-p",
                "projection-service",
                "-p",
                "replay-tool",
            ])
            .current_dir(&workspace)
            .output()
            .expect("cargo build");
        assert!(
            output.status.success(),
            "building the service binaries failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("debug").join(name)
}

/// A loopback port free when asked (the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A free loopback address to listen on.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A service process; killed when dropped.
pub struct ServiceProcess {
    child: Child,
    pub addr: String,
    log: tempfile::NamedTempFile,
    name: String,
    addr_var: String,
    env: Vec<(String, String)>,
}

impl ServiceProcess {
    /// Starts `name` with `env` (plus its listen address) and waits until `/readyz` answers 200.
    pub async fn start(name: &str, addr_var: &str, env: &[(&str, String)]) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let addr = free_addr();
        let child = Self::spawn(name, addr_var, &addr, &env, &log);
        let service = Self {
            child,
            addr,
            log,
            name: name.to_owned(),
            addr_var: addr_var.to_owned(),
            env,
        };
        service.wait_ready().await;
        service
    }

    fn spawn(
        name: &str,
        addr_var: &str,
        addr: &str,
        env: &[(String, String)],
        log: &tempfile::NamedTempFile,
    ) -> Child {
        Command::new(binary(name))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(addr_var, addr)
            .env("LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"))
    }

    /// Starts the process again, on the same address, with the same settings (after a kill).
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.name, &self.addr_var, &self.addr, &self.env, &self.log);
        self.wait_ready().await;
    }

    /// Changes (or adds) a setting for the next [`ServiceProcess::restart`].
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.addr);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never became ready:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGTERM: a graceful stop.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, up to `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates a contact "Ada" through the command-service at `command` and reads it back from the
/// projection-service at `query` with `min_version` (the services as processes): the smallest
/// proof that the whole system works on whatever it was started on.
pub async fn contact_round_trip(command: &str, query: &str, tenant: &crate::Tenant) {
    let http = reqwest::Client::new();
    let project = format!("/v1/projects/{}", tenant.project_id);
    let created: serde_json::Value = http
        .post(format!("{command}{project}/contacts"))
        .bearer_auth(&tenant.api_key)
        .json(&serde_json::json!({"name": "Ada"}))
        .send()
        .await
        .expect("create a contact")
        .json()
        .await
        .expect("a JSON answer");
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {created}"));
    let read = http
        .get(format!(
            "{query}{project}/contacts/{id}?min_version=1&wait_ms=10000"
        ))
        .bearer_auth(&tenant.api_key)
        .send()
        .await
        .expect("read the contact");
    assert_eq!(read.status(), reqwest::StatusCode::OK);
    assert_eq!(
        read.json::<serde_json::Value>().await.expect("JSON")["name"],
        "Ada"
    );
}

/// Both services as processes of their own, on a database and a broker that checks logins and
/// TLS (as `deploy/` runs them), the relay polling every 100 ms: what the crash tests kill.
pub struct ProcessSystem {
    // Field order is drop order: the processes stop before their broker and database go.
    pub command: ServiceProcess,
    pub query: ServiceProcess,
    pub tenant: crate::Tenant,
    pub broker: crate::SecuredBroker,
    pub db: crate::TestDb,
}

impl ProcessSystem {
    /// `env` adds to (or overrides) both services' environment (a setting one of them does not
    /// have is ignored by it).
    pub async fn start(env: &[(&str, String)]) -> Self {
        let db = crate::TestDb::new().await;
        let broker = crate::SecuredBroker::start(2).await;
        let tenant = crate::TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
        let settings = [vec![("RELAY_POLL_MS", "100".to_owned())], env.to_vec()].concat();
        let stream = &broker.stream;
        let command_env = [stream.command_env(&db.url), settings.clone()].concat();
        let query_env = [stream.projection_env(&db.url), settings].concat();
        let command = ServiceProcess::start("command-service", "COMMAND_ADDR", &command_env).await;
        let query = ServiceProcess::start("projection-service", "QUERY_ADDR", &query_env).await;
        Self {
            command,
            query,
            tenant,
            broker,
            db,
        }
    }
}
