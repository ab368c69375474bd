-- 0011_message_processing: what happens to inbound messages before an ai agent sees them
-- (inventory sections 1.3, 1.4): message_groups (the debouncer gathers rapid messages),
-- message_enrichments (transcription, ocr, document parsing of their media) and
-- agent_ai_interactions (a group's content sent to an ai agent, and its answer).
-- Conventions: see 0001 and 0007.

-- message_groups ---------------------------------------------------------------------------------

create table message_groups (
    -- no default in the inventory: the debouncer names its group.
    id           uuid primary key,
    -- contact, channel and session by value: the inventory gives these no foreign key (and the
    -- relationship map none either); the group lives only until it expires.
    contact_id   uuid not null,
    channel_id   uuid not null,
    session_id   uuid not null,
    tenant_id    varchar(255) not null,
    message_ids  text[] not null default '{}',
    status       varchar(50) not null default 'pending',
    started_at   timestamp not null,
    completed_at timestamp,
    expires_at   timestamp not null,
    created_at   timestamp default now(),
    updated_at   timestamp default now()
);

create index message_groups_contact_id_channel_id_idx on message_groups (contact_id, channel_id);
create index message_groups_session_id_idx on message_groups (session_id);
create index message_groups_tenant_id_idx on message_groups (tenant_id);
create index message_groups_status_idx on message_groups (status);
create index message_groups_expires_at_idx on message_groups (expires_at);

-- message_enrichments ----------------------------------------------------------------------------

-- no tenant_id in the inventory: an enrichment belongs to its message's tenant.
create table message_enrichments (
    id                 uuid primary key default gen_random_uuid(),
    message_id         uuid references messages (id) on delete cascade,
    message_group_id   uuid references message_groups (id) on delete cascade,
    content_type       varchar(50) not null
                       constraint message_enrichments_content_type_check
                       check (content_type in ('audio', 'voice', 'image', 'video', 'document')),
    -- the inventory lists "whisper, deepgram, vision, llamaparse, etc": the "etc" is the original
    -- ventros migration's ffmpeg and tesseract. Another provider needs a migration replacing
    -- this constraint.
    provider           varchar(50) not null
                       constraint message_enrichments_provider_check
                       check (provider in ('whisper', 'deepgram', 'vision', 'llamaparse', 'ffmpeg', 'tesseract')),
    media_url          text not null,
    status             varchar(50) default 'pending'
                       constraint message_enrichments_status_check
                       check (status in ('pending', 'processing', 'completed', 'failed')),
    extracted_text     text,
    metadata           jsonb,
    processing_time_ms integer,
    error              text,
    -- chat_message, profile_picture, ...: free text.
    context            varchar(50),
    created_at         timestamp default now(),
    processed_at       timestamp
);

create index message_enrichments_message_id_idx on message_enrichments (message_id);
create index message_enrichments_message_group_id_idx on message_enrichments (message_group_id);
-- the table lists "status", section 4 "status where status = 'pending'": the partial form.
create index message_enrichments_status_idx on message_enrichments (status) where status = 'pending';
create index message_enrichments_content_type_idx on message_enrichments (content_type);
create index message_enrichments_created_at_idx on message_enrichments (created_at);
-- the inventory's undescribed "priority queue index", as the original ventros migration has it:
-- pending work, most urgent content type first (a voice note before a video), then oldest.
create index message_enrichments_priority_queue_idx on message_enrichments (
    (case content_type
        when 'voice' then 10
        when 'audio' then 8
        when 'image' then 7
        when 'document' then 6
        when 'video' then 3
        else 5
    end) desc,
    created_at
) where status = 'pending';

-- agent_ai_interactions --------------------------------------------------------------------------

-- The inventory's heading also names it ai_agent_history; created under the name the
-- relationship map uses, without an alias.
create table agent_ai_interactions (
    -- "not null" without pk in the inventory, the only table so: it is the primary key, without a
    -- default (none given).
    id                   uuid primary key,
    -- no on delete rule in the inventory for group_id and channel_id: no action.
    group_id             uuid references message_groups (id),
    -- sessions and contacts are rebuilt read tables: deferrable (see 0007).
    session_id           uuid references sessions (id) deferrable initially immediate,
    contact_id           uuid references contacts (id) deferrable initially immediate,
    channel_id           uuid references channels (id),
    tenant_id            varchar(255) not null,
    concatenated_content text not null,
    message_count        bigint not null,
    enrichment_count     bigint not null,
    sent_to_ai           boolean not null default false,
    ai_response          text,
    ai_provider          varchar(50),
    ai_model             varchar(100),
    processing_time_ms   bigint,
    created_at           timestamp default now(),
    sent_at              timestamp,
    response_received_at timestamp
);

create index agent_ai_interactions_group_id_idx on agent_ai_interactions (group_id);
create index agent_ai_interactions_session_id_idx on agent_ai_interactions (session_id);
create index agent_ai_interactions_contact_id_idx on agent_ai_interactions (contact_id);
create index agent_ai_interactions_channel_id_idx on agent_ai_interactions (channel_id);
create index agent_ai_interactions_tenant_id_idx on agent_ai_interactions (tenant_id);
create index agent_ai_interactions_sent_to_ai_idx on agent_ai_interactions (sent_to_ai);
