//! Scenario 3: the projections catching up a backlog, and the relay publishing one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{TestStream, TestSystem};
use platform::event_store::{EventRow, EVENT_COLUMNS};
use platform::nats::StreamSettings;

use crate::clone::{Owner, Template};
use crate::report::{number, Row};
use crate::{raw_jetstream, Sizes};

use super::{analyze, last_position, progress, report_secs};

/// Scenario 3: projection catch-up from a backlog in the stream, against baseline (b).
pub(super) async fn catch_up(
    sizes: &Sizes,
    system: &mut TestSystem,
    template: Arc<Template>,
) -> anyhow::Result<Vec<Row>> {
    let n = sizes.catchup_events;
    system.wait_until_projected(Duration::from_secs(600)).await;
    analyze(&system.db.pool).await?;
    system.stop_projection().await;
    let before = last_position(&system.db.pool).await?;
    progress(format!(
        "3: producing {} events with projection-service stopped (bulk COPY into store + outbox, relay publishing)",
        number(n as f64)
    ));
    let owner = Owner {
        tenant_id: system.tenant.tenant_id.clone(),
        project_id: system.tenant.project_id,
        user_id: system.tenant.user_id,
    };
    let started = Instant::now();
    let loaded =
        crate::clone::load_copies(template, &system.db.url, owner, n, 10_000, true).await?;
    anyhow::ensure!(loaded as usize == n, "loaded {loaded} of {n}");
    let inserted = started.elapsed();
    loop {
        let pending = e2e::db::rows(&system.db.pool, e2e::db::OUTBOX_WAITING).await;
        if pending == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the relay did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let produced = started.elapsed();
    progress(format!(
        "3: stored in {}, all published in {}; starting projection-service",
        report_secs(inserted),
        report_secs(produced)
    ));
    let started = Instant::now();
    system.start_projection().await;
    system.wait_until_consumed(Duration::from_secs(900)).await;
    let catch_up = started.elapsed();
    system.wait_until_projected(Duration::from_secs(60)).await;
    let ours = n as f64 / catch_up.as_secs_f64();
    progress(format!(
        "3: applied in {} ({} events/s); baseline (b): raw JetStream publish and consume",
        report_secs(catch_up),
        number(ours)
    ));

    // Baseline (b): the very messages, on a stream of their own.
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from contact_event_store e where e.position > $1 order by e.position"
    ))
    .bind(before)
    .fetch_all(&system.db.pool)
    .await?;
    let stream = TestStream::new(None, sizes.partitions);
    let settings = StreamSettings {
        name: stream.name.clone(),
        subject_prefix: stream.prefix.clone(),
        partitions: sizes.partitions,
        replicas: 1,
        max_age: Duration::from_secs(24 * 3600),
    };
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let envelope = row.into_envelope()?;
        messages.push(raw_jetstream::Message {
            subject: settings.subject(
                envelope.contact_id,
                envelope.aggregate_type.as_str(),
                &envelope.event_type,
            ),
            partition: platform::nats::partition_for(envelope.contact_id, sizes.partitions),
            id: envelope.event_id.to_string(),
            tenant: envelope.tenant_id.clone(),
            payload: serde_json::to_vec(&envelope)?.into(),
        });
    }
    let js = async_nats::jetstream::new(
        platform::nats::connect(&stream.url, &Default::default()).await?,
    );
    let timings = raw_jetstream::publish_and_consume(&js, &settings, &messages, 500, 256).await?;
    drop(js);
    drop(stream);
    let consume = n as f64 / timings.consume.as_secs_f64();
    let publish = n as f64 / timings.publish.as_secs_f64();
    let relay = n as f64 / produced.as_secs_f64();
    let ratio = ours / consume;
    Ok(vec![
        Row::new(
            "3",
            format!(
                "projection catch-up: {} events waiting in the stream ({} partitions), start projection-service, all applied (vs baseline (b): raw pull consume + ack of the same messages)",
                number(n as f64),
                sizes.partitions
            ),
        )
        .ours(ours, "events/s")
        .baseline(consume, "events/s")
        .ratio(ratio)
        .target("≥ 20,000 events/s, ≥ 0.5× (b)", ours >= 20_000.0 && ratio >= 0.5),
        Row::new(
            "3 (p)",
            format!(
                "producing them: bulk COPY into store + outbox ({} in the store after {}), outbox relay publishing (vs raw JetStream publish with awaited acks)",
                number(n as f64),
                report_secs(inserted)
            ),
        )
        .ours(relay, "events/s")
        .baseline(publish, "events/s")
        .ratio(relay / publish),
    ])
}
