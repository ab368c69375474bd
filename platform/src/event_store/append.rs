//! Appending: a command's events and their outbox rows in one statement, so an event is never
//! stored without being queued for publication.

use sqlx::postgres::PgArguments;
use sqlx::query::QueryScalar;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{EventStore, NewEvent, StoreError, SEQUENCE_CONSTRAINT};

/// The append statement: the events from 13 arrays (`$1`..`$13`, [`Columns`]) into the store and,
/// as the store returns them, into the outbox; it returns each event's position. `$with` opens
/// the statement, `$source` joins the events' source to what it names.
macro_rules! append_sql {
    ($with:literal, $source:literal) => {
        concat!(
            $with,
            " inserted as (
                insert into contact_event_store
                    (id, aggregate_id, aggregate_type, event_type, event_version, sequence_number, event_data,
                     metadata, occurred_at, tenant_id, project_id, causation_id, correlation_id)
                select e.* from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int8[],
                                       $7::jsonb[], $8::jsonb[], $9::timestamp[], $10::text[], $11::uuid[],
                                       $12::uuid[], $13::uuid[]) as e",
            $source,
            "
                returning id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata,
                          tenant_id, project_id, created_at, position
            ), queued as (
                insert into outbox_events
                    (event_id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata,
                     tenant_id, project_id, created_at)
                select id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata,
                       tenant_id, project_id, created_at
                  from inserted order by position
            )
            select position from inserted order by position"
        )
    };
}

/// [`EventStore::append`]'s statement, in the caller's transaction.
const APPEND: &str = append_sql!("with", "");

/// [`EventStore::append_in_tenant`]'s statement: the events' source is joined to the tenant's
/// entry (`$14`, the streams read in `$15` and `$16`), which a materialized CTE makes happen once,
/// before the first row is inserted.
const APPEND_IN_TENANT: &str = append_sql!(
    "with tenant as materialized
         (select enter_tenant_streams_unmoved($14, $15::uuid[], $16::int8[]) as id),",
    ", tenant"
);

impl EventStore {
    /// Appends events (of one or several streams) and their outbox rows, in the caller's
    /// transaction, in one round trip. Returns each event's global position.
    #[tracing::instrument(level = "debug", skip_all, fields(events = events.len()), err(level = "debug"))]
    pub async fn append(
        tx: &mut Transaction<'_, Postgres>,
        events: &[&NewEvent],
    ) -> Result<Vec<i64>, StoreError> {
        let query = Columns::of(events.iter().copied()).bind(sqlx::query_scalar(APPEND));
        append_result(query.fetch_all(&mut **tx).await)
    }

    /// Appends events of one tenant and their outbox rows in one statement that is its own
    /// transaction: one round trip and one WAL flush, no `BEGIN` or `COMMIT`. The statement first
    /// enters the tenant (row-level security checks every row against it) and checks that each
    /// stream of `unmoved` is still at its version (its last sequence number; 0: no events),
    /// a stream that moved being a [`StoreError::Conflict`] with nothing written (migration
    /// 0029). `conn` must not be in a transaction.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant_id, events = events.len()), err(level = "debug"))]
    pub async fn append_in_tenant(
        conn: &mut PgConnection,
        tenant_id: &str,
        events: &[&NewEvent],
        unmoved: &[(Uuid, i64)],
    ) -> Result<Vec<i64>, StoreError> {
        let (ids, versions): (Vec<Uuid>, Vec<i64>) = unmoved.iter().copied().unzip();
        let query = Columns::of(events.iter().copied())
            .bind(sqlx::query_scalar(APPEND_IN_TENANT))
            .bind(tenant_id)
            .bind(&ids)
            .bind(&versions);
        append_result(query.fetch_all(conn).await)
    }
}

/// The events as the statement takes them: one array per column.
struct Columns<'a> {
    ids: Vec<Uuid>,
    aggregate_ids: Vec<Uuid>,
    aggregate_types: Vec<&'a str>,
    event_types: Vec<&'a str>,
    versions: Vec<&'a str>,
    sequences: Vec<i64>,
    data: Vec<&'a serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    occurred: Vec<chrono::NaiveDateTime>,
    tenants: Vec<&'a str>,
    projects: Vec<Uuid>,
    causations: Vec<Option<Uuid>>,
    correlations: Vec<Option<Uuid>>,
}

impl<'a> Columns<'a> {
    fn of(events: impl IntoIterator<Item = &'a NewEvent>) -> Self {
        let events: Vec<&'a NewEvent> = events.into_iter().collect();
        Self {
            ids: events.iter().map(|e| e.event_id).collect(),
            aggregate_ids: events.iter().map(|e| e.aggregate_id).collect(),
            aggregate_types: events.iter().map(|&e| e.aggregate_type.as_str()).collect(),
            event_types: events.iter().map(|e| e.event_type).collect(),
            versions: events.iter().map(|e| e.event_version).collect(),
            sequences: events.iter().map(|e| e.sequence_number).collect(),
            data: events.iter().map(|&e| &e.data).collect(),
            metadata: events
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "user_id": e.user_id,
                        "contact_id": e.contact_id,
                        "correlation_id": e.correlation_id,
                        "traceparent": e.traceparent,
                    })
                })
                .collect(),
            occurred: events.iter().map(|e| e.occurred_at.naive_utc()).collect(),
            tenants: events.iter().map(|&e| e.tenant_id.as_str()).collect(),
            projects: events.iter().map(|e| e.project_id).collect(),
            causations: events.iter().map(|e| e.causation_id).collect(),
            correlations: events.iter().map(|e| e.correlation_id).collect(),
        }
    }

    /// Binds `$1`..`$13`.
    fn bind(
        self,
        query: QueryScalar<'a, Postgres, i64, PgArguments>,
    ) -> QueryScalar<'a, Postgres, i64, PgArguments> {
        query
            .bind(self.ids)
            .bind(self.aggregate_ids)
            .bind(self.aggregate_types)
            .bind(self.event_types)
            .bind(self.versions)
            .bind(self.sequences)
            .bind(self.data)
            .bind(self.metadata)
            .bind(self.occurred)
            .bind(self.tenants)
            .bind(self.projects)
            .bind(self.causations)
            .bind(self.correlations)
    }
}

/// The statement's positions, or the conflict a taken stream position or a moved stream is.
fn append_result(result: Result<Vec<i64>, sqlx::Error>) -> Result<Vec<i64>, StoreError> {
    match result {
        Ok(positions) => Ok(positions),
        Err(e) if crate::db::is_unique_violation(&e, SEQUENCE_CONSTRAINT) => {
            Err(StoreError::Conflict)
        }
        Err(e) if crate::db::is_unique_violation(&e, super::EVENT_ID_CONSTRAINT) => {
            Err(StoreError::EventExists)
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(STREAM_MOVED) => {
            Err(StoreError::Conflict)
        }
        Err(e) => Err(e.into()),
    }
}

/// What `enter_tenant_streams_unmoved` raises for a stream that moved (serialization_failure).
const STREAM_MOVED: &str = "40001";
