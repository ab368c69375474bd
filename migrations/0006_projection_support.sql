-- 0006_projection_support: what the projections and the replay tool need on top of 0003/0004.

-- A rebuild of the contacts projection alone deletes and rewrites every contact row while the
-- sessions rows that reference them stay; making the foreign key deferrable lets it run in one
-- transaction with `set constraints all deferred`, the check happening at commit. Ordinary
-- writes still check it at once (initially immediate).
alter table sessions alter constraint sessions_contact_id_fkey deferrable initially immediate;

-- Catch-up readers walk the store in (transaction_id, position) order, only below
-- pg_snapshot_xmin: every transaction below the horizon is finished, and every later one will
-- have a larger transaction id, so that order never has a row appear behind the reader. (Walking
-- position alone can skip a row: positions are handed out at insert, and concurrent inserts
-- interleave them.)
create index contact_event_store_transaction_position_idx on contact_event_store (transaction_id, position);

-- The contact history read (a contact's events and its sessions'): session events carry their
-- contact in metadata.
create index contact_event_store_metadata_contact_idx on contact_event_store ((metadata->>'contact_id'), position);
