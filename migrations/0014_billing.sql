-- 0014_billing: the stripe mirror (inventory section 1.7): subscriptions, invoices and
-- usage_meters of a billing account (billing_accounts is in 0001). No tenant_id: billing
-- belongs to the account, which may pay for several projects. Conventions: see 0001 and 0007.
-- The primary keys have no default, as the inventory gives none: the writer supplies the id.

-- subscriptions ----------------------------------------------------------------------------------

create table subscriptions (
    id                     uuid primary key,
    billing_account_id     uuid references billing_accounts (id) on delete cascade,
    -- sub_xxx; the inventory's index on it is this constraint's.
    stripe_subscription_id varchar(255) not null unique,
    stripe_price_id        varchar(255) not null,
    status                 varchar(50) not null,
    current_period_start   timestamp not null,
    current_period_end     timestamp not null,
    trial_start            timestamp,
    trial_end              timestamp,
    cancel_at              timestamp,
    canceled_at            timestamp,
    cancel_at_period_end   boolean default false,
    metadata               jsonb,
    created_at             timestamp default now(),
    updated_at             timestamp default now()
);

create index subscriptions_billing_account_id_idx on subscriptions (billing_account_id);
create index subscriptions_status_idx on subscriptions (status);
create index subscriptions_current_period_end_idx on subscriptions (current_period_end);

-- invoices ---------------------------------------------------------------------------------------

create table invoices (
    id                     uuid primary key,
    billing_account_id     uuid references billing_accounts (id) on delete cascade,
    subscription_id        uuid references subscriptions (id) on delete set null,
    -- in_xxx; the inventory's index on it is this constraint's.
    stripe_invoice_id      varchar(255) not null unique,
    stripe_subscription_id varchar(255),
    -- amounts in cents.
    amount_due             bigint not null,
    amount_paid            bigint default 0,
    amount_remaining       bigint not null,
    currency               varchar(3) not null,
    status                 varchar(50) not null,
    hosted_invoice_url     text,
    invoice_pdf            text,
    due_date               timestamp,
    paid_at                timestamp,
    metadata               jsonb,
    created_at             timestamp default now(),
    updated_at             timestamp default now()
);

create index invoices_billing_account_id_idx on invoices (billing_account_id);
create index invoices_subscription_id_idx on invoices (subscription_id);
create index invoices_status_idx on invoices (status);
create index invoices_due_date_idx on invoices (due_date);
create index invoices_paid_at_idx on invoices (paid_at);

-- usage_meters -----------------------------------------------------------------------------------

create table usage_meters (
    id                 uuid primary key,
    billing_account_id uuid references billing_accounts (id) on delete cascade,
    stripe_customer_id varchar(255) not null,
    -- mtr_xxx (stripe billing meters v2).
    stripe_meter_id    varchar(255) not null,
    metric_name        varchar(100) not null,
    event_name         varchar(100) not null,
    quantity           bigint default 0,
    period_start       timestamp not null,
    period_end         timestamp not null,
    last_reported_at   timestamp,
    metadata           jsonb,
    created_at         timestamp default now(),
    updated_at         timestamp default now()
);

create index usage_meters_billing_account_id_idx on usage_meters (billing_account_id);
create index usage_meters_stripe_customer_id_idx on usage_meters (stripe_customer_id);
create index usage_meters_stripe_meter_id_idx on usage_meters (stripe_meter_id);
create index usage_meters_billing_account_id_metric_name_idx on usage_meters (billing_account_id, metric_name);
create index usage_meters_period_idx on usage_meters (period_start, period_end);
create index usage_meters_last_reported_at_idx on usage_meters (last_reported_at);
