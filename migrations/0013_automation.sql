-- 0013_automation: rules and outbound campaigns (inventory section 1.6): automations (pipeline
-- rules), broadcasts (one message to a list) with their per-contact executions, sequences (drip
-- series) with steps and enrolments, campaigns with steps and enrolments.
-- Conventions: see 0001 and 0007. Two more here:
-- * the statuses these tables describe (draft, scheduled, running, ...) are not marked check by
--   the inventory, so they get no check constraint (one only where the inventory says check).
-- * broadcasts.list_id and the executions' and enrolments' contact_id have no foreign key: the
--   table sections list none (the relationship map draws contacts -> executions/enrolments, but
--   the table sections are taken as the specification).

-- automations ------------------------------------------------------------------------------------

-- "formerly automation_rules" in the inventory: created under its current name only.
create table automations (
    id              uuid primary key default gen_random_uuid(),
    automation_type varchar(100) default 'pipeline_automation',
    pipeline_id     uuid references pipelines (id) on delete set null,
    tenant_id       varchar(255) not null,
    name            varchar(255) not null,
    description     text,
    trigger         varchar(100) not null,
    conditions      jsonb default '[]',
    actions         jsonb default '[]',
    priority        bigint default 0,
    enabled         boolean default true,
    schedule        jsonb,
    last_executed   timestamp,
    next_execution  timestamp,
    -- not null without a default, as the inventory has them: the writer sets both.
    created_at      timestamp not null,
    updated_at      timestamp not null
);

create index automations_pipeline_id_idx on automations (pipeline_id);
create index automations_tenant_id_idx on automations (tenant_id);
create index automations_trigger_idx on automations (trigger);
create index automations_priority_idx on automations (priority);
create index automations_enabled_idx on automations (enabled);
create index automations_last_executed_idx on automations (last_executed);
create index automations_next_execution_idx on automations (next_execution);
create index automations_automation_type_idx on automations (automation_type);
-- section 4's composite: the enabled rules of a pipeline for a trigger.
create index automations_pipeline_id_trigger_idx on automations (pipeline_id, trigger) where enabled = true;

-- broadcasts -------------------------------------------------------------------------------------

create table broadcasts (
    id               uuid primary key default gen_random_uuid(),
    tenant_id        varchar(255) not null,
    name             varchar(255) not null,
    -- a contact_lists id, by value (see the header).
    list_id          uuid not null,
    message_template jsonb not null,
    status           varchar(50) default 'draft',
    scheduled_for    timestamp,
    started_at       timestamp,
    completed_at     timestamp,
    total_contacts   integer default 0,
    sent_count       integer default 0,
    failed_count     integer default 0,
    pending_count    integer default 0,
    -- messages per minute.
    rate_limit       integer default 0,
    version          integer not null default 1,
    created_at       timestamp default current_timestamp,
    updated_at       timestamp default current_timestamp
);

create index broadcasts_tenant_id_idx on broadcasts (tenant_id);
create index broadcasts_list_id_idx on broadcasts (list_id);
create index broadcasts_status_idx on broadcasts (status);
-- the table lists scheduled_for, section 4 "scheduled_for where status = 'scheduled'": the
-- partial form (the scheduler only looks for broadcasts still to start).
create index broadcasts_scheduled_for_idx on broadcasts (scheduled_for) where status = 'scheduled';

-- broadcast_executions ---------------------------------------------------------------------------

-- no tenant_id in the inventory: an execution belongs to its broadcast's tenant.
create table broadcast_executions (
    id           uuid primary key default gen_random_uuid(),
    broadcast_id uuid references broadcasts (id) on delete cascade,
    contact_id   uuid not null,
    status       varchar(50) default 'pending',
    message_id   uuid,
    error        text,
    sent_at      timestamp,
    created_at   timestamp default current_timestamp,
    updated_at   timestamp default current_timestamp
);

create index broadcast_executions_broadcast_id_idx on broadcast_executions (broadcast_id);
create index broadcast_executions_contact_id_idx on broadcast_executions (contact_id);
create index broadcast_executions_status_idx on broadcast_executions (status);
create index broadcast_executions_broadcast_id_status_idx on broadcast_executions (broadcast_id, status);

-- sequences --------------------------------------------------------------------------------------

create table sequences (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       varchar(255) not null,
    name            varchar(255) not null,
    description     text,
    status          varchar(50) default 'draft',
    trigger_type    varchar(50) not null,
    trigger_data    jsonb,
    exit_on_reply   boolean default true,
    total_enrolled  integer default 0,
    active_count    integer default 0,
    completed_count integer default 0,
    exited_count    integer default 0,
    version         integer not null default 1,
    created_at      timestamp default current_timestamp,
    updated_at      timestamp default current_timestamp
);

