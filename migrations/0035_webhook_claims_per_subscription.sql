-- 0035_webhook_claims_per_subscription: the sender claims each subscription's due deliveries in
-- turn (at most a few in flight per subscription), so it reads them by subscription, due first.
-- The index it replaces ordered every subscription's deliveries together: a claim read the whole
-- due backlog to share it out.
create index webhook_deliveries_claim_idx
    on webhook_deliveries (subscription_id, next_attempt_at, position)
    where status = 'pending';
drop index webhook_deliveries_due_idx;
