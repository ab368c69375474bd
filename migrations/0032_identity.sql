-- 0032_identity: API keys made for one project and role, members of every role including owner,
-- and the functions through which the request logins manage them.
--
-- * user_api_keys gains (additions to the inventory, recorded by the conformance test):
--   project_id (the one project the key reaches; null for a key of the previous release, which
--   reaches every project of its user), role (the most the key may do there; null: its user's
--   role), prefix (the first characters of the key, shown in lists so a person can tell keys
--   apart; the key itself is never stored) and created_by_key (the key that made it).
-- * project_members may hold 'owner'. Every project's creator gets an owner row, so that the
--   rows alone say who may do what: removing an owner's row takes the role away. A creator with
--   no row at all (a project inserted by hand) is still its owner, as before.
-- * The request logins may not read or write users, keys or members (0023). What they need is
--   one security-definer function per operation, each bound to one project: list, create and
--   revoke keys, list, set and remove members, and record a key's use. Who may call them for
--   that project is the services' permission check; what each does to other projects is nothing.
-- * Recording a key's use (last_used) must not empty every instance's key cache: the key
--   table's notify trigger fires only for updates of the columns access depends on.

alter table user_api_keys
    add column project_id     uuid references projects (id) on delete cascade,
    add column role           varchar(50)
               constraint user_api_keys_role_check
               check (role in ('owner', 'admin', 'supervisor', 'agent', 'viewer')),
    add column prefix         text,
    add column created_by_key uuid references user_api_keys (id);

-- GET /api-keys: the project's keys that are not revoked.
create index user_api_keys_project_idx on user_api_keys (project_id, created_at)
    where deleted_at is null;

alter table project_members drop constraint project_members_role_check;
alter table project_members add constraint project_members_role_check
    check (role in ('owner', 'admin', 'supervisor', 'agent', 'viewer'));

-- The creators become owner rows (a creator's member row of the previous release gave way to
-- ownership, so it becomes owner too).
insert into project_members (project_id, agent_id, role, invited_by, invited_at)
select p.id, p.user_id::text, 'owner', p.user_id::text, coalesce(p.created_at, now() at time zone 'utc')
  from projects p
 where p.user_id is not null
on conflict (project_id, agent_id)
do update set role = 'owner', deleted_at = null, updated_at = now() at time zone 'utc';

drop trigger user_api_keys_access_changed on user_api_keys;
create trigger user_api_keys_access_changed
    after insert or delete or truncate on user_api_keys
    for each statement execute function notify_access_changed();
create trigger user_api_keys_access_changed_by_update
    after update of user_id, key_hash, active, expires_at, deleted_at, project_id, role
    on user_api_keys
    for each statement execute function notify_access_changed();

-- Authentication: as 0024, plus the key's id, role and last use, a key made for one project
-- reaching no other, and the member row deciding the role (a removed member has none).
drop function authenticate_api_key(text, uuid);

create function authenticate_api_key(p_key_hash text, p_project_id uuid)
returns table (user_id uuid, project_id uuid, tenant_id text, session_timeout_minutes bigint,
               role text, key_expires_at timestamp, key_id uuid, key_role text,
               key_last_used timestamp)
language plpgsql
stable
security definer
set search_path = public, pg_temp
as $$
begin
    return query
    select u.id, p.id, p.tenant_id::text, p.session_timeout_minutes::bigint,
           case
               when m.id is not null then case when m.deleted_at is null then m.role::text end
               when p.user_id = u.id then 'owner'
           end,
           k.expires_at, k.id, k.role::text, k.last_used
      from user_api_keys k
      join users u on u.id = k.user_id and u.deleted_at is null and coalesce(u.status, 'active') = 'active'
      left join projects p on p.id = p_project_id and p.deleted_at is null and coalesce(p.active, true)
                          and (k.project_id is null or k.project_id = p.id)
      left join project_members m on m.project_id = p.id and m.agent_id = u.id::text
     where k.key_hash = p_key_hash
       and coalesce(k.active, true)
       and k.deleted_at is null
       and (k.expires_at is null or k.expires_at > now() at time zone 'utc');
end
$$;

revoke all on function authenticate_api_key(text, uuid) from public;
grant execute on function authenticate_api_key(text, uuid) to ventros_app, ventros_projector;

-- A key's use, at most once a minute (the caller also remembers, so most requests skip this).
create function touch_api_key(p_key_id uuid)
returns void
language sql
security definer
set search_path = public, pg_temp
as $$
    update user_api_keys
       set last_used = now() at time zone 'utc'
     where id = p_key_id
       and (last_used is null or last_used < now() at time zone 'utc' - interval '1 minute')
$$;

