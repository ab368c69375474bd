//! One attempt over HTTP: the client (no redirects, the attempt's timeout, a resolver that
//! refuses private addresses), the signed POST, and what came of it.

use std::net::SocketAddr;
use std::sync::Arc;

use platform::webhooks::is_private;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use uuid::Uuid;

use super::Settings;

/// The most of an answer's body that is read (and the most of it kept as the error).
const MAX_ANSWER: usize = 64 * 1024;
const KEPT_ERROR: usize = 512;

/// The HTTP client: no redirects, the attempt's timeout, and a resolver that will not hand out a
/// private address unless allowed (a name checked when subscribed may point elsewhere later).
pub(super) fn client(settings: &Settings) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(concat!("Ventros-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: settings.allow_private,
        }))
        .build()
}

struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if !allow_private && addresses.iter().any(|a| is_private(a.ip())) {
                return Err("the host resolves to a private address".into());
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// What an attempt came to.
pub(super) enum Outcome {
    Delivered(u16),
    /// Worth trying again: the status (none: no answer) and why.
    Failed(Option<u16>, String),
}

/// POSTs a body, signed; reads at most [`MAX_ANSWER`] of the answer.
pub(super) async fn post(
    client: &reqwest::Client,
    settings: &Settings,
    url: &str,
    secret: &str,
    event_id: Uuid,
    body: &[u8],
) -> Outcome {
    // An address in the URL itself is not resolved, so the resolver cannot refuse it.
    if let Ok(parsed) = url::Url::parse(url) {
        let literal = parsed
            .host_str()
            .and_then(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok());
        if !settings.allow_private && literal.is_some_and(is_private) {
            return Outcome::Failed(None, "the URL names a private address".into());
        }
    }
    let now = chrono::Utc::now().timestamp();
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("ventros-event-id", event_id.to_string())
        .header(
            "ventros-signature",
            platform::webhooks::signature(secret, now, body),
        )
        .body(body.to_vec())
        .send()
        .await;
    let mut answer = match sent {
        Ok(answer) => answer,
        Err(e) => return Outcome::Failed(None, kept(&error_chain(&e))),
    };
    let status = answer.status().as_u16();
    let mut read = Vec::new();
    while let Ok(Some(chunk)) = answer.chunk().await {
        let room = MAX_ANSWER - read.len();
        read.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if read.len() >= MAX_ANSWER {
            break;
        }
    }
    if (200..300).contains(&status) {
        Outcome::Delivered(status)
    } else {
        let text = String::from_utf8_lossy(&read);
        Outcome::Failed(Some(status), kept(&format!("answered {status}: {text}")))
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn kept(text: &str) -> String {
    text.chars().take(KEPT_ERROR).collect()
}
