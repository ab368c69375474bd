-- 0009_messages: the central message store (inventory section 1.2). Not the event-sourced
-- session metrics (sessions, from contact_event_store): the messages themselves, with content,
-- delivery state and provider ids. Conventions: see 0001 and 0007.

create table messages (
    id                 uuid primary key default gen_random_uuid(),
    tenant_id          text not null,
    -- quoted: timestamp is a type name too (the catalog stores the plain name).
    "timestamp"        timestamp not null,
    user_id            uuid not null,
    -- no on delete rule in the inventory for project_id and chat_id: no action.
    project_id         uuid references projects (id),
    channel_type_id    bigint,
    from_me            boolean default false,
    -- restrict, as the inventory says: a channel with messages cannot be deleted.
    channel_id         uuid references channels (id) on delete restrict,
    chat_id            uuid references chats (id),
    -- contacts and sessions are rebuilt read tables: deferrable (see 0007).
    contact_id         uuid references contacts (id) deferrable initially immediate,
    session_id         uuid references sessions (id) deferrable initially immediate,
    content_type       text not null default 'text',
    text               text,
    media_url          text,
    media_mimetype     text,
    channel_message_id text,
    -- another message's id; no foreign key in the inventory.
    reply_to_id        uuid,
    status             text default 'sent',
    language           text,
    agent_id           uuid,
    metadata           jsonb,
    mentions           text[],
    delivered_at       timestamp,
    read_at            timestamp,
    created_at         timestamp,
    updated_at         timestamp,
    deleted_at         timestamp
);

-- The inventory says only "20+ indexes on all major fields including composite indexes", and
-- section 4 names the foreign keys, the gin index on metadata and (tenant_id, contact_id),
-- (tenant_id, session_id). The rest is the original ventros schema's set; 24 with the primary key.
create index messages_tenant_id_idx on messages (tenant_id);
create index messages_timestamp_idx on messages ("timestamp");
create index messages_user_id_idx on messages (user_id);
create index messages_project_id_idx on messages (project_id);
create index messages_channel_type_id_idx on messages (channel_type_id);
create index messages_from_me_idx on messages (from_me);
create index messages_channel_id_idx on messages (channel_id);
create index messages_chat_id_idx on messages (chat_id);
create index messages_contact_id_idx on messages (contact_id);
create index messages_session_id_idx on messages (session_id);
create index messages_content_type_idx on messages (content_type);
create index messages_channel_message_id_idx on messages (channel_message_id);
create index messages_status_idx on messages (status);
create index messages_agent_id_idx on messages (agent_id);
create index messages_delivered_at_idx on messages (delivered_at);
create index messages_read_at_idx on messages (read_at);
create index messages_created_at_idx on messages (created_at);
create index messages_updated_at_idx on messages (updated_at);
create index messages_deleted_at_idx on messages (deleted_at);
create index messages_metadata_idx on messages using gin (metadata);
create index messages_tenant_id_contact_id_idx on messages (tenant_id, contact_id);
create index messages_tenant_id_session_id_idx on messages (tenant_id, session_id);
create index messages_tenant_id_timestamp_idx on messages (tenant_id, "timestamp");
