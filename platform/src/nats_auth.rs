//! Who a service is to NATS, and how it knows the broker is the deployment's: one of user and
//! password, token, NKey seed file or credentials file, and TLS verified against the
//! deployment's own CA (with a client certificate where the server asks for one). Each service
//! logs in as a user whose permissions allow only what it does on the broker (`deploy/nats/`:
//! command-service publishes, projection-service consumes), so a leaked login cannot forge what
//! the other does.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use async_nats::ConnectOptions;

/// The NATS login and TLS settings, flattened into [`crate::Settings`]. Unset, the services
/// connect anonymously over plain TCP (the development server of `scripts/run.sh`).
#[derive(Clone, Default, clap::Args)]
pub struct NatsAuth {
    /// The NATS user to log in as (with `NATS_PASSWORD`).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// The password of `NATS_USER`.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// A token to log in with (a server with `authorization { token }`), instead of a user.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// A file holding an NKey seed (`SU...`) to log in with, instead of a user. A file rather
    /// than the seed itself in the environment: the environment of a process is readable by
    /// its user (`/proc/<pid>/environ`), copied into child processes and shown by container
    /// tooling, while a file can be a mounted secret readable by this process alone.
    #[arg(long, env = "NATS_NKEY_SEED_FILE")]
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (a user JWT and its NKey seed, as `nsc` writes them) to log in with, for
    /// a server run in operator/JWT mode; instead of a user.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// The CA certificate (PEM) the broker's certificate must be signed by. Set, TLS is
    /// required and only this CA is trusted (not the system's roots).
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) to present, for a server that verifies clients (with
    /// `NATS_TLS_KEY`).
    #[arg(long, env = "NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `NATS_TLS_CERT`.
    #[arg(long, env = "NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Require TLS even without `NATS_TLS_CA` (the broker's certificate is then checked against
    /// the system's roots). A `tls://` URL requires it too.
    #[arg(long, env = "NATS_TLS_REQUIRED", default_value_t = false, action = clap::ArgAction::Set)]
    pub nats_tls_required: bool,
    /// The subject prefix of this service's reply inboxes (unset: `_INBOX`). A login may
    /// subscribe only to its own (`_INBOX_command`, `_INBOX_projection` in
    /// `deploy/nats/auth.conf`): with one shared `_INBOX.>` any login could read the replies of
    /// another, such as the events projection-service pulls.
    #[arg(long, env = "NATS_INBOX_PREFIX")]
    pub nats_inbox_prefix: Option<String>,
}

/// Secrets are never printed: a `Settings` in a log or a panic shows which login is used, not
/// its password, token or seed.
impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsAuth")
            .field("nats_user", &self.nats_user)
            .field("nats_password", &redacted(&self.nats_password))
            .field("nats_token", &redacted(&self.nats_token))
            .field("nats_nkey_seed_file", &self.nats_nkey_seed_file)
            .field("nats_creds", &self.nats_creds)
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_tls_cert", &self.nats_tls_cert)
            .field("nats_tls_key", &self.nats_tls_key)
            .field("nats_tls_required", &self.nats_tls_required)
            .field("nats_inbox_prefix", &self.nats_inbox_prefix)
            .finish()
    }
}

/// The one way of logging in that the settings name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login<'a> {
    /// None set: no login (the development server).
    Anonymous,
    /// `NATS_USER` (the user named) with `NATS_PASSWORD`.
    User(&'a str),
    /// `NATS_TOKEN`.
    Token,
    /// `NATS_NKEY_SEED_FILE`, the file's path.
    NkeySeedFile(&'a Path),
    /// `NATS_CREDS`, the file's path.
    CredsFile(&'a Path),
}

impl std::fmt::Display for Login<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Anonymous => f.write_str("anonymous"),
            Login::User(user) => write!(f, "user {user}"),
            Login::Token => f.write_str("token"),
            Login::NkeySeedFile(path) => write!(f, "NKey seed file {}", path.display()),
            Login::CredsFile(path) => write!(f, "credentials file {}", path.display()),
        }
    }
}

/// An empty value (a compose file's `${NATS_TOKEN:-}`) is no value.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn set_path(value: &Option<PathBuf>) -> Option<&Path> {
    value.as_deref().filter(|p| !p.as_os_str().is_empty())
}

