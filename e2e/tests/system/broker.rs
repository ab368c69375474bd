//! The broker as `deploy/` runs it: TLS with the deployment's CA, the logins and permissions of
//! `deploy/nats/auth.conf` (the shipped file, see `e2e::nats_security`), no anonymous client.
//! The system works through it with each service logged in as its own user, and each login
//! can do only its service's part: the projection login cannot publish an event, the command
//! login cannot read the stream's messages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use e2e::{BrokerSecurity, Login, NatsServer, Options, TestSystem};
use futures::StreamExt;
use platform::nats::NatsAuth;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn commands_in_and_projected_rows_out_over_a_broker_with_logins_and_tls() {
    let security = BrokerSecurity::new();
    let nats = NatsServer::start_secured(security.clone()).await;
    let system = TestSystem::start_with(Options {
        nats_url: Some(nats.url()),
        nats_security: Some(security),
        ..Options::default()
    })
    .await;

    let contact = system
        .create_contact(json!({"name": "Ada Lovelace", "tags": ["vip"]}))
        .await;
    let tagged = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "engineer"})),
        )
        .await;
    assert_eq!(tagged.status, StatusCode::OK, "{}", tagged.body);
    let read = system
        .query(&format!("/contacts/{contact}?min_version=2"))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["name"], "Ada Lovelace");
    assert_eq!(read.body["tags"], json!(["engineer", "vip"]));
    system.wait_until_projected(Duration::from_secs(30)).await;
    assert_eq!(
        system.carried().await.applied,
        2 * projection_service::projections::Projection::ALL.len() as i64,
        "both events applied by every projection"
    );
    system.stop().await;
}

/// A connection made once, without retrying, as a client of the broker would.
async fn connect_once(url: &str, auth: &NatsAuth) -> Result<async_nats::Client, String> {
    let options = auth
        .apply(async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(3)))
        .await
        .map_err(|e| e.to_string())?;
    options.connect(url).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_broker_refuses_anonymous_clients_wrong_passwords_and_clients_without_its_ca() {
    let security = BrokerSecurity::new();
    let nats = NatsServer::start_secured(security.clone()).await;
    let url = nats.url();

    // Each service's own login, over TLS verified against the CA: accepted.
    for login in [Login::Command, Login::Projection, Login::Admin] {
        let client = connect_once(&url, &security.auth(login)).await;
        assert!(client.is_ok(), "{login:?}: {client:?}");
    }
    // No login at all (TLS fine): refused.
    let anonymous = NatsAuth {
        nats_tls_ca: Some(security.ca()),
        ..NatsAuth::default()
    };
    let refused = connect_once(&url, &anonymous).await.err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains("authorization violation")),
        "an anonymous client: {refused:?}"
    );
    // A known user with a wrong password: refused.
    let wrong = NatsAuth {
        nats_password: Some("not-the-password".into()),
        ..security.auth(Login::Projection)
    };
    let refused = connect_once(&url, &wrong).await.err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains("authorization violation")),
        "a wrong password: {refused:?}"
    );
    // The right login, but trusting only the system's roots: the broker's certificate is not
    // one they vouch for, so the password is never sent.
    let no_ca = NatsAuth {
        nats_tls_ca: None,
        nats_tls_required: true,
        ..security.auth(Login::Command)
    };
    let refused = connect_once(&url, &no_ca).await.err();
    assert!(
        refused.as_deref().is_some_and(|e| {
            let e = e.to_lowercase();
            e.contains("tls") || e.contains("certificate")
        }),
        "a client without the CA: {refused:?}"
    );
}

/// A client that records what the server refused it (`-ERR 'Permissions Violation ...'`).
struct Client {
    client: async_nats::Client,
    refusals: Arc<Mutex<Vec<String>>>,
}

impl Client {
    async fn connect(url: &str, auth: &NatsAuth) -> Self {
        let refusals: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = refusals.clone();
        let options = auth
            .apply(
                async_nats::ConnectOptions::new().event_callback(move |event| {
                    let seen = seen.clone();
                    async move {
                        if let async_nats::Event::ServerError(e) = event {
                            seen.lock().unwrap().push(e.to_string());
                        }
                    }
                }),
            )
            .await
            .unwrap();
        Self {
            client: options.connect(url).await.expect("connect"),
            refusals,
        }
    }

