//! The operator console as a person sees it: headless Chromium (Debian's `chromium`, driven by
//! its `chromedriver` over WebDriver) opens `/console`, signs in, reads the pipeline, retries a
//! parked event, moves a contact's version slider; screenshots of each page at 1280×800 and
//! 390×844 go to `target/console-screenshots/`.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{Options, TestSystem};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::cli::replay_tool;

/// A headless Chromium under its own chromedriver, gone when dropped.
struct Browser {
    client: Client,
    driver: Child,
}

impl Browser {
    async fn start() -> Self {
        let chromedriver = which("chromedriver");
        let chromium = which("chromium");
        let port = e2e::process::free_port();
        // A process group of its own: chromedriver's browsers go with it, even after a panic.
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                // Root in a container: no sandbox; /dev/shm may be small.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800",
                         "--force-device-scale-factor=1"],
            }
        });
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities.as_object().unwrap().clone());
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let client = loop {
            match builder.connect(&url).await {
                Ok(client) => break client,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "chromedriver did not start a session: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Self { client, driver }
    }

    async fn size(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// Waits for `css` and returns its text.
    async fn text(&self, css: &str) -> String {
        self.wait(css).await.text().await.unwrap()
    }

    async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} never showed: {e}"))
    }

    /// Waits for `css` and clicks it.
    async fn click(&self, css: &str) {
        self.wait(css).await.click().await.unwrap();
    }

    /// Waits until `css` shows `wanted` in its text.
    async fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = el.text().await {
                    if text.contains(wanted) {
                        return text;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css} never said {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shows(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => el.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    async fn screenshot(&self, name: &str) {
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// `<name>-1280x800.png` and `<name>-390x844.png` (a phone), back at 1280×800 after.
    async fn screenshots(&self, name: &str) {
        self.screenshot(&format!("{name}-1280x800")).await;
        self.size(390, 844).await;
        self.screenshot(&format!("{name}-390x844")).await;
        self.size(1280, 800).await;
    }

    async fn sign_in(&self, base: &str, project: Uuid, key: &str) {
        self.client.goto(&format!("{base}/console")).await.unwrap();
        let project_field = self.wait("#project").await;
        project_field.clear().await.unwrap();
        project_field.send_keys(&project.to_string()).await.unwrap();
        self.wait("#key").await.send_keys(key).await.unwrap();
        self.click("#login-form button[type=submit]").await;
    }

    async fn sign_out(&self) {
        self.click("#sign-out").await;
        self.wait_for_text("#login-error", "Signed out").await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

fn which(tool: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
        let path = PathBuf::from(dir).join(tool);
        if path.exists() {
            return path.to_string_lossy().into_owned();
        }
    }
    panic!("{tool} is not installed: run scripts/ensure-tools.sh (Debian's chromium and chromium-driver)")
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
}

#[tokio::test]
async fn the_console_shows_the_pipeline_retries_a_parked_event_and_travels_a_contacts_versions() {
    let system = TestSystem::start_with(Options {
        partitions: 2,
        ..Options::default()
    })
    .await;
    let owner = system.tenant.clone();
    // A contact with a past: created as "Ada", renamed, tagged, in a conversation.
    let contact = system.create_contact(json!({"name": "Ada"})).await;
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/contacts/{contact}"),
            json!({"name": "Ada Lovelace", "email": "ada@example.com"}),
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/tags"),
            json!({"tag": "mathematician"}),
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/messages"),
            json!({"channel_type_id": 1, "from_contact": true, "text": "Hello, engine"}),
        ),
    ] {
        let reply = system.command(method, &path, Some(body)).await;
        assert!(reply.status.is_success(), "{path}: {}", reply.body);
    }
    system.wait_until_projected(Duration::from_secs(30)).await;
    system.wait_until_consumed(Duration::from_secs(30)).await;
    let parked = e2e::park_event(&system.db.pool, contact, 2).await;
    let viewer: String = system
        .command(
            Method::POST,
            "/api-keys",
            Some(json!({"name": "console viewer", "role": "viewer"})),
        )
        .await
        .body["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let browser = Browser::start().await;
    let base = system.query_url.clone();

    // Pipeline: the numbers replay-tool status gives.
    browser
        .sign_in(&base, owner.project_id, &owner.api_key)
        .await;
    browser
        .wait("#consumers tbody tr[data-partition='1']")
        .await;
    let (code, status, out) = replay_tool(&system, &["status", "--json"]);
    assert_eq!(code, 0, "{out}");
    for consumer in status["consumers"].as_array().unwrap() {
        let partition = consumer["partition"].as_u64().unwrap();
        for field in ["acked_through", "pending"] {
            let shown = browser
                .wait_for_text(
                    &format!(
                        "#consumers tr[data-partition='{partition}'] td[data-field='{field}']"
                    ),
                    &consumer[field].to_string(),
                )
                .await;
            assert_eq!(shown, consumer[field].to_string(), "{field} of {partition}");
        }
    }
    let acked: u64 = status["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["acked_through"].as_u64().unwrap())
        .sum();
    assert!(acked > 0, "the stream has traffic to show: {status}");
    assert!(browser.text("#relay").await.contains("command-service"));
    browser.screenshots("pipeline").await;

    // Parked events: retried, and resolved.
    browser.click("nav a[data-page='parked']").await;
    let item = format!("#parked li[data-id='{parked}']");
    browser.wait(&item).await;
    assert!(browser
        .text(&item)
        .await
        .contains("a projection failed: the test parked it"));
    browser.screenshots("parked").await;
    browser.click(&format!("{item} button.retry")).await;
    browser
        .wait_for_text(&format!("{item} .outcome"), "Resolved")
        .await;
    let now: String = sqlx::query_scalar("select status from dead_letter_events where id = $1")
        .bind(parked)
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(now, "resolved");

    // A contact: found, its timeline, and version 1 through the slider (keyboard: Home).
    browser.click("nav a[data-page='contacts']").await;
    browser
        .click(&format!("#results a[href='#/contacts/{contact}']"))
        .await;
    browser
        .wait_for_text("#timeline", "contact.tag_added")
        .await;
    assert!(browser.text("#timeline").await.contains("correlation"));
    browser
        .wait_for_text("#state tr[data-field='name']", "Ada Lovelace")
        .await;
    browser.screenshot("contact-1280x800").await;
    let slider = browser.wait("#version").await;
    slider.send_keys(&Key::Home.to_string()).await.unwrap();
    browser
        .wait_for_text("#version-shown", "version 1 of")
        .await;
    let name = browser.text("#state tr[data-field='name'] td").await;
    assert_eq!(name, "Ada", "the first name at version 1");
    assert!(
        !browser
            .text("#state tr[data-field='email'] td")
            .await
            .contains("ada@"),
        "version 1 had no e-mail yet"
    );
    // Version 2 marks what changed.
    slider.send_keys(&Key::Right.to_string()).await.unwrap();
    browser
        .wait_for_text("#version-shown", "version 2 of")
        .await;
    browser
        .wait_for_text("#state tr.changed[data-field='name']", "Ada Lovelace")
        .await;
    browser.screenshots("contact-version-2").await;
    browser.sign_out().await;

    // A viewer sees the pipeline, and parked events without a Retry button.
    let another = e2e::park_event(&system.db.pool, contact, 3).await;
    browser.sign_in(&base, owner.project_id, &viewer).await;
    browser.wait("#consumers tbody tr").await;
    assert!(browser.text("#who").await.contains("viewer"));
    browser.click("nav a[data-page='parked']").await;
    browser
        .wait(&format!("#parked li[data-id='{another}']"))
        .await;
    assert!(
        !browser.shows("button.retry").await,
        "a viewer is shown no Retry button"
    );
    browser.sign_out().await;

    // A wrong key: the sign-in again, saying why.
    browser
        .sign_in(&base, owner.project_id, "vk_not-a-real-key")
        .await;
    let said = browser.wait_for_text("#login-error", "refused").await;
    assert!(said.contains("401"), "{said}");
    assert!(browser.shows("#login-form").await);
    assert!(!browser.shows("#nav").await);
    browser.screenshots("login-refused").await;

    // The parked list and the retry are what the API says, too.
    let listed: Value = system
        .send(
            Method::GET,
            &format!("{base}/v1/projects/{}/ops/dead-letters", owner.project_id),
            Some(&owner.api_key),
            None,
            &[],
        )
        .await
        .body;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [another.to_string()],
        "the resolved one is no longer listed"
    );
    browser.client.clone().close().await.unwrap();
}
