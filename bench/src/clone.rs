//! Fast realistic history: events produced through the command path (the template) are copied
//! with new ids, many times, and bulk-loaded with `COPY`. Every copy is a valid history of its
//! own (new contact and session ids, consistently replaced in the payloads that name them, new
//! event ids), so the projections accept it exactly as they accept the original.
//!
//! The template is read in `(transaction_id, position)` order, the order in which a reader may
//! apply the store, and each copy keeps it; copies are written one after the other.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// One template event, its ids replaced by indexes into the template's aggregates.
struct TemplateEvent {
    aggregate: usize,
    contact: usize,
    aggregate_type: String,
    event_type: String,
    event_version: String,
    sequence_number: i64,
    /// The payload, escaped for COPY, when it names no aggregate (most events).
    data_fixed: Option<String>,
    data: Value,
    /// Top-level payload keys that name an aggregate, and which.
    refs: Vec<(String, usize)>,
    user_id: Option<Uuid>,
    occurred_at: NaiveDateTime,
    created_at: NaiveDateTime,
}

pub struct Template {
    events: Vec<TemplateEvent>,
    aggregates: usize,
}

/// Where copies go: the tenant and project they belong to there.
#[derive(Debug, Clone)]
pub struct Owner {
    pub tenant_id: String,
    pub project_id: Uuid,
    pub user_id: Uuid,
}

#[derive(sqlx::FromRow)]
struct SourceRow {
    id: Uuid,
    aggregate_id: Uuid,
    aggregate_type: Option<String>,
    event_type: String,
    event_version: Option<String>,
    sequence_number: i64,
    event_data: Value,
    metadata: Option<Value>,
    occurred_at: NaiveDateTime,
    created_at: Option<NaiveDateTime>,
}

/// COPY text format: backslash is the escape character (tabs and newlines cannot occur in
/// compact JSON, where they are escaped already).
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
}

