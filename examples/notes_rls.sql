-- An example of row-level security keyed on the resolved tenant (feature `postgres`).
-- Run it after `PostgresRegistry::migrate()`. Every query on `notes` made inside a
-- `TenantDb::begin` / `begin_for_tenant` transaction sees the rows of that tenant only;
-- a query with no tenant set sees none.
--
-- RLS does not apply to superusers, to roles with BYPASSRLS, or (without FORCE) to the
-- table owner: the application must query as an ordinary role. `TenantDb::with_role`
-- switches to one (`set local role`) inside each transaction.

create table if not exists notes (
    id         bigserial primary key,
    tenant_id  text not null default current_setting('app.tenant_id', true)
               references tenants (id) on delete cascade,
    body       text not null
);

create index if not exists notes_tenant_idx on notes (tenant_id);

alter table notes enable row level security;
alter table notes force row level security;

drop policy if exists notes_tenant_isolation on notes;
create policy notes_tenant_isolation on notes
    using (tenant_id = current_setting('app.tenant_id', true))
    with check (tenant_id = current_setting('app.tenant_id', true));
