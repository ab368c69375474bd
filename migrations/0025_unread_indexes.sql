-- 0025_unread_indexes: indexes that no statement of the services or the replay tool reads, taken
-- off the write path. Every event inserts a row into contact_event_store, outbox_events and
-- domain_event_logs, and the relay updates its outbox row once published (a change of status:
-- never a HOT update, so every index of the table gets a new entry). Each index below was
-- written on every event and read by nothing; the inventory lists them, the conformance test
-- records the choice (inventory.json, "unread-indexes").
--
-- Kept: every index a query plan uses (the store's keys, tenant, transaction order, contact and
-- v1 lookups; the outbox's pending, status and order indexes; the audit log's (tenant_id, id)
-- pages, aggregate_id and occurred_at filters), and the store's correlation_id index for an
-- operator following one request.

-- contact_event_store: no statement searches event data by content (bench scenario 6 measured
-- the GIN index alone at 2-12 % of the insert rate) or by event type and time.
drop index contact_event_store_event_data_idx;
drop index contact_event_store_event_type_occurred_at_idx;

-- outbox_events: read only by the relay (pending rows in seq order), the backlog gauges
-- (status) and retention (seq, status): never by aggregate, tenant, type, retries or metadata.
drop index outbox_events_aggregate_idx;
drop index outbox_events_tenant_id_idx;
drop index outbox_events_event_type_idx;
drop index outbox_events_retry_idx;
drop index outbox_events_metadata_idx;
drop index outbox_events_correlation_id_idx;
drop index outbox_events_saga_type_idx;

-- domain_event_logs: GET /event-log always filters by tenant and pages by id
-- ((tenant_id, id), 0022), optionally by aggregate_id or an occurred_at range; an aggregate or
-- event type filter reads the tenant's pages (two aggregate types, a score of event types: an
-- index on either would not be chosen). Nothing reads by project, user, publication or
-- deletion time.
drop index domain_event_logs_aggregate_type_idx;
drop index domain_event_logs_event_type_idx;
drop index domain_event_logs_tenant_id_idx;
drop index domain_event_logs_project_id_idx;
drop index domain_event_logs_user_id_idx;
drop index domain_event_logs_published_at_idx;
drop index domain_event_logs_deleted_at_idx;
