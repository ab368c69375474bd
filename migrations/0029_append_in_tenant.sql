-- 0029_append_in_tenant: lets a group of commands be stored in one autocommit statement (no
-- BEGIN, no COMMIT round trip), and gives the check of the streams a command only read one home.
--
-- streams_moved: whether any of the streams is no longer at the version given (its last sequence
-- number; 0: no events), as the caller's login sees them (the caller's rights: row-level
-- security applies). Each stream's last event is read by walking its key backwards. Bitmap scans
-- are off for it: on a young or unanalyzed store the planner takes the tenant's rows for few and
-- ANDs the bitmap of the tenant index (every event of the tenant, from the row-level security
-- condition) with the stream's, 6 ms a check in the benchmark against 0.03 ms.
create function streams_moved(read_ids uuid[], read_versions bigint[])
    returns boolean
    language sql
    stable
    set enable_bitmapscan = off
as $$
    select exists (
        select 1
          from unnest(read_ids, read_versions) as s(id, version)
         where s.version <> coalesce((select e.sequence_number
                                        from contact_event_store e
                                       where e.aggregate_id = s.id
                                       order by e.sequence_number desc
                                       limit 1), 0))
$$;

-- enter_tenant_streams_unmoved: the append statement scans this function's result first, in a
-- materialized CTE, so before any row is inserted it has:
--   * moved the statement's implicit transaction into the tenant (transaction-local, like the
--     `set_config` a transaction of the request login starts with), so row-level security checks
--     every inserted row against it; the setting ends with the statement;
--   * checked that the streams the commands only read are still at the versions they read. A
--     stream that moved aborts the statement with SQLSTATE 40001 and nothing is written: the
--     commands decided on a stale state and are decided again.
create function enter_tenant_streams_unmoved(tenant text, read_ids uuid[], read_versions bigint[])
    returns text
    language plpgsql
as $$
begin
    perform set_config('app.current_tenant_id', tenant, true);
    if cardinality(read_ids) > 0 and streams_moved(read_ids, read_versions) then
        raise exception 'a stream a command only read has moved on since it was read'
            using errcode = 'serialization_failure';
    end if;
    return tenant;
end
$$;
