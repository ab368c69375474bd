-- 0022_tenant_pages: GET /sessions and GET /event-log page by id within a tenant
-- (`where tenant_id = $1 ... order by id limit n`). Without an index that starts with the tenant
-- and goes on with the id, each page either sorts all of the tenant's rows or walks the whole
-- table's primary key filtering out the other tenants'. contacts has had its own since 0003.
create index sessions_tenant_id_id_idx on sessions (tenant_id, id);
create index domain_event_logs_tenant_id_id_idx on domain_event_logs (tenant_id, id);