    /// Asks on `subject` and expects the server to refuse it: no answer, and a permissions
    /// violation that names the subject.
    async fn refused(&self, subject: &str, payload: &'static str) -> Result<(), String> {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            self.client.request(subject.to_owned(), payload.into()),
        )
        .await;
        if let Ok(Ok(message)) = answer {
            return Err(format!(
                "{subject} was answered: {}",
                String::from_utf8_lossy(&message.payload)
            ));
        }
        self.violation_named(subject).await
    }

    async fn violation_named(&self, subject: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let refusals = self.refusals.lock().unwrap().clone();
            if refusals
                .iter()
                .any(|r| r.to_lowercase().contains("permissions violation") && r.contains(subject))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "no permissions violation for {subject}; refusals: {refusals:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn jetstream(&self) -> async_nats::jetstream::Context {
        let mut js = async_nats::jetstream::new(self.client.clone());
        js.set_timeout(Duration::from_secs(2));
        js
    }
}

#[tokio::test]
async fn the_projection_login_cannot_publish_an_event_and_the_command_login_cannot_consume() {
    let security = BrokerSecurity::new();
    let nats = NatsServer::start_secured(security.clone()).await;
    let stream = e2e::TestStream::secured(nats.url(), 1, security.clone());
    let settings = platform::nats::StreamSettings {
        name: stream.name.clone(),
        subject_prefix: stream.prefix.clone(),
        partitions: 1,
        replicas: 1,
        max_age: Duration::from_secs(3600),
    };
    let command = Client::connect(&nats.url(), &security.auth(Login::Command)).await;
    let projection = Client::connect(&nats.url(), &security.auth(Login::Projection)).await;
    let (name, prefix) = (stream.name.as_str(), stream.prefix.as_str());

    // command-service creates the stream as it does at start, and publishes an event.
    assert_eq!(
        platform::nats::ensure_stream(&command.jetstream(), &settings)
            .await
            .unwrap(),
        platform::nats::StreamSetUp::Created
    );
    let subject = format!("{prefix}.0.contact.contact.created");
    command
        .jetstream()
        .publish(subject.clone(), "the relay's event".into())
        .await
        .unwrap()
        .await
        .expect("the command login publishes under the prefix");

    // The projection login cannot: a forged event is refused and the stream does not hold it.
    let forged = projection
        .jetstream()
        .publish(subject.clone(), "a forged event".into())
        .await
        .unwrap()
        .await;
    assert!(forged.is_err(), "a forged publish was acknowledged");
    projection.violation_named(&subject).await.unwrap();
    let messages = |js: async_nats::jetstream::Context| async move {
        js.get_stream(name)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap()
            .state
            .messages
    };
    assert_eq!(
        messages(projection.jetstream()).await,
        1,
        "only the relay's event"
    );

    // The projection login consumes: creates its durable consumer, pulls and acks.
    let consumer = projection
        .jetstream()
        .get_stream(name)
        .await
        .unwrap()
        .get_or_create_consumer(
            "projections-p0",
            pull::Config {
                durable_name: Some("projections-p0".into()),
                filter_subject: settings.partition_filter(0),
                ..Default::default()
            },
        )
        .await
        .expect("the projection login creates its consumer");
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let message = batch.next().await.expect("a message").unwrap();
    assert_eq!(&message.payload[..], b"the relay's event");
    message
        .double_ack()
        .await
        .expect("the projection login acks");

    // The command login cannot read the stream's messages: neither create a consumer nor pull
    // from the projections' one, nor ask for a stored message directly.
    let mut refusals: Vec<(&Client, String)> = [
        format!("$JS.API.CONSUMER.CREATE.{name}.spy.{prefix}.>"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{name}.spy"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{name}.projections-p0"),
        format!("$JS.API.STREAM.MSG.GET.{name}"),
    ]
    .into_iter()
    .map(|subject| (&command, subject))
    .collect();
    // Neither login can change or empty the stream, remove the projections' consumer, or
    // create another stream of the account.
    for client in [&command, &projection] {
        for subject in [
            format!("$JS.API.STREAM.UPDATE.{name}"),
            format!("$JS.API.STREAM.PURGE.{name}"),
            format!("$JS.API.STREAM.DELETE.{name}"),
            format!("$JS.API.STREAM.MSG.DELETE.{name}"),
            format!("$JS.API.CONSUMER.DELETE.{name}.projections-p0"),
            "$JS.API.STREAM.CREATE.OTHER".to_owned(),
        ] {
            refusals.push((client, subject));
        }
    }
    // Nor listen to another login's replies (the events the projections pull among them).
    for (client, inboxes) in [
        (&command, "_INBOX_projection.>"),
        (&command, "_INBOX.>"),
        (&projection, "_INBOX_command.>"),
    ] {
        let _denied = client.client.subscribe(inboxes).await.unwrap();
        client.violation_named(inboxes).await.unwrap();
    }
    // Each refusal waits out its request's timeout: asked all at once.
    let outcomes = futures::future::join_all(
        refusals
            .iter()
            .map(|(client, subject)| client.refused(subject, "{}")),
    )
    .await;
    let answered: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
    assert!(answered.is_empty(), "not refused: {answered:#?}");
    assert_eq!(messages(projection.jetstream()).await, 1);
}

