-- 0031_session_events_by_contact: the index that finds a contact's sessions' events by the
-- contact id in their metadata holds session events only. Every statement that reads it asks
-- for `aggregate_type = 'session'` (a contact's history, its erasure, its snapshots' deletion,
-- and the interaction times of a contact as of a version), and a contact's own events are
-- found by `aggregate_id`: indexing them too cost a write per contact event and made a
-- long-lived contact's lookups walk its whole stream. It is rebuilt here (an exclusive lock on
-- the store while it builds: on a large store, run it in a quiet window).

drop index contact_event_store_metadata_contact_idx;
create index contact_event_store_session_contact_idx on contact_event_store
    ((metadata->>'contact_id'), position) where aggregate_type = 'session';
