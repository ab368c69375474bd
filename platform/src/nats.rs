//! The NATS JetStream side: connection (login and TLS in `nats_auth`), the event stream
//! (created by command-service when missing), subjects and partitions.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use uuid::Uuid;

pub use crate::nats_auth::NatsAuth;

/// The JetStream stream the relay publishes the events to and the projections consume, as
/// [`crate::Settings::stream`] makes it.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The stream's name (`NATS_STREAM`).
    pub name: String,
    /// The first tokens of every subject (`NATS_SUBJECT_PREFIX`); the stream takes `<prefix>.>`.
    pub subject_prefix: String,
    /// How many partitions the contacts are spread over (`EVENT_PARTITIONS`), one durable consumer
    /// each. Every process must agree on it: it decides which partition a contact's events go to.
    pub partitions: u32,
    /// How many copies of the stream a NATS cluster keeps (`NATS_STREAM_REPLICAS`); set when the
    /// stream is created, never changed by a service (see [`ensure_stream`]).
    pub replicas: usize,
    /// How long the stream keeps a message, and so how long a consumer may be redelivered one.
    pub max_age: Duration,
}

impl StreamSettings {
    /// `<prefix>.<partition>.<aggregate_type>.<event_type>`; event types contain a dot
    /// (`contact.created`), so the subject ends `.contact.contact.created`.
    pub fn subject(&self, contact_id: Uuid, aggregate_type: &str, event_type: &str) -> String {
        let partition = partition_for(contact_id, self.partitions);
        format!(
            "{}.{partition}.{aggregate_type}.{event_type}",
            self.subject_prefix
        )
    }

    /// The filter subject of `partition`'s consumer: every subject of that partition.
    pub fn partition_filter(&self, partition: u32) -> String {
        format!("{}.{partition}.>", self.subject_prefix)
    }
}

/// The partition of a contact (and of its sessions). FNV-1a over the id's bytes: stable across
/// processes, versions and platforms, unlike `std`'s hasher.
pub fn partition_for(contact_id: Uuid, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in contact_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// Connects to `url`, which may name several servers of a cluster separated by commas
/// (`nats://a:4222,nats://b:4222`): the client starts with whichever answers and fails over to
/// the others (and to the servers the cluster announces) when its server goes away. `auth` is
/// the login and TLS (`NATS_USER`, `NATS_CREDS`, `NATS_TLS_CA`...); settings that conflict, or
/// a file that cannot be read, fail here rather than on every reconnect.
pub async fn connect(url: &str, auth: &NatsAuth) -> anyhow::Result<async_nats::Client> {
    let servers = server_list(url);
    tracing::info!(servers = %servers.join(","), login = %auth.describe(), "connecting to NATS");
    let options = async_nats::ConnectOptions::new()
        .name(env!("CARGO_PKG_NAME"))
        // Keep trying while the broker is away: the outbox holds what it cannot take.
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        // The client retries in the background, so a refused login or a denied subject would
        // otherwise only show as a service that never gets ready or a request that times out.
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::ServerError(e) => {
                    tracing::error!(error = %e, "NATS server refused (login or permissions)")
                }
                other => tracing::warn!(event = %other, "NATS connection"),
            }
        });
    let client = auth.apply(options).await?.connect(servers).await?;
    Ok(client)
}

/// The servers of a comma-separated `NATS_URL`, blanks dropped.
pub fn server_list(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The stream's configuration for these settings.
pub fn stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: settings.name.clone(),
        subjects: vec![format!("{}.>", settings.subject_prefix)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: settings.max_age,
        num_replicas: settings.replicas,
        // Nats-Msg-Id de-duplication: a republished event (relay crash between publish and
        // marking the row processed) is dropped by the broker within this window.
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// What [`ensure_stream`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSetUp {
    /// The stream was missing and is created with these settings.
    Created,
    /// The stream exists, configured as these settings say.
    AsConfigured,
    /// The stream exists with another configuration: the settings that differ, `name: has →
    /// wanted`. Left as it is (see [`ensure_stream`]).
    Differs(Vec<String>),
}

/// Creates the stream if it is missing; an existing one is only compared. Asking first and
/// creating only what is missing needs no more than the command-service login's permissions
/// (`$JS.API.STREAM.INFO` and `.CREATE` of this stream, `deploy/nats/auth.conf`): the service
/// can bring a stream into being but cannot change or shrink one, so a leaked login cannot cut
/// the stream's history short through its configuration. Changing a live stream (replicas, max
/// age) is the operator's step (`nats stream edit` with the admin login); until then each start
/// logs the difference.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> anyhow::Result<StreamSetUp> {
    let wanted = stream_config(settings);
    let existing = match js.get_stream(&settings.name).await {
        Ok(stream) => stream.cached_info().config.clone(),
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(error)
                if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            js.create_stream(wanted).await?;
            return Ok(StreamSetUp::Created);
        }
        Err(e) => return Err(e.into()),
    };
    let mut differs = Vec::new();
    let mut compare = |name: &str, has: String, want: String| {
        if has != want {
            differs.push(format!("{name}: {has} → {want}"));
        }
    };
    compare(
        "subjects",
        existing.subjects.join(","),
        wanted.subjects.join(","),
    );
    compare(
        "replicas",
        existing.num_replicas.to_string(),
        wanted.num_replicas.to_string(),
    );
    compare(
        "max_age",
        format!("{:?}", existing.max_age),
        format!("{:?}", wanted.max_age),
    );
    compare(
        "duplicate_window",
        format!("{:?}", existing.duplicate_window),
        format!("{:?}", wanted.duplicate_window),
    );
    compare(
        "storage",
        format!("{:?}", existing.storage),
        format!("{:?}", wanted.storage),
    );
    Ok(if differs.is_empty() {
        StreamSetUp::AsConfigured
    } else {
        StreamSetUp::Differs(differs)
    })
}

/// The header naming an event's tenant on every message the relay publishes (the envelope in the
/// body names it too).
pub const HEADER_TENANT: &str = "Ventros-Tenant";
/// The header carrying the W3C trace context an event was decided in, so that the projection's
/// span joins the command's trace.
pub const HEADER_TRACEPARENT: &str = "traceparent";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nats_url_may_list_the_servers_of_a_cluster() {
        assert_eq!(
            server_list("nats://a:4222, nats://b:4223,,nats://c:4224"),
            ["nats://a:4222", "nats://b:4223", "nats://c:4224"]
        );
        assert_eq!(
            server_list("nats://127.0.0.1:4222"),
            ["nats://127.0.0.1:4222"]
        );
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let id = Uuid::parse_str("0190f1f0-0000-7000-8000-000000000001").unwrap();
        assert_eq!(partition_for(id, 8), partition_for(id, 8));
        let mut counts = [0u32; 8];
        for _ in 0..8_000 {
            counts[partition_for(Uuid::new_v4(), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "uneven spread: {counts:?}");
    }
}
