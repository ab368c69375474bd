//! A batch's one write: every changed row, its new messages, its audit rows, its
//! `processed_events` rows and the `min_version` notification in one statement.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use super::contacts::{self, ContactRecord};
use super::event_log;
use super::fold::{Folded, Processed};
use super::messages;
use super::sessions::{self, SessionRecord};
use super::wal::Commit;

/// How a write treats the rows it overwrites.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
    /// Locked by the batch's read: overwritten as they are.
    Locked,
    /// Read without a lock: each is overwritten only where it is still the version read (and
    /// inserted only where none has appeared since), and the statement is aborted, with nothing
    /// written, when one is not (`projection_rows_unmoved`, migration 0028). The statement is
    /// its own transaction, committed as it says.
    Unmoved(Commit),
}

/// Writes a folded batch in one statement: the changed `contacts` and `sessions` rows (inserted,
/// or every column overwritten), the audit rows (a second delivery inserts nothing), the
/// `processed_events` rows and the notification, each part only when it has something to write.
/// A session row's foreign key to its contact's row is checked at the statement's end, after both.
pub(super) async fn write(
    conn: &mut PgConnection,
    folded: &Folded,
    processed: Option<&Processed>,
    notification: Option<String>,
    rows: Rows,
) -> Result<(), sqlx::Error> {
    let mut sql = QueryBuilder::<Postgres>::new("");
    let mut parts = Parts::default();
    // The parts whose row counts the unmoved check adds up.
    let mut counted = Vec::new();
    let contact_rows = (&folded.contacts, &folded.xmins.contacts);
    write_rows(
        &mut sql,
        &mut parts,
        &mut counted,
        "contacts",
        contacts::COLUMNS,
        contact_rows,
        rows,
    );
    let session_rows = (&folded.sessions, &folded.xmins.sessions);
    write_rows(
        &mut sql,
        &mut parts,
        &mut counted,
        "sessions",
        sessions::COLUMNS,
        session_rows,
        rows,
    );
    if !folded.messages.is_empty() {
        parts.open(&mut sql, "messages_written");
        messages::push_insert(&mut sql, &folded.messages);
        sql.push(")");
    }
    if !folded.log.is_empty() {
        parts.open(&mut sql, "logged");
        sql.push(event_log::copy_sql())
            .push(" where e.id = any(")
            .push_bind(&folded.log)
            .push(")")
            .push(event_log::KEEP_EXISTING)
            .push(")");
    }
    if let Some(processed) = processed.filter(|p| !p.ids.is_empty()) {
        parts.open(&mut sql, "processed");
        sql.push(
            "insert into processed_events (event_id, consumer_name, processing_duration_ms) \
             select id, name, ",
        )
        .push_bind(processed.duration_ms)
        .push(" from unnest(")
        .push_bind(&processed.ids)
        .push("::uuid[], ")
        .push_bind(&processed.names)
        .push("::text[]) as t(id, name) on conflict (event_id, consumer_name) do nothing)");
    }
    if parts.0 == 0 && notification.is_none() {
        return Ok(());
    }
    let mut results = Vec::new();
    if !counted.is_empty() {
        let expected = (folded.contacts.len() + folded.sessions.len()) as i64;
        let written = counted
            .iter()
            .map(|part| format!("(select count(*) from {part})"))
            .collect::<Vec<_>>()
            .join(" + ");
        results.push(format!("projection_rows_unmoved({expected}, {written})"));
    }
    if rows == Rows::Unmoved(Commit::Deferred) {
        // Read at the statement's commit, which this statement is.
        results.push("set_config('synchronous_commit', 'off', true)".to_owned());
    }
    sql.push(" select ");
    match notification {
        Some(payload) => {
            for result in &results {
                sql.push(result).push(", ");
            }
            sql.push("pg_notify(")
                .push_bind(crate::projected::CHANNEL)
                .push(", ")
                .push_bind(payload)
                .push(")");
        }
        None if results.is_empty() => {
            sql.push("1");
        }
        None => {
            sql.push(results.join(", "));
        }
    }
    sql.build().execute(&mut *conn).await?;
    Ok(())
}

/// The `with` parts of a statement, counted as they are opened.
#[derive(Default)]
struct Parts(usize);

impl Parts {
    /// Opens part `name` (`with name as (` or `, name as (`); its writer closes it.
    fn open(&mut self, sql: &mut QueryBuilder<'_, Postgres>, name: &str) {
        sql.push(if self.0 == 0 { "with " } else { ", " })
            .push(name)
            .push(" as (");
        self.0 += 1;
    }
}

/// A read row: its id.
trait Keyed {
    fn id(&self) -> Uuid;
}

impl Keyed for ContactRecord {
    fn id(&self) -> Uuid {
        self.id
    }
}

impl Keyed for SessionRecord {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// The parts of [`write`] that write `table`'s changed rows (`records`, with the versions they
/// were read at): one upsert of them all ([`Rows::Locked`]), or an update of those read that
/// are still at the version read and an insert of the others where none has appeared since
/// ([`Rows::Unmoved`], whose parts go to `counted`).
fn write_rows<'a, T: Serialize + Keyed + Sync>(
    sql: &mut QueryBuilder<'a, Postgres>,
    parts: &mut Parts,
    counted: &mut Vec<String>,
    table: &str,
    columns: &[&str],
    (records, xmins): (&'a Vec<T>, &HashMap<Uuid, String>),
    rows: Rows,
) {
    if records.is_empty() {
        return;
    }
    let list = columns.join(", ");
    let set = |from: &str| {
        columns[1..]
            .iter()
            .map(|c| format!("{c} = {from}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let records = Json(records);
    if rows == Rows::Locked {
        parts.open(sql, &format!("{table}_written"));
        sql.push(format_args!(
            "insert into {table} ({list}) select {list} from jsonb_populate_recordset(null::{table}, "
        ))
        .push_bind(records)
        .push(format_args!(
            ") on conflict (id) do update set {})",
            set("excluded")
        ));
        return;
    }
    let (read_ids, read_xmins): (Vec<Uuid>, Vec<String>) = records
        .0
        .iter()
        .filter_map(|r| xmins.get(&r.id()).map(|x| (r.id(), x.clone())))
        .unzip();
    parts.open(sql, &format!("{table}_rows"));
    sql.push(format_args!(
        "select * from jsonb_populate_recordset(null::{table}, "
    ))
    .push_bind(records)
    .push("))");
    parts.open(sql, &format!("{table}_updated"));
    sql.push(format_args!(
        "update {table} t set {} from {table}_rows r join unnest(",
        set("r")
    ))
    .push_bind(read_ids.clone())
    .push("::uuid[], ")
    .push_bind(read_xmins)
    // The rows are found by their ids through the key's index: a join on `r.id` alone was
    // planned (generically, for any batch) as a scan of the whole table.
    .push("::text[]) as g(id, xmin) on g.id = r.id where t.id = any(")
    .push_bind(read_ids.clone())
    .push("::uuid[]) and t.id = r.id and t.xmin = g.xmin::xid returning 1)");
    parts.open(sql, &format!("{table}_inserted"));
    sql.push(format_args!(
        "insert into {table} ({list}) select {list} from {table}_rows r where r.id <> all("
    ))
    .push_bind(read_ids)
    .push("::uuid[]) on conflict (id) do nothing returning 1)");
    counted.push(format!("{table}_updated"));
    counted.push(format!("{table}_inserted"));
}
