-- 0027_unread_processed_events_index: processed_events' index on consumer_name, taken off the
-- projection's write path. Every projected event inserts one processed_events row, and every row
-- of the live path carries the same consumer_name ("contacts+sessions+domain_event_logs"), so all
-- the workers' inserts went to the same leaf of this index. No statement reads it: rows are read
-- by event_id (the unique key), pruned by processed_at, and counted per projection with
-- `name = any(string_to_array(consumer_name, '+'))`, which no btree on the column serves. The
-- conformance test records the choice (inventory.json, "unread-indexes").

drop index processed_events_consumer_name_idx;