create function list_project_api_keys(p_project_id uuid)
returns table (id uuid, user_id uuid, name text, role text, prefix text, created_at timestamp,
               last_used timestamp, expires_at timestamp, created_by_key uuid)
language sql
stable
security definer
set search_path = public, pg_temp
as $$
    select k.id, k.user_id, k.name, k.role::text, k.prefix, k.created_at, k.last_used,
           k.expires_at, k.created_by_key
      from user_api_keys k
     where k.project_id = p_project_id
       and k.deleted_at is null
     order by k.created_at, k.id
$$;

-- Makes a key for the project, unless it holds p_max_keys already (then no row).
create function create_project_api_key(p_project_id uuid, p_user_id uuid, p_name text,
                                       p_role text, p_expires_at timestamp, p_key_hash text,
                                       p_prefix text, p_created_by_key uuid, p_max_keys bigint)
returns table (id uuid, created_at timestamp)
language plpgsql
security definer
set search_path = public, pg_temp
as $$
begin
    -- Serialised per project, so that two at once cannot pass the bound together.
    perform 1 from projects p where p.id = p_project_id for update;
    if (select count(*) from user_api_keys k
         where k.project_id = p_project_id and k.deleted_at is null) >= p_max_keys then
        return;
    end if;
    return query
    insert into user_api_keys (user_id, name, key_hash, active, expires_at, created_at,
                               updated_at, project_id, role, prefix, created_by_key)
    values (p_user_id, p_name, p_key_hash, true, p_expires_at, now() at time zone 'utc',
            now() at time zone 'utc', p_project_id, p_role, p_prefix, p_created_by_key)
    returning user_api_keys.id, user_api_keys.created_at;
end
$$;