/// A nats-server with a config of the test's own (for the logins `deploy/` does not use);
/// killed when dropped.
struct ConfiguredServer {
    url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl ConfiguredServer {
    async fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, config).unwrap();
        let port = e2e::process::free_port();
        let child = std::process::Command::new(e2e::nats::nats_server_binary())
            .arg("-c")
            .arg(&path)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            url: format!("nats://127.0.0.1:{port}"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for ConfiguredServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The other logins the settings offer, each against a server that expects it: a token over
/// TLS that also verifies the client's certificate, and an NKey whose seed is in a file.
#[tokio::test]
async fn a_token_with_a_client_certificate_and_an_nkey_seed_file_log_in_as_the_settings_say() {
    let security = BrokerSecurity::new();
    let pem = |name: &str| security.path(name);
    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
        pem("server.pem"),
        pem("server-key.pem"),
        pem("ca.pem"),
    );
    let token_server = ConfiguredServer::start(&format!(
        "{tls}authorization {{ token: \"s3cret-token\" }}\n"
    ))
    .await;
    let with_certificate = NatsAuth {
        nats_token: Some("s3cret-token".into()),
        nats_tls_ca: Some(pem("ca.pem")),
        nats_tls_cert: Some(pem("client.pem")),
        nats_tls_key: Some(pem("client-key.pem")),
        ..NatsAuth::default()
    };
    let accepted = connect_once(&token_server.url, &with_certificate).await;
    assert!(
        accepted.is_ok(),
        "token and client certificate: {accepted:?}"
    );
    let without_certificate = NatsAuth {
        nats_tls_cert: None,
        nats_tls_key: None,
        ..with_certificate.clone()
    };
    let refused = connect_once(&token_server.url, &without_certificate).await;
    assert!(refused.is_err(), "no client certificate, yet connected");
    let wrong_token = NatsAuth {
        nats_token: Some("guessed".into()),
        ..with_certificate.clone()
    };
    let refused = connect_once(&token_server.url, &wrong_token).await.err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains("authorization violation")),
        "a wrong token: {refused:?}"
    );

    let user = nkeys::KeyPair::new_user();
    let nkey_server = ConfiguredServer::start(&format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\nauthorization {{ users: [ {{ nkey: {:?} }} ] }}\n",
        pem("server.pem"),
        pem("server-key.pem"),
        user.public_key(),
    ))
    .await;
    let seeds = tempfile::tempdir().unwrap();
    let seed_file = |name: &str, key: &nkeys::KeyPair| {
        let path = seeds.path().join(name);
        std::fs::write(&path, format!("{}\n", key.seed().unwrap())).unwrap();
        NatsAuth {
            nats_nkey_seed_file: Some(path),
            nats_tls_ca: Some(pem("ca.pem")),
            ..NatsAuth::default()
        }
    };
    let accepted = connect_once(&nkey_server.url, &seed_file("user.nk", &user)).await;
    assert!(accepted.is_ok(), "the user's seed: {accepted:?}");
    let refused = connect_once(
        &nkey_server.url,
        &seed_file("other.nk", &nkeys::KeyPair::new_user()),
    )
    .await
    .err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.to_lowercase().contains("authorization violation")),
        "another user's seed: {refused:?}"
    );
}
