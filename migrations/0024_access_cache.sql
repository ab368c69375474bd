-- 0024_access_cache: the services keep what authenticate_api_key answered for keys in use, so a
-- request costs no lookup, and must hear at once when that answer may have changed.
--
-- * Any insert, update, delete or truncate of users, user_api_keys, projects or project_members
--   notifies ventros_access_changed (once per statement, delivered at commit); each service
--   instance listens and empties its cache. These tables change rarely (a key issued or
--   revoked, a member added), so "something changed" is enough, and no row is missed.
-- * authenticate_api_key also answers the key's expiry: a cached key is never served past it.
--   Same lookup, same rules otherwise (0019); the result type changes, so the function is
--   dropped and created again, with its grants.

create function notify_access_changed() returns trigger
language plpgsql
as $$
begin
    perform pg_notify('ventros_access_changed', '');
    return null;
end
$$;

create trigger users_access_changed
    after insert or update or delete or truncate on users
    for each statement execute function notify_access_changed();
create trigger user_api_keys_access_changed
    after insert or update or delete or truncate on user_api_keys
    for each statement execute function notify_access_changed();
create trigger projects_access_changed
    after insert or update or delete or truncate on projects
    for each statement execute function notify_access_changed();
create trigger project_members_access_changed
    after insert or update or delete or truncate on project_members
    for each statement execute function notify_access_changed();

drop function authenticate_api_key(text, uuid);

create function authenticate_api_key(p_key_hash text, p_project_id uuid)
returns table (user_id uuid, project_id uuid, tenant_id text, session_timeout_minutes bigint,
               role text, key_expires_at timestamp)
language plpgsql
stable
security definer
set search_path = public, pg_temp
as $$
begin
    return query
    select u.id, p.id, p.tenant_id::text, p.session_timeout_minutes::bigint,
           case when p.user_id = u.id then 'owner' else m.role::text end,
           k.expires_at
      from user_api_keys k
      join users u on u.id = k.user_id and u.deleted_at is null and coalesce(u.status, 'active') = 'active'
      left join projects p on p.id = p_project_id and p.deleted_at is null and coalesce(p.active, true)
      left join project_members m on m.project_id = p.id and m.agent_id = u.id::text and m.deleted_at is null
     where k.key_hash = p_key_hash
       and coalesce(k.active, true)
       and k.deleted_at is null
       and (k.expires_at is null or k.expires_at > now() at time zone 'utc');
end
$$;

revoke all on function authenticate_api_key(text, uuid) from public;
grant execute on function authenticate_api_key(text, uuid) to ventros_app, ventros_projector;
