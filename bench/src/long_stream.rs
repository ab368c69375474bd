//! Scenario 5: loading a contact whose stream holds 10,000 events, with snapshots (one every 100
//! events, as `SNAPSHOT_EVERY=100` writes them) and without (as a huge `SNAPSHOT_EVERY` leaves
//! it). The events are real `event_model` events (profile changes, tags added and removed,
//! sessions opened and closed), folded with the aggregate's own `apply` to write the snapshots
//! the command path would have written.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::Utc;
use command_service::commands::Actor;
use command_service::{system_clock, CommandHandler};
use event_model::{Contact, ContactEvent, DomainEvent, Snapshot};
use platform::crypto::Keyring;
use platform::event_store::EventStore;
use platform::personal::DataKeys;
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use crate::report::Percentiles;

fn event(i: i64) -> ContactEvent {
    let tag = format!("segment-{}", (i / 2) % 40);
    match i {
        1 => ContactEvent::Created {
            name: Some("Grace Hopper".into()),
            email: Some("grace@example.com".into()),
            phone: Some("+5511987654321".into()),
            external_id: Some("crm-42".into()),
            source_channel: Some("whatsapp".into()),
            language: "en".into(),
            timezone: Some("America/New_York".into()),
            tags: vec!["vip".into()],
        },
        _ if i % 10 == 0 => ContactEvent::NameChanged {
            name: Some(format!("Grace Hopper {i}")),
            previous: Some(format!("Grace Hopper {}", i - 10)),
        },
        _ if i % 10 == 5 => ContactEvent::SessionOpened {
            session_id: Uuid::from_u128(i as u128),
            channel_type_id: 1,
        },
        _ if i % 10 == 6 => ContactEvent::SessionClosed {
            session_id: Uuid::from_u128(i as u128 - 1),
            channel_type_id: 1,
        },
        _ if i % 2 == 0 => ContactEvent::TagAdded { tag },
        _ => ContactEvent::TagRemoved { tag },
    }
}

/// Writes a contact of `events` events (and, when `snapshot_every` is given, its snapshots).
pub async fn write_contact(
    pool: &PgPool,
    actor: &Actor,
    events: i64,
    snapshot_every: Option<i64>,
) -> anyhow::Result<Uuid> {
    let contact_id = Uuid::now_v7();
    let mut state = Contact::default();
    let mut text = String::new();
    let mut snapshots = Vec::new();
    let start = Utc::now() - chrono::Duration::hours(events);
    for i in 1..=events {
        let e = event(i);
        let at = event_model::values::instant(start + chrono::Duration::seconds(i));
        let data = DomainEvent::Contact(e.clone()).data().to_string();
        let _ = writeln!(
            text,
            "{}\t{contact_id}\tcontact\t{}\tv1\t{i}\t{}\t{}\t{}\t{}\t{}\t{}\t\\N\t\\N",
            Uuid::now_v7(),
            e.event_type(),
            data.replace('\\', "\\\\"),
            serde_json::json!({"user_id": actor.user_id, "contact_id": contact_id, "correlation_id": null}),
            at.naive_utc(),
            at.naive_utc(),
            actor.tenant_id,
            actor.project_id,
        );
        state.apply(i, &e, at);
        if let Some(every) = snapshot_every {
            if i % every == 0 {
                snapshots.push((state.encode(), i));
            }
        }
    }
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut copy = tx.copy_in_raw(crate::clone::COPY_EVENTS).await?;
    copy.send(text.into_bytes()).await?;
    copy.finish().await?;
    for (data, version) in snapshots {
        sqlx::query(
            "insert into contact_snapshots (aggregate_id, snapshot_data, last_sequence_number, tenant_id) \
             values ($1, $2, $3, $4)",
        )
        .bind(contact_id)
        .bind(data)
        .bind(version)
        .bind(&actor.tenant_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(contact_id)
}

pub fn handler(pool: &PgPool) -> CommandHandler {
    // The stream is written as the previous release wrote it (`v1`, in the clear): no key needed.
    let keys = DataKeys::new(Keyring::unwrapped(), 0);
    CommandHandler::new(EventStore::new(pool.clone()), keys, system_clock(), 100, 10)
}

/// Loads the contact `iterations` times (after a few untimed loads) and checks what it got.
pub async fn time_loads(
    handler: &CommandHandler,
    actor: &Actor,
    contact_id: Uuid,
    expected_version: i64,
    iterations: usize,
) -> anyhow::Result<Percentiles> {
    for _ in 0..3 {
        let c: Contact = handler.load(actor, contact_id).await?;
        anyhow::ensure!(
            c.version == expected_version,
            "loaded version {}",
            c.version
        );
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let c: Contact = handler.load(actor, contact_id).await?;
        samples.push(started.elapsed());
        anyhow::ensure!(
            c.version == expected_version,
            "loaded version {}",
            c.version
        );
    }
    Ok(Percentiles::of(&mut samples))
}
