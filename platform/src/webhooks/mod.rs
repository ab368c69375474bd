//! Outbound webhooks: what a subscription may say (its URL, its event patterns, its secret),
//! which events it hears, how a delivery is signed, and which addresses it may reach.
//!
//! Shared by the routes that manage subscriptions (command-service, projection-service) and the
//! dispatcher that delivers (projection-service), so that what was accepted is what is sent to.

use std::net::IpAddr;

mod views;

pub use views::{
    list_deliveries, list_subscriptions, read_subscription, DeliveryView, SubscriptionView,
    DELIVERY_COLUMNS, SUBSCRIPTION_COLUMNS,
};

use hmac::{Hmac, Mac};
use rand::distr::{Alphanumeric, SampleString};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::crypto::{CryptoError, Keyring};

/// The most patterns a subscription lists.
pub const MAX_PATTERNS: usize = 50;
/// The longest URL a subscription may have.
pub const MAX_URL_LEN: usize = 2_048;
/// Why a subscription's field is refused: the field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The body's field.
    pub field: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        field,
        message: message.into(),
    }
}

/// An event pattern: `*` (every event), `<aggregate>.*` (`contact.*`, `session.*`,
/// `project.*`), or an event type (`session.ended`).
pub fn check_patterns(patterns: &[String]) -> Result<(), Refusal> {
    if patterns.is_empty() || patterns.len() > MAX_PATTERNS {
        return Err(refuse(
            "events",
            format!("must list 1 to {MAX_PATTERNS} event patterns"),
        ));
    }
    for pattern in patterns {
        let known = pattern == "*"
            || ["contact.*", "session.*", "project.*"].contains(&pattern.as_str())
            || event_model::EVENT_TYPES.contains(&pattern.as_str());
        if !known {
            return Err(refuse(
                "events",
                "each must be *, contact.*, session.*, project.* or an event type such as session.ended",
            ));
        }
    }
    Ok(())
}

/// Whether an event type is one a subscription's patterns name.
pub fn matches(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == event_type
            || p.strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with('.') && event_type.starts_with(prefix))
    })
}

/// A secret given with a subscription: 16 to 256 visible ASCII characters, not beginning
/// `sealed:` (how a stored secret says it is sealed).
pub fn check_secret(secret: &str) -> Result<(), Refusal> {
    let visible = secret.bytes().all(|b| b.is_ascii_graphic());
    if !(16..=256).contains(&secret.len()) || !visible {
        return Err(refuse(
            "secret",
            "must be 16 to 256 visible ASCII characters",
        ));
    }
    if secret.starts_with("sealed:") {
        return Err(refuse("secret", "must not begin with sealed:"));
    }
    Ok(())
}

/// What a subscription's sealed secret is bound to: the subscription (a sealed secret copied to
/// another row does not open there).
fn secret_aad(subscription_id: Uuid) -> Vec<u8> {
    [
        b"ventros/webhook-secret/v1".as_slice(),
        subscription_id.as_bytes(),
    ]
    .concat()
}

/// A subscription's signing secret as it is stored: sealed with the KEK (in the clear only
/// without one, in development).
pub fn seal_secret(keyring: &Keyring, subscription_id: Uuid, secret: &str) -> String {
    keyring.seal_secret(&secret_aad(subscription_id), secret)
}

/// A subscription's stored signing secret, opened.
pub fn open_secret(
    keyring: &Keyring,
    subscription_id: Uuid,
    stored: &str,
) -> Result<Zeroizing<String>, CryptoError> {
    keyring.open_secret(&secret_aad(subscription_id), stored)
}

