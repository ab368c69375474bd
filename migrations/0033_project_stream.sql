-- 0033_project_stream: a project's own stream in the event store, the audit of who may call it.
--
-- Every change to a project's keys and members (0032) appends a `project.*` event to the
-- stream whose id is the project's, in the change's transaction, with its outbox row: the audit
-- log (`domain_event_logs`, `/event-log`) gets it the way it gets every event, and a rebuild
-- from the store keeps it. The store's aggregate_type check grows a third value.
--
-- The stream's next sequence number is read and appended under a lock on the project's row, so
-- that two changes of one project at once queue rather than collide; the request login may not
-- lock projects itself (no UPDATE), so one security-definer function takes the lock and nothing
-- else.

alter table contact_event_store drop constraint contact_event_store_aggregate_type_check;
alter table contact_event_store add constraint contact_event_store_aggregate_type_check
    check (aggregate_type in ('contact', 'session', 'project'));

create function lock_project_access(p_project_id uuid)
returns void
language sql
security definer
set search_path = public, pg_temp
as $$
    select 1 from projects where id = p_project_id for update
$$;

revoke all on function lock_project_access(uuid) from public;
grant execute on function lock_project_access(uuid) to ventros_app;

-- The request paths may also run as the workers' login (a deployment whose DATABASE_URL is a
-- BYPASSRLS role; the tenancy probe runs them so): it calls what ventros_app calls, as it does
-- authenticate_api_key.
do $$
declare
    f text;
begin
    foreach f in array array[
        'lock_project_access(uuid)',
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
        execute format('grant execute on function %s to ventros_projector', f);
    end loop;
end
$$;