create index sequences_tenant_id_idx on sequences (tenant_id);
create index sequences_status_idx on sequences (status);
create index sequences_trigger_type_idx on sequences (trigger_type);

-- sequence_steps ---------------------------------------------------------------------------------

create table sequence_steps (
    id               uuid primary key default gen_random_uuid(),
    sequence_id      uuid references sequences (id) on delete cascade,
    -- quoted: order is a reserved word.
    "order"          integer not null,
    name             varchar(255) not null,
    delay_amount     integer not null,
    -- minutes, hours, days (described, not marked check).
    delay_unit       varchar(20) not null,
    message_template jsonb not null,
    conditions       jsonb,
    created_at       timestamp default current_timestamp,
    -- the inventory's unique (sequence_id, order) index is this constraint's.
    constraint sequence_steps_sequence_id_order_key unique (sequence_id, "order")
);

create index sequence_steps_sequence_id_idx on sequence_steps (sequence_id);

-- sequence_enrollments ---------------------------------------------------------------------------

create table sequence_enrollments (
    id                 uuid primary key default gen_random_uuid(),
    sequence_id        uuid references sequences (id) on delete cascade,
    contact_id         uuid not null,
    status             varchar(50) default 'active',
    current_step_order integer default 0,
    next_scheduled_at  timestamp,
    exited_at          timestamp,
    exit_reason        text,
    completed_at       timestamp,
    enrolled_at        timestamp default current_timestamp,
    updated_at         timestamp default current_timestamp
);

create index sequence_enrollments_sequence_id_idx on sequence_enrollments (sequence_id);
create index sequence_enrollments_contact_id_idx on sequence_enrollments (contact_id);
create index sequence_enrollments_status_idx on sequence_enrollments (status);
create index sequence_enrollments_next_scheduled_at_idx on sequence_enrollments (next_scheduled_at);
-- "unique where active": one active enrolment per contact and sequence; a contact may enrol
-- again once the previous enrolment has completed or exited. A partial unique index (a unique
-- constraint cannot be partial).
create unique index sequence_enrollments_active_key on sequence_enrollments (sequence_id, contact_id)
    where status = 'active';

-- campaigns --------------------------------------------------------------------------------------

create table campaigns (
    id                uuid primary key default gen_random_uuid(),
    tenant_id         varchar(255) not null,
    name              varchar(255) not null,
    description       text,
    status            varchar(50) default 'draft',
    goal_type         varchar(50) not null,
    goal_value        integer default 0,
    contacts_reached  integer default 0,
    conversions_count integer default 0,
    start_date        timestamp,
    end_date          timestamp,
    version           integer not null default 1,
    created_at        timestamp default current_timestamp,
    updated_at        timestamp default current_timestamp
);

create index campaigns_tenant_id_idx on campaigns (tenant_id);
create index campaigns_status_idx on campaigns (status);

-- campaign_steps ---------------------------------------------------------------------------------

create table campaign_steps (
    id          uuid primary key default gen_random_uuid(),
    campaign_id uuid references campaigns (id) on delete cascade,
    "order"     integer not null,
    name        varchar(255) not null,
    type        varchar(50) not null,
    config      jsonb not null,
    conditions  jsonb,
    created_at  timestamp default current_timestamp
);

create index campaign_steps_campaign_id_idx on campaign_steps (campaign_id);
-- unlike sequence_steps', the inventory does not call this one unique: a plain index.
create index campaign_steps_campaign_id_order_idx on campaign_steps (campaign_id, "order");

-- campaign_enrollments ---------------------------------------------------------------------------

create table campaign_enrollments (
    id                 uuid primary key default gen_random_uuid(),
    campaign_id        uuid references campaigns (id) on delete cascade,
    contact_id         uuid not null,
    status             varchar(50) default 'active',
    current_step_order integer default 0,
    next_scheduled_at  timestamp,
    exited_at          timestamp,
    exit_reason        text,
    completed_at       timestamp,
    enrolled_at        timestamp default current_timestamp,
    updated_at         timestamp default current_timestamp
);

create index campaign_enrollments_campaign_id_idx on campaign_enrollments (campaign_id);
create index campaign_enrollments_contact_id_idx on campaign_enrollments (contact_id);
create index campaign_enrollments_status_idx on campaign_enrollments (status);
create index campaign_enrollments_next_scheduled_at_idx on campaign_enrollments (next_scheduled_at);
-- as for sequence_enrollments: one active enrolment per contact and campaign.
create unique index campaign_enrollments_active_key on campaign_enrollments (campaign_id, contact_id)
    where status = 'active';
