-- actix-tenancy: the tenant registry (feature `postgres`).
-- Applied by `PostgresRegistry::migrate()`; safe to run again. Objects are created in
-- the first schema of the connection's `search_path`.

create table if not exists tenants (
    -- The id floor every `TenantIdRule` keeps: 1 to 255 bytes of printable ASCII, no
    -- spaces. The configured rule (by default `[a-z0-9][a-z0-9_-]{0,63}`) is checked in
    -- Rust before any statement is sent.
    id          text primary key
                check (octet_length(id) between 1 and 255 and id ~ '^[\x21-\x7e]+$'),
    status      text not null default 'active'
                check (status in ('active', 'provisioning', 'maintenance', 'read_only',
                                  'offboarding', 'in_arrears', 'suspended', 'deleted')),
    tier        text not null
                check (tier ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    region      text null
                check (region ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    parent      text null references tenants (id),
    attributes  jsonb not null default '{}'::jsonb
                check (jsonb_typeof(attributes) = 'object'),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    check (parent is null or parent <> id)
);

create index if not exists tenants_parent_idx on tenants (parent) where parent is not null;
