-- 0026_unread_read_model_indexes: the read tables' indexes that no statement reads, taken off the
-- projection's write path. A projected event rewrites its contact's or session's row: a new
-- tags list, an activity time or a message count changes indexed columns (never a HOT update), so
-- every index of the table gets a new entry for every event, and a sessions row had 19 of them,
-- five GIN. Each index below was written on every event and read by nothing (the inventory lists
-- them; the conformance test records the choice in inventory.json, "unread-indexes").
--
-- What the statements read: contact pages by (tenant_id, id) and (tenant_id, updated_at, id),
-- the e-mail, phone and external id filters, the tag filter (GIN); session pages by (tenant_id,
-- id) and (tenant_id, started_at, id), the contact filter ((tenant_id, contact_id)), the agent
-- filter (GIN), the sweeper's active sessions by last activity, and sessions by contact_id for
-- the foreign key from contacts. A name search is an ilike, which no btree on name serves; the
-- status and channel filters go with the tenant's pages (two statuses, a handful of channels: an
-- index on either would not be chosen), and nothing searches by project, pipeline, deletion, end,
-- creation or update time alone, or by a session's topics, next steps, key entities or outcome
-- tags.

drop index contacts_project_id_idx;
drop index contacts_tenant_id_idx;
drop index contacts_name_idx;
drop index contacts_created_at_idx;
drop index contacts_updated_at_idx;
drop index contacts_deleted_at_idx;

drop index sessions_tenant_id_idx;
drop index sessions_pipeline_id_idx;
drop index sessions_status_idx;
drop index sessions_channel_type_id_idx;
drop index sessions_started_at_idx;
drop index sessions_ended_at_idx;
drop index sessions_last_activity_at_idx;
drop index sessions_deleted_at_idx;
drop index sessions_topics_idx;
drop index sessions_next_steps_idx;
drop index sessions_key_entities_idx;
drop index sessions_outcome_tags_idx;
