//! The `contacts` projection: one row per contact, folded with the domain's own
//! [`ContactView::apply`], plus `first/last_interaction_at` from its sessions' messages.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, NaiveDateTime, Utc};
use event_model::{ContactEvent, ContactView, DomainEvent, EventEnvelope, SessionEvent};
use platform::event_store::EventStore;
use platform::personal::KeySet;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::projection::{decode, Decoded, ProjectionError};

/// A `contacts` row, column for column (it is read with `to_jsonb` and written with
/// `jsonb_populate_recordset`, so the field names are the column names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub id: Uuid,
    pub project_id: Option<Uuid>,
    pub tenant_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub source_channel: Option<String>,
    pub language: Option<String>,
    pub timezone: Option<String>,
    pub tags: Option<Vec<String>>,
    pub profile_picture_url: Option<String>,
    pub profile_picture_fetched_at: Option<NaiveDateTime>,
    pub first_interaction_at: Option<NaiveDateTime>,
    pub last_interaction_at: Option<NaiveDateTime>,
    pub version: i64,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
    pub deleted_at: Option<NaiveDateTime>,
    pub forgotten_at: Option<NaiveDateTime>,
}

pub(super) const COLUMNS: &[&str] = &[
    "id",
    "project_id",
    "tenant_id",
    "name",
    "email",
    "phone",
    "external_id",
    "source_channel",
    "language",
    "timezone",
    "tags",
    "profile_picture_url",
    "profile_picture_fetched_at",
    "first_interaction_at",
    "last_interaction_at",
    "version",
    "created_at",
    "updated_at",
    "deleted_at",
    "forgotten_at",
];

fn naive(at: Option<DateTime<Utc>>) -> Option<NaiveDateTime> {
    at.map(|t| t.naive_utc())
}

fn utc(at: Option<NaiveDateTime>) -> Option<DateTime<Utc>> {
    at.map(|t| t.and_utc())
}

impl ContactRecord {
    fn empty(envelope: &EventEnvelope) -> Self {
        Self {
            id: envelope.contact_id,
            project_id: Some(envelope.project_id),
            tenant_id: envelope.tenant_id.clone(),
            name: None,
            email: None,
            phone: None,
            external_id: None,
            source_channel: None,
            language: None,
            timezone: None,
            tags: None,
            profile_picture_url: None,
            profile_picture_fetched_at: None,
            first_interaction_at: None,
            last_interaction_at: None,
            version: 0,
            created_at: None,
            updated_at: None,
            deleted_at: None,
            forgotten_at: None,
        }
    }

    /// The row of `contact` (an aggregate restored from a snapshot, or a new one) in the stream
    /// `envelope` is of; its interaction times are not the aggregate's to know.
    pub(super) fn at(contact: &event_model::Contact, envelope: &EventEnvelope) -> Self {
        let mut record = Self::empty(envelope);
        record.set_view(contact.view.clone());
        record.version = contact.version;
        record
    }

    /// The domain's view of the row, its fields moved out (the fold puts them back with
    /// [`Self::set_view`]: a contact's strings are not copied for every event).
    fn take_view(&mut self) -> ContactView {
        ContactView {
            name: self.name.take(),
            email: self.email.take(),
            phone: self.phone.take(),
            external_id: self.external_id.take(),
            source_channel: self.source_channel.take(),
            language: self.language.take().unwrap_or_default(),
            timezone: self.timezone.take(),
            tags: self
                .tags
                .take()
                .into_iter()
                .flatten()
                .collect::<BTreeSet<_>>(),
            profile_picture_url: self.profile_picture_url.take(),
            profile_picture_fetched_at: utc(self.profile_picture_fetched_at),
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            deleted_at: utc(self.deleted_at),
            forgotten_at: utc(self.forgotten_at),
        }
    }

    fn set_view(&mut self, view: ContactView) {
        self.name = view.name;
        self.email = view.email;
        self.phone = view.phone;
        self.external_id = view.external_id;
        self.source_channel = view.source_channel;
        self.language = Some(view.language);
        self.timezone = view.timezone;
        self.tags = Some(view.tags.into_iter().collect());
        self.profile_picture_url = view.profile_picture_url;
        self.profile_picture_fetched_at = naive(view.profile_picture_fetched_at);
        self.created_at = naive(view.created_at);
        self.updated_at = naive(view.updated_at);
        self.deleted_at = naive(view.deleted_at);
        self.forgotten_at = naive(view.forgotten_at);
    }
}

/// The fold: one event into the contact's row. Pure.
pub fn fold(record: &mut ContactRecord, envelope: &EventEnvelope, event: &DomainEvent) {
    match event {
        DomainEvent::Contact(e) => {
            let mut view = record.take_view();
            view.apply(e, envelope.occurred_at);
            record.set_view(view);
            if let ContactEvent::Created { .. } = e {
                record.project_id = Some(envelope.project_id);
                record.tenant_id.clone_from(&envelope.tenant_id);
            }
            record.version = envelope.sequence_number;
        }
        DomainEvent::Session(SessionEvent::MessageRecorded { sent_at, .. }) => {
            let at = sent_at.naive_utc();
            record.first_interaction_at =
                Some(record.first_interaction_at.map_or(at, |t| t.min(at)));
            record.last_interaction_at = Some(record.last_interaction_at.map_or(at, |t| t.max(at)));
        }
        DomainEvent::Session(_) | DomainEvent::Project(_) => {}
    }
}

/// Folds events into the `contacts` rows (`rows`: the batch's, as loaded); returns the rows it
/// changed and the ids of every event it took care of (applied, filled in from the store, or
/// found already applied). The batch writes the rows ([`super::write`]).
pub async fn apply(
    conn: &mut PgConnection,
    store: &EventStore,
    keys: &KeySet,
    events: &[Decoded<'_>],
    mut rows: HashMap<Uuid, ContactRecord>,
) -> Result<(Vec<ContactRecord>, Vec<Uuid>), ProjectionError> {
    let mut dirty = BTreeSet::new();
    let mut handled = Vec::with_capacity(events.len());
    for d in events {
        let envelope = d.envelope;
        let contact_id = envelope.contact_id;
        let row = rows
            .entry(contact_id)
            .or_insert_with(|| ContactRecord::empty(envelope));
        // What this event presupposes of the contact's own stream, and is not in the row yet.
        let missing = match &d.event {
            DomainEvent::Contact(_) if envelope.sequence_number <= row.version => {
                handled.push(envelope.event_id);
                continue; // already applied
            }
            DomainEvent::Contact(_) if envelope.sequence_number > row.version + 1 => {
                store
                    .read_range(
                        &mut *conn,
                        contact_id,
                        row.version + 1,
                        envelope.sequence_number - 1,
                    )
                    .await?
            }
            DomainEvent::Session(_) if row.version == 0 => {
                store
                    .read_contact_before(&mut *conn, contact_id, 0, envelope.position)
                    .await?
            }
            _ => Vec::new(),
        };
        for earlier in &missing {
            let earlier_event = decode(keys, earlier)?;
            fold(row, earlier, &earlier_event.event);
            handled.push(earlier.event_id);
        }
        // A session event of a contact the store does not know (yet) has no row to land on.
        if matches!(d.event, DomainEvent::Contact(_)) || row.version > 0 {
            fold(row, envelope, &d.event);
            dirty.insert(contact_id);
        }
        handled.push(envelope.event_id);
    }
    let changed = dirty.iter().filter_map(|id| rows.remove(id)).collect();
    Ok((changed, handled))
}