impl NatsAuth {
    /// The login these settings choose; two of them at once, or half of one, is an error that
    /// names the settings (a service refuses to start rather than guess).
    pub fn login(&self) -> anyhow::Result<Login<'_>> {
        let user = match (set(&self.nats_user), set(&self.nats_password)) {
            (Some(user), Some(_)) => Some(user),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!("NATS_USER is set without NATS_PASSWORD"),
            (None, Some(_)) => anyhow::bail!("NATS_PASSWORD is set without NATS_USER"),
        };
        let mut chosen: Vec<(&str, Login<'_>)> = Vec::new();
        if let Some(user) = user {
            chosen.push(("NATS_USER/NATS_PASSWORD", Login::User(user)));
        }
        if set(&self.nats_token).is_some() {
            chosen.push(("NATS_TOKEN", Login::Token));
        }
        if let Some(path) = set_path(&self.nats_nkey_seed_file) {
            chosen.push(("NATS_NKEY_SEED_FILE", Login::NkeySeedFile(path)));
        }
        if let Some(path) = set_path(&self.nats_creds) {
            chosen.push(("NATS_CREDS", Login::CredsFile(path)));
        }
        match chosen.as_slice() {
            [] => Ok(Login::Anonymous),
            [(_, login)] => Ok(*login),
            several => anyhow::bail!(
                "NATS login: set one of NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED_FILE \
                 or NATS_CREDS, not several (set: {})",
                several
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Whether the connection must be TLS (a CA or a client certificate given, or asked for).
    pub fn tls_required(&self) -> bool {
        self.nats_tls_required
            || set_path(&self.nats_tls_ca).is_some()
            || set_path(&self.nats_tls_cert).is_some()
    }

    /// `options` with this login and TLS. Files are read now, so a missing or unreadable one
    /// fails the start with its name rather than every reconnect in the background.
    pub async fn apply(&self, mut options: ConnectOptions) -> anyhow::Result<ConnectOptions> {
        options = match self.login()? {
            Login::Anonymous => options,
            Login::User(user) => options.user_and_password(
                user.to_owned(),
                self.nats_password.clone().unwrap_or_default(),
            ),
            Login::Token => options.token(self.nats_token.clone().unwrap_or_default()),
            Login::NkeySeedFile(path) => {
                let seed = std::fs::read_to_string(path)
                    .with_context(|| format!("NATS_NKEY_SEED_FILE {}", path.display()))?;
                let seed = seed.trim().to_owned();
                // Checked here: the client would only fail when the server asks for a signature.
                nkeys::KeyPair::from_seed(&seed).map_err(|e| {
                    anyhow::anyhow!(
                        "NATS_NKEY_SEED_FILE {}: not an NKey seed: {e}",
                        path.display()
                    )
                })?;
                options.nkey(seed)
            }
            Login::CredsFile(path) => options
                .credentials_file(path)
                .await
                .with_context(|| format!("NATS_CREDS {}", path.display()))?,
        };
        if let Some(ca) = set_path(&self.nats_tls_ca) {
            readable("NATS_TLS_CA", ca)?;
            options = options.add_root_certificates(ca.to_owned());
        }
        match (set_path(&self.nats_tls_cert), set_path(&self.nats_tls_key)) {
            (Some(cert), Some(key)) => {
                readable("NATS_TLS_CERT", cert)?;
                readable("NATS_TLS_KEY", key)?;
                options = options.add_client_certificate(cert.to_owned(), key.to_owned());
            }
            (None, None) => {}
            (Some(_), None) => anyhow::bail!("NATS_TLS_CERT is set without NATS_TLS_KEY"),
            (None, Some(_)) => anyhow::bail!("NATS_TLS_KEY is set without NATS_TLS_CERT"),
        }
        if let Some(prefix) = set(&self.nats_inbox_prefix) {
            if prefix
                .chars()
                .any(|c| c.is_whitespace() || c == '*' || c == '>')
                || prefix.starts_with('.')
                || prefix.ends_with('.')
            {
                anyhow::bail!("NATS_INBOX_PREFIX {prefix:?} is not a subject prefix");
            }
            options = options.custom_inbox_prefix(prefix);
        }
        Ok(options.require_tls(self.tls_required()))
    }

    /// What a start-up log line says about the connection: the login and TLS, no secret.
    pub fn describe(&self) -> String {
        let login = self
            .login()
            .map_or_else(|e| format!("invalid ({e})"), |l| l.to_string());
        let tls = match (set_path(&self.nats_tls_ca), self.tls_required()) {
            (Some(ca), _) => format!("TLS, broker verified against {}", ca.display()),
            (None, true) => "TLS, broker verified against the system's roots".to_owned(),
            (None, false) => "no TLS required".to_owned(),
        };
        format!("{login}, {tls}")
    }
}

fn readable(setting: &str, path: &Path) -> anyhow::Result<()> {
    std::fs::metadata(path)
        .and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other("not a file"))
            }
        })
        .with_context(|| format!("{setting} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(f: impl FnOnce(&mut NatsAuth)) -> NatsAuth {
        let mut auth = NatsAuth::default();
        f(&mut auth);
        auth
    }

    #[test]
    fn one_login_at_a_time_and_each_whole() {
        assert_eq!(NatsAuth::default().login().unwrap(), Login::Anonymous);
        let user = auth(|a| {
            a.nats_user = Some("command".into());
            a.nats_password = Some("secret".into());
        });
        assert_eq!(user.login().unwrap(), Login::User("command"));

        let both = auth(|a| {
            a.nats_user = Some("command".into());
            a.nats_password = Some("secret".into());
            a.nats_token = Some("t".into());
        });
        let error = both.login().unwrap_err().to_string();
        assert!(
            error.contains("NATS_USER/NATS_PASSWORD") && error.contains("NATS_TOKEN"),
            "{error}"
        );
        let error = auth(|a| {
            a.nats_creds = Some("a.creds".into());
            a.nats_nkey_seed_file = Some("seed".into());
        })
        .login()
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("NATS_CREDS") && error.contains("NATS_NKEY_SEED_FILE"),
            "{error}"
        );
        let error = auth(|a| a.nats_user = Some("command".into()))
            .login()
            .unwrap_err()
            .to_string();
        assert!(error.contains("without NATS_PASSWORD"), "{error}");
        // Empty values (a compose file's `${NATS_TOKEN:-}`) are unset.
        let empty = auth(|a| {
            a.nats_token = Some(String::new());
            a.nats_creds = Some(PathBuf::new());
        });
        assert_eq!(empty.login().unwrap(), Login::Anonymous);
    }

    #[test]
    fn neither_debug_nor_the_start_up_line_shows_a_secret() {
        let auth = auth(|a| {
            a.nats_user = Some("command".into());
            a.nats_password = Some("hunter2-password".into());
            a.nats_token = Some("hunter2-token".into());
            a.nats_tls_ca = Some("/etc/nats/ca.pem".into());
        });
        let settings = format!("{auth:?} {}", auth.describe());
        assert!(!settings.contains("hunter2"), "{settings}");
        assert!(settings.contains("command") && settings.contains("/etc/nats/ca.pem"));
    }

    #[test]
    fn a_ca_or_a_client_certificate_requires_tls() {
        assert!(!NatsAuth::default().tls_required());
        assert!(auth(|a| a.nats_tls_ca = Some("ca.pem".into())).tls_required());
        assert!(auth(|a| a.nats_tls_cert = Some("c.pem".into())).tls_required());
        assert!(auth(|a| a.nats_tls_required = true).tls_required());
    }

    #[tokio::test]
    async fn a_missing_file_fails_the_start_with_its_setting() {
        let error = auth(|a| a.nats_tls_ca = Some("/nonexistent/ca.pem".into()))
            .apply(ConnectOptions::new())
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("NATS_TLS_CA /nonexistent/ca.pem"));
        let error = auth(|a| a.nats_tls_cert = Some("/nonexistent/c.pem".into()))
            .apply(ConnectOptions::new())
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("without NATS_TLS_KEY"));
        let error = auth(|a| a.nats_inbox_prefix = Some("_INBOX.>".into()))
            .apply(ConnectOptions::new())
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("NATS_INBOX_PREFIX"));
    }
}