-- Revokes one of the project's keys whose role is one of p_roles (the caller's and below).
-- Answers `outcome`: 'done', 'forbidden' (its role is above the caller's; nothing changed) or
-- 'not_found' (no such key of this project, or revoked already), with the key's name and role.
create function revoke_project_api_key(p_project_id uuid, p_key_id uuid, p_roles text[])
returns table (outcome text, name text, role text)
language plpgsql
security definer
set search_path = public, pg_temp
as $$
declare
    v_name text;
    v_role text;
begin
    select k.name, k.role into v_name, v_role
      from user_api_keys k
     where k.id = p_key_id and k.project_id = p_project_id and k.deleted_at is null
       for update;
    if not found then
        return query select 'not_found'::text, null::text, null::text;
        return;
    end if;
    if v_role is not null and not (v_role = any (p_roles)) then
        return query select 'forbidden'::text, v_name, v_role;
        return;
    end if;
    update user_api_keys k
       set active = false, deleted_at = now() at time zone 'utc', updated_at = now() at time zone 'utc'
     where k.id = p_key_id;
    return query select 'done'::text, v_name, v_role;
end
$$;

create function list_project_members(p_project_id uuid)
returns table (user_id uuid, name text, email text, role text, invited_by text,
               invited_at timestamp, updated_at timestamp)
language sql
stable
security definer
set search_path = public, pg_temp
as $$
    select u.id, u.name, u.email, m.role::text, m.invited_by::text, m.invited_at, m.updated_at
      from project_members m
      join users u on u.id::text = m.agent_id and u.deleted_at is null
     where m.project_id = p_project_id
       and m.deleted_at is null
     order by m.invited_at, u.id
$$;

-- The owners of a project: its owner rows, and its creator if the creator has no row at all.
create function project_owner_count(p_project_id uuid)
returns bigint
language sql
stable
security definer
set search_path = public, pg_temp
as $$
    select (select count(*) from project_members m
             where m.project_id = p_project_id and m.role = 'owner' and m.deleted_at is null)
         + (select count(*) from projects p
             where p.id = p_project_id and p.user_id is not null
               and not exists (select 1 from project_members m
                                where m.project_id = p.id and m.agent_id = p.user_id::text))
$$;

-- A user's role in the project now (null: not a member), after locking the project's row as
-- every change of its members does: what the caller decides on it holds until it commits.
create function lock_project_member_role(p_project_id uuid, p_user_id uuid)
returns text
language plpgsql
security definer
set search_path = public, pg_temp
as $$
declare
    v_creator uuid;
    v_role text;
begin
    select p.user_id into v_creator from projects p where p.id = p_project_id for update;
    select case when m.deleted_at is null then m.role::text end into v_role
      from project_members m where m.project_id = p_project_id and m.agent_id = p_user_id::text;
    if not found and v_creator = p_user_id then
        return 'owner';
    end if;
    return v_role;
end
$$;

-- Gives a user a role on the project (adding them, or changing their role). Answers
-- `outcome`: 'unknown_user' (no such active user), 'last_owner' (the only owner would stop
-- being one; nothing changed), 'too_many' (a new member beyond p_max_members) or 'done', with
-- the role they had before (null: not a member).
-- Changes of one project's members are serialised on its row, so two owners demoting each other
-- at once cannot leave it without one.
create function set_project_member(p_project_id uuid, p_user_id uuid, p_role text,
                                   p_invited_by text, p_max_members bigint)
returns table (outcome text, previous_role text)
language plpgsql
security definer
set search_path = public, pg_temp
as $$
declare
    v_previous text;
    v_creator uuid;
begin
    select p.user_id into v_creator from projects p where p.id = p_project_id for update;
    if not exists (select 1 from users u where u.id = p_user_id and u.deleted_at is null
                                        and coalesce(u.status, 'active') = 'active') then
        return query select 'unknown_user'::text, null::text;
        return;
    end if;
    select case when m.deleted_at is null then m.role::text end into v_previous
      from project_members m where m.project_id = p_project_id and m.agent_id = p_user_id::text;
    if not found and v_creator = p_user_id then
        v_previous := 'owner';
    end if;
    if v_previous = 'owner' and p_role <> 'owner' and project_owner_count(p_project_id) <= 1 then
        return query select 'last_owner'::text, v_previous;
        return;
    end if;
    if v_previous is null
       and (select count(*) from project_members m
             where m.project_id = p_project_id and m.deleted_at is null) >= p_max_members then
        return query select 'too_many'::text, v_previous;
        return;
    end if;
    insert into project_members (project_id, agent_id, role, invited_by, invited_at)
    values (p_project_id, p_user_id::text, p_role, p_invited_by, now() at time zone 'utc')
    on conflict (project_id, agent_id)
    do update set role = excluded.role,
                  deleted_at = null,
                  invited_by = case when project_members.deleted_at is null
                                    then project_members.invited_by else excluded.invited_by end,
                  invited_at = case when project_members.deleted_at is null
                                    then project_members.invited_at else excluded.invited_at end,
                  version = project_members.version + 1,
                  updated_at = now() at time zone 'utc';
    return query select 'done'::text, v_previous;
end
$$;

-- Removes a user from the project. Answers `outcome`: 'not_member', 'last_owner' (nothing
-- changed) or 'done', with the role they had.
create function remove_project_member(p_project_id uuid, p_user_id uuid)
returns table (outcome text, previous_role text)
language plpgsql
security definer
set search_path = public, pg_temp
as $$
declare
    v_previous text;
    v_creator uuid;
    v_has_row boolean;
begin
    select p.user_id into v_creator from projects p where p.id = p_project_id for update;
    select case when m.deleted_at is null then m.role::text end, true into v_previous, v_has_row
      from project_members m where m.project_id = p_project_id and m.agent_id = p_user_id::text;
    if v_has_row is null and v_creator = p_user_id then
        v_previous := 'owner';
    end if;
    if v_previous is null then
        return query select 'not_member'::text, null::text;
        return;
    end if;
    if v_previous = 'owner' and project_owner_count(p_project_id) <= 1 then
        return query select 'last_owner'::text, v_previous;
        return;
    end if;
    -- Their keys for this project go with them: adding them again gives them no old key back.
    update user_api_keys
       set active = false, deleted_at = now() at time zone 'utc', updated_at = now() at time zone 'utc'
     where project_id = p_project_id and user_id = p_user_id and deleted_at is null;
    -- The row stays, deleted: it is what says the creator is no longer an owner.
    insert into project_members (project_id, agent_id, role, invited_by, invited_at, deleted_at)
    values (p_project_id, p_user_id::text, v_previous, p_user_id::text, now() at time zone 'utc',
            now() at time zone 'utc')
    on conflict (project_id, agent_id)
    do update set deleted_at = now() at time zone 'utc',
                  version = project_members.version + 1,
                  updated_at = now() at time zone 'utc';
    return query select 'done'::text, v_previous;
end
$$;

do $$
declare
    f text;
begin
    foreach f in array array[
        'touch_api_key(uuid)',
        'list_project_api_keys(uuid)',
        'create_project_api_key(uuid, uuid, text, text, timestamp, text, text, uuid, bigint)',
        'revoke_project_api_key(uuid, uuid, text[])',
        'lock_project_member_role(uuid, uuid)',
        'list_project_members(uuid)',
        'project_owner_count(uuid)',
        'set_project_member(uuid, uuid, text, text, bigint)',
        'remove_project_member(uuid, uuid)'
    ] loop
        execute format('revoke all on function %s from public', f);
        execute format('grant execute on function %s to ventros_app', f);
    end loop;
end
$$;
