-- 0002_channel_types: the channel type catalogue (inventory section 1.9) and its first entries.
-- sessions.channel_type_id and the contact.session_opened/closed events refer to these ids.
-- The ids are part of the catalogue (stable across environments), so id is a plain bigint
-- primary key, not an identity column.

create table channel_types (
    id            bigint primary key,
    name          text not null,
    description   text,
    provider      text not null,
    configuration jsonb,
    active        boolean default true,
    created_at    timestamp,
    updated_at    timestamp,
    deleted_at    timestamp,
    constraint channel_types_name_key unique (name)
);

create index channel_types_active_idx on channel_types (active);
create index channel_types_deleted_at_idx on channel_types (deleted_at);

-- on conflict do nothing: a row an operator has already edited is left as it is.
insert into channel_types (id, name, description, provider, created_at, updated_at)
values
    (1, 'whatsapp',  'WhatsApp',         'meta',     now(), now()),
    (2, 'instagram', 'Instagram Direct', 'meta',     now(), now()),
    (3, 'email',     'E-mail',           'smtp',     now(), now()),
    (4, 'webchat',   'Web chat widget',  'ventros',  now(), now()),
    (5, 'telegram',  'Telegram',         'telegram', now(), now())
on conflict do nothing;
