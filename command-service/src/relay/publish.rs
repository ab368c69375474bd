//! Publishing: a batch of pending rows read in order, sent with `Nats-Msg-Id`, its acks awaited
//! and its rows deleted; a backlog pipelined, the next batch sent while the last one's acks come.

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use event_model::EventEnvelope;
use futures::future::join_all;
use platform::event_store::{EventRow, EVENT_COLUMNS};
use platform::nats::{HEADER_TENANT, HEADER_TRACEPARENT};
use sqlx::PgConnection;
use uuid::Uuid;

use super::OutboxRelay;

#[derive(sqlx::FromRow)]
struct PendingRow {
    outbox_id: Uuid,
    outbox_seq: i64,
    #[sqlx(flatten)]
    event: EventRow,
}

/// A batch sent to the broker, its acks still to come.
struct Sent {
    acks: Vec<Pending>,
    /// The last outbox position it holds: the next batch starts after it.
    last_seq: i64,
    started: std::time::Instant,
}

enum Published {
    Ok(Uuid),
    Transient(Uuid, String),
    Permanent(Uuid, String),
}

/// The first `limit` pending rows after `seq` `$1`, oldest first, with their events. The limit
/// is written into the statement, not bound: its plan is generic
/// ([`platform::db::GenericPlans`]), and a bound limit would be planned as a tenth of the pending
/// rows, however many the statistics last counted.
pub fn batch_query(limit: i64) -> String {
    format!(
        "select o.id as outbox_id, o.seq as outbox_seq, {EVENT_COLUMNS} \
           from outbox_events o join contact_event_store e on e.id = o.event_id \
          where o.status in ('pending', 'processing') and o.seq > $1 \
          order by o.seq limit {limit}"
    )
}

impl OutboxRelay {
    /// Publishes the pending rows, oldest first, until a batch comes back short or fails; returns
    /// (published, failed). While batches are full (a backlog), the next one is read and sent
    /// while the broker acknowledges the last, which is settled (its rows deleted) only then; the
    /// next starts after the last one's rows, still in the table until settled.
    pub(super) async fn relay_pending(
        &self,
        conn: &mut PgConnection,
    ) -> anyhow::Result<(usize, usize)> {
        let mut sent = self.send_batch(conn, 0).await?;
        let (mut published, mut failed) = (0, 0);
        loop {
            let next = if sent.acks.len() as i64 >= self.batch_size {
                Some(self.send_batch(conn, sent.last_seq).await?)
            } else {
                None
            };
            let (p, f) = self.settle(conn, sent).await?;
            (published, failed) = (published + p, failed + f);
            match next {
                Some(next) if failed == 0 => sent = next,
                Some(next) => {
                    let (p, f) = self.settle(conn, next).await?;
                    return Ok((published + p, failed + f));
                }
                None => return Ok((published, failed)),
            }
        }
    }

    /// Reads the next pending rows after outbox position `after` and sends them to the broker in
    /// order (so a partition receives an aggregate's events in sequence), without awaiting the
    /// acks.
    async fn send_batch(&self, conn: &mut PgConnection, after: i64) -> anyhow::Result<Sent> {
        let rows: Vec<PendingRow> = sqlx::query_as(&batch_query(self.batch_size))
            .bind(after)
            .fetch_all(&mut *conn)
            .await?;
        let started = std::time::Instant::now();
        let last_seq = rows.last().map_or(after, |r| r.outbox_seq);
        let mut acks = Vec::with_capacity(rows.len());
        for row in rows {
            let outbox_id = row.outbox_id;
            let traceparent = row.event.traceparent();
            match row.event.into_envelope() {
                Ok(envelope) => acks.push(self.send(outbox_id, envelope, traceparent).await),
                Err(e) => acks.push(Pending::Done(Published::Permanent(
                    outbox_id,
                    e.to_string(),
                ))),
            }
        }
        Ok(Sent {
            acks,
            last_seq,
            started,
        })
    }

    /// Awaits a sent batch's acks, deletes the rows the broker took and records the failures;
    /// returns (published, failed).
    async fn settle(&self, conn: &mut PgConnection, sent: Sent) -> anyhow::Result<(usize, usize)> {
        if sent.acks.is_empty() {
            return Ok((0, 0));
        }
        let results = join_all(sent.acks.into_iter().map(Pending::settle)).await;
        let mut done = Vec::new();
        let (mut transient, mut permanent) = (Vec::new(), Vec::new());
        for result in results {
            match result {
                Published::Ok(id) => done.push(id),
                Published::Transient(id, error) => transient.push((id, error)),
                Published::Permanent(id, error) => permanent.push((id, error)),
            }
        }
        if !done.is_empty() {
            // Published rows go: an update would write a new version of each row and an entry
            // in every index (its status changes), where a delete only marks the row dead. The
            // event stays in the store, which is the record.
            sqlx::query!("delete from outbox_events where id = any($1)", &done)
                .execute(&mut *conn)
                .await?;
            metrics::counter!("outbox_published_total").increment(done.len() as u64);
            metrics::histogram!("outbox_publish_batch_seconds")
                .record(sent.started.elapsed().as_secs_f64());
        }
        for (status, failures) in [("pending", &transient), ("failed", &permanent)] {
            if failures.is_empty() {
                continue;
            }
            let (ids, errors): (Vec<Uuid>, Vec<String>) = failures.iter().cloned().unzip();
            tracing::warn!(count = ids.len(), status, first_error = %errors[0], "outbox rows not published");
            sqlx::query!(
                "update outbox_events o set status = $3, retry_count = coalesce(o.retry_count, 0) + 1, \
                        last_error = f.error, last_retry_at = now() at time zone 'utc' \
                   from unnest($1::uuid[], $2::text[]) as f(id, error) where o.id = f.id",
                &ids,
                &errors,
                status,
            )
            .execute(&mut *conn)
            .await?;
        }
        Ok((done.len(), transient.len()))
    }

    async fn send(
        &self,
        outbox_id: Uuid,
        envelope: EventEnvelope,
        traceparent: Option<String>,
    ) -> Pending {
        let subject = self.stream.subject(
            envelope.contact_id,
            envelope.aggregate_type.as_str(),
            &envelope.event_type,
        );
        let payload = match serde_json::to_vec(&envelope) {
            Ok(p) => p,
            Err(e) => return Pending::Done(Published::Permanent(outbox_id, e.to_string())),
        };
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .message_id(envelope.event_id.to_string())
            .header(HEADER_TENANT, envelope.tenant_id.as_str());
        if let Some(traceparent) = traceparent {
            message = message.header(HEADER_TRACEPARENT, traceparent.as_str());
        }
        match self.js.send_publish(subject, message).await {
            Ok(ack) => Pending::Ack(outbox_id, ack),
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                Pending::Done(Published::Permanent(outbox_id, e.to_string()))
            }
            Err(e) => Pending::Done(Published::Transient(outbox_id, e.to_string())),
        }
    }
}

/// A sent message whose ack is still to come, or a result already known.
enum Pending {
    Ack(Uuid, PublishAckFuture),
    Done(Published),
}

impl Pending {
    async fn settle(self) -> Published {
        match self {
            Self::Done(published) => published,
            Self::Ack(outbox_id, ack) => match ack.await {
                Ok(_) => Published::Ok(outbox_id),
                Err(e) => Published::Transient(outbox_id, e.to_string()),
            },
        }
    }
}
