-- 0030_messages_read_model: `messages` becomes a read model, the projection of
-- `session.message_recorded` (projection-service writes it as ventros_projector, like contacts and
-- sessions; one row per message, its id the event's id). The request login only reads it.
--
-- Its indexes are the ones a statement reads: each of the inventory's 23 is written on every
-- projected message, and no query, foreign key check or sweeper reads 20 of them. Kept: the
-- primary key (replies, the insert's conflict target), channel_id and chat_id (the foreign keys
-- from channels and chats: deleting one of those checks its messages). Added: a conversation's
-- page by session and by contact, oldest first ((session_id | contact_id, "timestamp", id), which
-- also serve the foreign keys to sessions and contacts), and the full-text search over the text
-- (GIN on its `simple` tsvector: every language alike, no stemming).

revoke insert, update, delete, truncate on messages from ventros_app;

drop index messages_tenant_id_idx, messages_timestamp_idx, messages_user_id_idx,
    messages_project_id_idx, messages_channel_type_id_idx, messages_from_me_idx,
    messages_contact_id_idx, messages_session_id_idx, messages_content_type_idx,
    messages_channel_message_id_idx, messages_status_idx, messages_agent_id_idx,
    messages_delivered_at_idx, messages_read_at_idx, messages_created_at_idx,
    messages_updated_at_idx, messages_deleted_at_idx, messages_metadata_idx,
    messages_tenant_id_contact_id_idx, messages_tenant_id_session_id_idx,
    messages_tenant_id_timestamp_idx;

create index messages_session_timeline_idx on messages (session_id, "timestamp", id);
create index messages_contact_timeline_idx on messages (contact_id, "timestamp", id);
create index messages_text_search_idx on messages
    using gin (to_tsvector('simple', coalesce(text, '')));
