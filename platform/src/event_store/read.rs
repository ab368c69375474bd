//! Reading the store: a stream (after a snapshot's version, or a range of it), several streams
//! at once, events by id, a contact's history with its sessions', and the catch-up reads in the
//! order of the writing transactions; counts and versions.

use chrono::{DateTime, Utc};
use event_model::{AggregateType, EventEnvelope};
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use super::{
    Checkpoint, EventRow, EventStore, Horizon, OrderedEvent, StoreError, EVENT_COLUMNS, FINISHED,
    UPTO,
};

impl EventStore {
    /// The events of one stream in this tenant after `after_sequence`, in order.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant_id, aggregate_id = %aggregate_id), err(level = "debug"))]
    pub async fn load_stream(
        &self,
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        aggregate_type: AggregateType,
        aggregate_id: Uuid,
        after_sequence: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from contact_event_store e \
              where e.aggregate_id = $1 and e.tenant_id = $2 and e.aggregate_type = $3 and e.sequence_number > $4 \
              order by e.sequence_number"
        ))
        .bind(aggregate_id)
        .bind(tenant_id)
        .bind(aggregate_type.as_str())
        .bind(after_sequence)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// The events of several streams in this tenant, each after its own sequence number, in one
    /// round trip: `(type, id, after)` per stream. The result is ordered by stream, then sequence.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant_id, streams = streams.len()), err(level = "debug"))]
    pub async fn load_streams(
        &self,
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        streams: &[(AggregateType, Uuid, i64)],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let types: Vec<&str> = streams.iter().map(|s| s.0.as_str()).collect();
        let ids: Vec<Uuid> = streams.iter().map(|s| s.1).collect();
        let after: Vec<i64> = streams.iter().map(|s| s.2).collect();
        // A lateral subquery per stream: one index range scan each, whatever the planner thinks
        // of the array's size.
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from unnest($1::uuid[], $2::text[], $3::int8[]) with ordinality as s(id, kind, after, n) \
              cross join lateral (select * from contact_event_store e \
                                   where e.aggregate_id = s.id and e.tenant_id = $4 and e.aggregate_type = s.kind \
                                     and e.sequence_number > s.after \
                                   order by e.sequence_number) e \
              order by s.n, e.sequence_number"
        ))
        .bind(&ids)
        .bind(&types)
        .bind(&after)
        .bind(tenant_id)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// Events `from..=to` of one stream (the projections' gap fill).
    #[tracing::instrument(level = "debug", skip_all, fields(aggregate_id = %aggregate_id), err(level = "debug"))]
    pub async fn read_range(
        &self,
        executor: impl PgExecutor<'_>,
        aggregate_id: Uuid,
        from_sequence: i64,
        to_sequence: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from contact_event_store e \
              where e.aggregate_id = $1 and e.sequence_number between $2 and $3 \
              order by e.sequence_number"
        ))
        .bind(aggregate_id)
        .bind(from_sequence)
        .bind(to_sequence)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// The stored events with these ids (those the store has), in no particular order: what a
    /// projection worker applies instead of the messages that named them (the store is the
    /// truth; a message is only a notice).
    pub async fn read_by_ids(
        executor: impl PgExecutor<'_>,
        ids: &[Uuid],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from contact_event_store e where e.id = any($1)"
        ))
        .bind(ids)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// A contact's events and its sessions' events in store order, optionally after a position
    /// and up to an instant (those that occurred at or before it).
    pub async fn read_contact_history(
        &self,
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        contact_id: Uuid,
        after_position: i64,
        until: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from contact_event_store e \
              where e.tenant_id = $1 and e.position > $3 \
                and (e.aggregate_id = $2 or (e.aggregate_type = 'session' and e.metadata->>'contact_id' = $2::text)) \
                and ($5::timestamp is null or e.occurred_at <= $5) \
              order by e.position limit $4"
        ))
        .bind(tenant_id)
        .bind(contact_id)
        .bind(after_position)
        .bind(limit)
        // `occurred_at` is a `timestamp` (UTC, as the inventory has it).
        .bind(until.map(|t| t.naive_utc()))
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// Up to `limit` events after `after` in `(transaction_id, position)` order: the order a
    /// catch-up reader can walk without ever having a row appear behind it (see the module docs).
    /// With `Horizon::Finished` only rows of transactions below the database's oldest running one
    /// are read, so the checkpoint can be kept and resumed; `Horizon::Visible` also reads rows
    /// committed by younger transactions, for a reader that keeps no checkpoint (a rebuild's last
    /// pass).
    pub async fn read_after(
        executor: impl PgExecutor<'_>,
        after: Checkpoint,
        limit: i64,
        tenant_id: Option<&str>,
        horizon: Horizon,
    ) -> Result<Vec<OrderedEvent>, StoreError> {
        let upto = match horizon {
            Horizon::Finished => FINISHED,
            Horizon::Visible => "",
            Horizon::Upto(_) => UPTO,
        };
        let sql = format!(
            "select {EVENT_COLUMNS}, e.transaction_id::text::bigint as transaction_id \
               from contact_event_store e \
              where (e.transaction_id, e.position) > ($1::text::xid8, $2) {upto} \
                and ($3::text is null or e.tenant_id = $3) \
              order by e.transaction_id, e.position limit $4"
        );
        let mut query = sqlx::query_as(&sql)
            .bind(after.transaction_id.to_string())
            .bind(after.position)
            .bind(tenant_id)
            .bind(limit);
        if let Horizon::Upto(bound) = horizon {
            query = query
                .bind(bound.transaction_id.to_string())
                .bind(bound.position);
        }
        Ok(query.fetch_all(executor).await?)
    }

    /// The last event (of `tenant_id`, or of all) whose transaction is finished: with
    /// [`Horizon::Upto`], a fixed part of the history that nothing can join any more. The
    /// default checkpoint when there is none.
    pub async fn finished_checkpoint(
        executor: impl PgExecutor<'_>,
        tenant_id: Option<&str>,
    ) -> Result<Checkpoint, StoreError> {
        let last: Option<(i64, i64)> = sqlx::query_as(&format!(
            "select e.transaction_id::text::bigint, e.position from contact_event_store e \
              where true {FINISHED} and ($1::text is null or e.tenant_id = $1) \
              order by e.transaction_id desc, e.position desc limit 1"
        ))
        .bind(tenant_id)
        .fetch_optional(executor)
        .await?;
        Ok(last
            .map(|(transaction_id, position)| Checkpoint {
                transaction_id,
                position,
            })
            .unwrap_or_default())
    }

    /// A contact's events after `after_sequence` that were stored before `before_position`: what
    /// a session event presupposes of its contact (the projections' gap fill).
    pub async fn read_contact_before(
        &self,
        executor: impl PgExecutor<'_>,
        contact_id: Uuid,
        after_sequence: i64,
        before_position: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from contact_event_store e \
              where e.aggregate_id = $1 and e.sequence_number > $2 and e.position < $3 \
              order by e.sequence_number"
        ))
        .bind(contact_id)
        .bind(after_sequence)
        .bind(before_position)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// How many events are stored up to and including `upto` (`None`: all of them), of one
    /// tenant or (`None`) of all.
    pub async fn count_upto(
        executor: impl PgExecutor<'_>,
        upto: Option<Checkpoint>,
        tenant_id: Option<&str>,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar!(
            r#"select count(*) as "count!" from contact_event_store e
                where ($1::text is null or (e.transaction_id, e.position) <= ($1::text::xid8, $2))
                  and ($3::text is null or e.tenant_id = $3)"#,
            upto.map(|c| c.transaction_id.to_string()),
            upto.map(|c| c.position),
            tenant_id,
        )
        .fetch_one(executor)
        .await?)
    }

    /// Which of `event_ids` are stored in this tenant, each with its stream:
    /// `(event id, aggregate id)`.
    pub async fn stored_streams_of(
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        event_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        Ok(sqlx::query!(
            "select id, aggregate_id from contact_event_store \
              where id = any($1) and tenant_id = $2",
            event_ids,
            tenant_id,
        )
        .fetch_all(executor)
        .await?
        .into_iter()
        .map(|r| (r.id, r.aggregate_id))
        .collect())
    }

    /// Whether `message_id` is a message (`session.message_recorded`) of the contact, named
    /// directly or as the contact of the session `session_id`, in this tenant.
    pub async fn is_message_of(
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        message_id: Uuid,
        contact_id: Option<Uuid>,
        session_id: Option<Uuid>,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar!(
            r#"select exists (
                 select 1 from contact_event_store r
                  where r.id = $1 and r.tenant_id = $2
                    and r.event_type = 'session.message_recorded'
                    and r.metadata->>'contact_id' = coalesce($3,
                          (select s.metadata->>'contact_id' from contact_event_store s
                            where s.aggregate_id = $4 and s.tenant_id = $2
                              and s.sequence_number = 1))) as "found!""#,
            message_id,
            tenant_id,
            contact_id.map(|c| c.to_string()),
            session_id,
        )
        .fetch_one(executor)
        .await?)
    }

    /// The last sequence number of a stream of this type in this tenant; `None`: no such stream.
    pub async fn stream_version(
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        aggregate_id: Uuid,
        aggregate_type: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar!(
            "select max(sequence_number)::bigint from contact_event_store \
              where aggregate_id = $1 and tenant_id = $2 and aggregate_type = $3",
            aggregate_id,
            tenant_id,
            aggregate_type,
        )
        .fetch_one(executor)
        .await?)
    }

    /// Whether any of these streams is no longer at the given version (its last sequence
    /// number; 0: no events), as the caller's transaction sees them: one statement (the rule is
    /// the database's `streams_moved`, migration 0029).
    pub async fn streams_moved(
        tx: &mut Transaction<'_, Postgres>,
        streams: &[(Uuid, i64)],
    ) -> Result<bool, StoreError> {
        let (ids, versions): (Vec<Uuid>, Vec<i64>) = streams.iter().copied().unzip();
        Ok(sqlx::query_scalar!(
            r#"select streams_moved($1::uuid[], $2::int8[]) as "moved!""#,
            &ids,
            &versions,
        )
        .fetch_one(&mut **tx)
        .await?)
    }
}
