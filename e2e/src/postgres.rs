//! A private PostgreSQL server (its own data directory and port) that a test may stop and start
//! again, for outages the shared server must not suffer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    /// Server options beyond the port and socket (TLS, its `pg_hba.conf`).
    extra_options: String,
}

fn bin(name: &str) -> PathBuf {
    let versions =
        std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL under /usr/lib/postgresql");
    let mut found: Vec<PathBuf> = versions
        .filter_map(|v| v.ok().map(|v| v.path().join("bin").join(name)))
        .collect();
    found.sort();
    found.pop().expect("a PostgreSQL version")
}

/// Runs a PostgreSQL tool as the `postgres` user (the server refuses to run as root).
fn as_postgres(tool: &str, args: &[&str]) {
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin(tool))
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(status.success(), "{tool} {args:?} failed");
}

/// Runs `openssl` with these arguments in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A certificate authority made for one test: its certificate and key in `dir` as
/// `<name>.crt`/`<name>.key`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    dir.join(format!("{name}.crt"))
}

/// A server certificate for `localhost` (and nothing else) signed by the CA `ca`:
/// `server.crt`/`server.key` in `dir`.
fn make_server_certificate(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

impl PrivatePostgres {
    /// A server that accepts TLS connections only (`hostssl`; plain TCP is rejected), with a
    /// certificate for `localhost` signed by a CA made here: [`PrivatePostgres::ca_file`].
    pub async fn start_with_tls() -> Self {
        let mut server = Self::init();
        let tls = server.dir.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        make_ca(&tls, "ca");
        make_server_certificate(&tls, "ca");
        let hba = tls.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        )
        .unwrap();
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&tls)
            .status()
            .expect("chown");
        std::fs::set_permissions(
            tls.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        server.extra_options = format!(
            " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key \
              -c hba_file={1}",
            tls.display(),
            hba.display()
        );
        server.resume().await;
        server
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.crt")
    }

    pub async fn start() -> Self {
        let server = Self::init();
        server.resume().await;
        server
    }

    /// A new data directory on a free port, not yet started.
    fn init() -> Self {
        let port = crate::process::free_port();
        let dir = tempfile::Builder::new()
            .prefix("ventros-pg-")
            .tempdir()
            .expect("temp dir");
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        let data = dir.path().join("data");
        as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        Self {
            port,
            dir,
            extra_options: String::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off{}",
            self.port,
            self.dir.path().display(),
            self.extra_options
        );
        let log = self.dir.path().join("server.log");
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the private PostgreSQL did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server at once (`-m immediate`: like a crash, no clean shutdown).
    pub fn stop(&self) {
        as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .status();
    }
}