/// What a delivery (and the change feed) says of an event: `{id, type, occurred_at,
/// project_id, aggregate_type, aggregate_id, version, data}`, `data` being the payload with its
/// personal fields opened (`null` once the contact is forgotten).
pub fn event_body(
    envelope: &event_model::EventEnvelope,
    payload: &event_model::Payload,
) -> serde_json::Value {
    serde_json::json!({
        "id": envelope.event_id,
        "type": envelope.event_type,
        "occurred_at": envelope.occurred_at,
        "project_id": envelope.project_id,
        "aggregate_type": envelope.aggregate_type,
        "aggregate_id": envelope.aggregate_id,
        "version": envelope.sequence_number,
        "data": payload.joined(),
    })
}

/// A new signing secret (`whsec_` and 40 alphanumerics, about 238 bits).
pub fn generate_secret() -> String {
    format!("whsec_{}", Alphanumeric.sample_string(&mut rand::rng(), 40))
}

/// The `Ventros-Signature` header of a body sent at `unix_seconds`:
/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// A subscription's URL, parsed: http or https, a host, no credentials, at most
/// [`MAX_URL_LEN`] long. Where it points is checked by [`check_addresses`].
pub fn check_url(raw: &str) -> Result<url::Url, Refusal> {
    if raw.len() > MAX_URL_LEN {
        return Err(refuse(
            "url",
            format!("must be at most {MAX_URL_LEN} characters"),
        ));
    }
    let url = url::Url::parse(raw).map_err(|_| refuse("url", "must be an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse("url", "must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse("url", "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("url", "must not carry credentials"));
    }
    Ok(url)
}

/// Whether an address is one a webhook may not reach unless private targets are allowed:
/// loopback, private (RFC 1918, unique-local), link-local (the cloud metadata services at
/// 169.254.169.254 and fd00:ec2::254 included), unspecified, broadcast, documentation,
/// carrier-grade NAT, multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The addresses `url`'s host resolves to, refused (422 on `url`) when one of them is private
/// and `allow_private` is off, or when it resolves to nothing.
pub async fn check_addresses(url: &url::Url, allow_private: bool) -> Result<Vec<IpAddr>, Refusal> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<IpAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| refuse("url", "its host does not resolve"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addresses.is_empty() {
        return Err(refuse("url", "its host does not resolve"));
    }
    if !allow_private && addresses.iter().any(|ip| is_private(*ip)) {
        return Err(refuse(
            "url",
            "points at a loopback, private, link-local or metadata address",
        ));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_aggregates_events_or_everything() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_patterns(&p(&["contact.*", "session.ended"])).is_ok());
        assert!(check_patterns(&p(&["*"])).is_ok());
        assert!(check_patterns(&p(&[])).is_err());
        assert!(check_patterns(&p(&["contact.creatd"])).is_err());
        assert!(check_patterns(&p(&["con*"])).is_err());
        assert!(matches(&p(&["contact.*"]), "contact.created"));
        assert!(!matches(&p(&["contact.*"]), "session.started"));
        assert!(matches(&p(&["session.ended"]), "session.ended"));
        assert!(!matches(&p(&["session.ended"]), "session.ended_x"));
        assert!(matches(&p(&["*"]), "project.member_removed"));
    }

    #[test]
    fn a_signature_is_the_hmac_of_the_time_and_the_body() {
        // HMAC-SHA256("key", "1.{}"), computed independently.
        assert_eq!(
            signature("key", 1, b"{}"),
            format!("t=1,v1={}", {
                let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
                mac.update(b"1.{}");
                hex::encode(mac.finalize().into_bytes())
            })
        );
        assert_ne!(signature("key", 1, b"{}"), signature("key", 2, b"{}"));
        assert_ne!(signature("key", 1, b"{}"), signature("other", 1, b"{}"));
    }

    #[test]
    fn private_and_metadata_addresses_are_told_apart_from_public_ones() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_url_is_http_with_a_host_and_no_credentials() {
        assert!(check_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(check_url("ftp://example.com").is_err());
        assert!(check_url("https://user:pw@example.com").is_err());
        assert!(check_url("not a url").is_err());
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(3000))).is_err());
    }
}
