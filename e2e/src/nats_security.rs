//! A broker that checks who connects, for the tests that run against one: TLS with a CA and a
//! server certificate made for the test, and the logins and permissions of
//! `deploy/nats/auth.conf`, the shipped file itself with the test's stream name and subject
//! prefix in place of the deployment's. A test on it checks the permissions a deployment gets,
//! not a copy of them. The services get their login through the settings a user would set
//! (`NATS_USER`, `NATS_PASSWORD`, `NATS_TLS_CA`, `NATS_INBOX_PREFIX`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use platform::nats::NatsAuth;
use uuid::Uuid;

/// The stream name and subject prefix `deploy/nats/auth.conf` is written for.
const SHIPPED_STREAM: &str = "VENTROS_EVENTS";
const SHIPPED_PREFIX: &str = "ventros.events";

/// The logins of `deploy/nats/auth.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// command-service: publishes under the prefix, creates the stream if missing.
    Command,
    /// projection-service (and `replay-tool status`): consumes.
    Projection,
    /// The operator: everything in the account (the tests' inspection and clean-up).
    Admin,
}

impl Login {
    pub fn user(self) -> &'static str {
        match self {
            Login::Command => "command",
            Login::Projection => "projection",
            Login::Admin => "admin",
        }
    }

    /// The reply inboxes `deploy/nats/auth.conf` lets this login subscribe to (None: any).
    pub fn inbox_prefix(self) -> Option<String> {
        (self != Login::Admin).then(|| format!("_INBOX_{}", self.user()))
    }

    /// The variable `deploy/nats/auth.conf` reads this login's password from.
    fn password_variable(self) -> &'static str {
        match self {
            Login::Command => "NATS_COMMAND_PASSWORD",
            Login::Projection => "NATS_PROJECTION_PASSWORD",
            Login::Admin => "NATS_ADMIN_PASSWORD",
        }
    }
}

/// A test's CA, server certificate, passwords and stream names; files in a temporary directory.
pub struct BrokerSecurity {
    pub stream: String,
    pub prefix: String,
    passwords: [(Login, String); 3],
    dir: tempfile::TempDir,
}

/// The stream and where the files are; not the passwords.
impl std::fmt::Debug for BrokerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSecurity")
            .field("stream", &self.stream)
            .field("prefix", &self.prefix)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl BrokerSecurity {
    pub fn new() -> Arc<Self> {
        let id = Uuid::new_v4().simple().to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, pem) in certificates() {
            std::fs::write(dir.path().join(name), pem).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // nats-server reads a variable's value as a config token: `5e3...` would be a number
        // and the server would refuse to start, so a password starts with a letter.
        let password = || format!("p{}", Uuid::new_v4().simple());
        Arc::new(Self {
            stream: format!("TEST_{id}"),
            prefix: format!("test.{id}"),
            passwords: [
                (Login::Command, password()),
                (Login::Projection, password()),
                (Login::Admin, password()),
            ],
            dir,
        })
    }

    /// The CA the broker's certificate is signed by (`NATS_TLS_CA`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn password(&self, login: Login) -> &str {
        &self
            .passwords
            .iter()
            .find(|(l, _)| *l == login)
            .expect("every login has a password")
            .1
    }

    /// The settings a service logging in as `login` is given.
    pub fn auth(&self, login: Login) -> NatsAuth {
        NatsAuth {
            nats_user: Some(login.user().to_owned()),
            nats_password: Some(self.password(login).to_owned()),
            nats_tls_ca: Some(self.ca()),
            nats_inbox_prefix: login.inbox_prefix(),
            ..NatsAuth::default()
        }
    }

    /// The same as environment variables, for a service process.
    pub fn env(&self, login: Login) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("NATS_USER", login.user().to_owned()),
            ("NATS_PASSWORD", self.password(login).to_owned()),
            ("NATS_TLS_CA", self.ca().display().to_string()),
        ];
        env.extend(login.inbox_prefix().map(|p| ("NATS_INBOX_PREFIX", p)));
        env
    }

    /// The passwords as `deploy/nats/auth.conf` reads them, from nats-server's environment.
    pub fn server_env(&self) -> Vec<(&'static str, String)> {
        self.passwords
            .iter()
            .map(|(login, password)| (login.password_variable(), password.clone()))
            .collect()
    }

    /// Makes `command` (a `nats-server` about to start) take these logins, permissions and TLS.
    pub fn configure(&self, command: &mut std::process::Command) {
        command
            .arg("-c")
            .arg(self.server_config())
            .envs(self.server_env());
    }

    /// A nats-server config file for this test: TLS on the client port, and the shipped
    /// logins and permissions for this test's stream. Written once, read by every node.
    pub fn server_config(&self) -> PathBuf {
        let path = self.dir.path().join("nats.conf");
        if !path.exists() {
            let config = format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 5\n}}\n\n{}",
                self.file("server.pem"),
                self.file("server-key.pem"),
                self.shipped_permissions()
            );
            std::fs::write(&path, config).expect("nats.conf");
        }
        path
    }

    /// One of the PEM files made for the test: `ca.pem`, `server.pem`, `server-key.pem`, and a
    /// client certificate the CA signed, `client.pem` and `client-key.pem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `deploy/nats/auth.conf` with this test's stream and prefix.
    fn shipped_permissions(&self) -> String {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/auth.conf");
        let text = std::fs::read_to_string(&shipped)
            .unwrap_or_else(|e| panic!("{}: {e}", shipped.display()));
        assert!(
            text.contains(SHIPPED_STREAM) && text.contains(SHIPPED_PREFIX),
            "{} no longer names {SHIPPED_STREAM} and {SHIPPED_PREFIX}: update the harness",
            shipped.display()
        );
        text.replace(SHIPPED_STREAM, &self.stream)
            .replace(SHIPPED_PREFIX, &self.prefix)
    }
}

/// A CA, a server certificate it signed for `127.0.0.1` and `localhost`, and a client
/// certificate it signed: (file name, PEM).
fn certificates() -> [(&'static str, String); 5] {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ventros test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let server_key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, "nats test server");
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .expect("server certificate");
    let client_key = KeyPair::generate().expect("client key");
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client
        .distinguished_name
        .push(DnType::CommonName, "ventros test client");
    let client_cert = client
        .signed_by(&client_key, &ca_cert, &ca_key)
        .expect("client certificate");
    [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", server_cert.pem()),
        ("server-key.pem", server_key.serialize_pem()),
        ("client.pem", client_cert.pem()),
        ("client-key.pem", client_key.serialize_pem()),
    ]
}