fn uuid_in(metadata: &Option<Value>, key: &str) -> Option<Uuid> {
    metadata
        .as_ref()
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

impl Template {
    /// The first `limit` events of a store, in reading order, their personal fields opened with
    /// `keys`: copies are written in the clear (`v1`, as the previous release wrote them), since
    /// a sealed payload is bound to its event and contact and would not open in a copy.
    pub async fn load(
        conn: &mut PgConnection,
        keys: &platform::personal::DataKeys,
        limit: i64,
    ) -> anyhow::Result<Self> {
        let rows: Vec<SourceRow> = sqlx::query_as(
            "select id, aggregate_id, aggregate_type, event_type, event_version, sequence_number, event_data, \
                    metadata, occurred_at, created_at \
               from contact_event_store order by transaction_id, position limit $1",
        )
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let mut index: HashMap<Uuid, usize> = HashMap::new();
        for r in &rows {
            let n = index.len();
            index.entry(r.aggregate_id).or_insert(n);
        }
        let contacts: Vec<Uuid> = rows
            .iter()
            .filter_map(|r| uuid_in(&r.metadata, "contact_id"))
            .chain(
                rows.iter()
                    .filter(|r| r.aggregate_type.as_deref() == Some("contact"))
                    .map(|r| r.aggregate_id),
            )
            .collect();
        let key_set = keys.load(conn, &contacts).await?;
        let mut events = Vec::with_capacity(rows.len());
        for mut r in rows {
            let version = r.event_version.clone().unwrap_or_else(|| "v1".into());
            let contact_id = uuid_in(&r.metadata, "contact_id").unwrap_or(r.aggregate_id);
            let payload = event_model::Payload::from_stored(&r.event_type, &version, r.event_data)?;
            let opened = key_set.open_payload(r.id, Some(contact_id), payload);
            r.event_data = match opened {
                Ok(p) => p.joined().unwrap_or_default(),
                Err(_) => anyhow::bail!("a template event does not open with its contact's key"),
            };
            r.event_version = Some("v1".into());
            let aggregate = index[&r.aggregate_id];
            let contact = match uuid_in(&r.metadata, "contact_id") {
                Some(c) => *index
                    .get(&c)
                    .ok_or_else(|| anyhow::anyhow!("event of a contact outside the template"))?,
                None => aggregate,
            };
            let mut refs = Vec::new();
            if let Value::Object(map) = &r.event_data {
                for (key, value) in map {
                    if let Some(i) = value
                        .as_str()
                        .and_then(|s| Uuid::parse_str(s).ok())
                        .and_then(|id| index.get(&id))
                    {
                        refs.push((key.clone(), *i));
                    }
                }
            }
            events.push(TemplateEvent {
                aggregate,
                contact,
                aggregate_type: r.aggregate_type.unwrap_or_else(|| "contact".into()),
                event_type: r.event_type,
                event_version: r.event_version.unwrap_or_else(|| "v1".into()),
                sequence_number: r.sequence_number,
                data_fixed: refs.is_empty().then(|| escape(&r.event_data.to_string())),
                data: r.event_data,
                refs,
                user_id: uuid_in(&r.metadata, "user_id"),
                occurred_at: r.occurred_at,
                created_at: r.created_at.unwrap_or(r.occurred_at),
            });
        }
        anyhow::ensure!(!events.is_empty(), "the template store is empty");
        Ok(Self {
            events,
            aggregates: index.len(),
        })
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// `count` events (whole copies, the last one possibly cut short: a prefix of a valid
    /// history is valid), as COPY text in chunks of `chunk` rows, handed to `sink`.
    pub fn generate(
        &self,
        owner: &Owner,
        count: usize,
        chunk: usize,
        mut sink: impl FnMut(String, usize) -> bool,
    ) {
        let mut buffer = String::with_capacity(chunk * 600);
        let mut in_buffer = 0;
        let mut written = 0;
        let tenant = escape(&owner.tenant_id);
        while written < count {
            let ids: Vec<Uuid> = (0..self.aggregates).map(|_| Uuid::now_v7()).collect();
            for e in &self.events {
                if written == count {
                    break;
                }
                let data = match &e.data_fixed {
                    Some(fixed) => std::borrow::Cow::Borrowed(fixed.as_str()),
                    None => {
                        let mut data = e.data.clone();
                        for (key, i) in &e.refs {
                            data[key.as_str()] = Value::String(ids[*i].to_string());
                        }
                        std::borrow::Cow::Owned(escape(&data.to_string()))
                    }
                };
                let correlation = Uuid::new_v4();
                let user = e.user_id.unwrap_or(owner.user_id);
                let _ = writeln!(
                    buffer,
                    "{id}\t{aggregate}\t{atype}\t{etype}\t{eversion}\t{seq}\t{data}\t\
                     {{\"user_id\": \"{user}\", \"contact_id\": \"{contact}\", \"correlation_id\": \"{correlation}\"}}\t\
                     {occurred}\t{created}\t{tenant}\t{project}\t{correlation}\t{correlation}",
                    id = Uuid::now_v7(),
                    aggregate = ids[e.aggregate],
                    atype = e.aggregate_type,
                    etype = e.event_type,
                    eversion = e.event_version,
                    seq = e.sequence_number,
                    contact = ids[e.contact],
                    occurred = e.occurred_at,
                    created = e.created_at,
                    project = owner.project_id,
                );
                written += 1;
                in_buffer += 1;
                if in_buffer == chunk {
                    let full = std::mem::replace(&mut buffer, String::with_capacity(chunk * 600));
                    if !sink(full, in_buffer) {
                        return;
                    }
                    in_buffer = 0;
                }
            }
        }
        if in_buffer > 0 {
            sink(buffer, in_buffer);
        }
    }
}

pub const COPY_EVENTS: &str = "copy contact_event_store (id, aggregate_id, aggregate_type, event_type, \
     event_version, sequence_number, event_data, metadata, occurred_at, created_at, tenant_id, project_id, \
     causation_id, correlation_id) from stdin";

/// Queues this transaction's events for the relay, in store order.
const QUEUE_OUTBOX: &str = "insert into outbox_events (event_id, aggregate_id, aggregate_type, event_type, \
     event_version, event_data, metadata, tenant_id, project_id, created_at) \
     select id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata, tenant_id, \
            project_id, created_at \
       from contact_event_store where transaction_id = pg_current_xact_id() order by position";

/// Copies `count` events of the template into the database at `url`, `chunk` events per
/// transaction (each with its outbox rows when `outbox`), generating on a thread of its own
/// while the previous chunk is loaded.
pub async fn load_copies(
    template: Arc<Template>,
    url: &str,
    owner: Owner,
    count: usize,
    chunk: usize,
    outbox: bool,
) -> anyhow::Result<u64> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, usize)>(2);
    let generator = std::thread::spawn(move || {
        template.generate(&owner, count, chunk, |text, rows| {
            tx.blocking_send((text, rows)).is_ok()
        });
    });
    let mut conn = PgConnection::connect_with(&platform::db::connect_options(url)?).await?;
    let mut loaded = 0u64;
    while let Some((text, rows)) = rx.recv().await {
        let mut tx = conn.begin().await?;
        let mut copy = tx.copy_in_raw(COPY_EVENTS).await?;
        copy.send(text.into_bytes()).await?;
        let n = copy.finish().await?;
        anyhow::ensure!(n as usize == rows, "COPY took {n} of {rows} rows");
        if outbox {
            sqlx::query(QUEUE_OUTBOX).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        loaded += n;
    }
    let _ = generator.join();
    let _ = conn.close().await;
    Ok(loaded)
}
