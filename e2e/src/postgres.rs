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
        let server = Self::without_data();
        as_postgres(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server
    }

    /// A directory (the `postgres` user's) and a free port, with no data directory yet.
    fn without_data() -> Self {
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

    /// One statement's answer, asked as `postgres` of the `postgres` database.
    async fn ask<T>(&self, sql: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", self.url()))
            .await
            .unwrap_or_else(|e| panic!("connecting to port {}: {e}", self.port));
        let answer = sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
        answer
    }
}

/// A primary and its streaming standby, each a [`PrivatePostgres`] on loopback: the standby is
/// made with `pg_basebackup -R` and is synchronous (`synchronous_standby_names = '*'` on the
/// primary, `synchronous_commit = on`), so a commit the primary acknowledged is flushed on the
/// standby too. Either may be stopped like a crash and the standby promoted.
pub struct ReplicatedPostgres {
    pub primary: PrivatePostgres,
    pub standby: PrivatePostgres,
}

impl ReplicatedPostgres {
    /// The pair, started and in sync. `apply_delay` holds the standby's replay back by that
    /// much (`recovery_min_apply_delay`): a replica that visibly lags, as one under load does.
    pub async fn start(apply_delay: Option<Duration>) -> Self {
        let mut primary = PrivatePostgres::init();
        // Enough WAL kept that a standby a little behind never needs what was recycled.
        primary.extra_options = " -c wal_keep_size=256MB".to_owned();
        primary.resume().await;
        let mut standby = PrivatePostgres::without_data();
        as_postgres(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &standby.data(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        if let Some(delay) = apply_delay {
            standby.extra_options = format!(" -c recovery_min_apply_delay={}ms", delay.as_millis());
        }
        standby.resume().await;
        let pair = Self { primary, standby };
        pair.wait_for_standby("streaming", "state").await;
        // Synchronous only now that the standby streams: before, every commit would wait for it.
        // Set on the primary alone, so the standby, once promoted, waits for no one.
        let mut conn = pair.primary_connection().await;
        sqlx::query("alter system set synchronous_standby_names = '*'")
            .execute(&mut conn)
            .await
            .expect("alter system");
        sqlx::query("select pg_reload_conf()")
            .execute(&mut conn)
            .await
            .expect("reload");
        pair.wait_for_standby("sync", "sync_state").await;
        pair
    }

    async fn primary_connection(&self) -> sqlx::PgConnection {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&format!("{}/postgres", self.primary.url()))
            .await
            .expect("the primary")
    }

    /// Waits until the primary's `pg_stat_replication` shows the standby with `column = value`.
    async fn wait_for_standby(&self, value: &str, column: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let sql = format!("select count(*) from pg_stat_replication where {column} = '{value}'");
        while self.primary.ask::<i64>(&sql).await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the standby never reached {column} = {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A URL of both servers, primary first, for `database` logged in as `login`, with
    /// `target_session_attrs` as given (libpq's multi-host form).
    pub fn url(&self, login: &str, database: &str, attrs: &str) -> String {
        format!(
            "postgres://{login}@127.0.0.1:{},127.0.0.1:{}/{database}?target_session_attrs={attrs}",
            self.primary.port, self.standby.port
        )
    }

    /// Promotes the standby to primary and waits until it takes writes.
    pub async fn promote_standby(&self) {
        as_postgres("pg_ctl", &["-D", &self.standby.data(), "-w", "promote"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.standby.ask::<bool>("select pg_is_in_recovery()").await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the standby was not promoted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the standby has replayed everything the primary has written so far (its replay
    /// position at or past the primary's current WAL position).
    pub async fn standby_caught_up(&self) -> bool {
        let written: String = self.primary.ask("select pg_current_wal_lsn()::text").await;
        self.standby
            .ask::<bool>(&format!(
                "select pg_last_wal_replay_lsn() >= '{written}'::pg_lsn"
            ))
            .await
    }

    /// Waits until the standby has replayed what the primary has written so far: the set-up of
    /// a test (its database, the migrations, a tenant) is on the replica before the test asks it
    /// anything.
    pub async fn wait_for_replay(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.standby_caught_up().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the standby never replayed the primary's writes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
