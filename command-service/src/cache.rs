//! The aggregates this instance last saw committed, so that a command reads only the events
//! newer than its cached state (usually none) instead of a snapshot and the stream after it.
//!
//! An entry is never trusted to be current: every load still asks the store for the events after
//! the cached version, in the command's own transaction, and the append's unique
//! `(aggregate_id, sequence_number)` refuses a writer that raced it. So another instance's
//! writes, a lost race or an entry evicted early cost a few rows read, never a wrong decision.
//! Only committed states go in: what a transaction read, and after a commit what it wrote.
//!
//! Entries are keyed by aggregate id and remember their tenant: an id asked for by another tenant
//! is a miss, and that tenant's own (row-level secured) read decides what it sees.

use dashmap::DashMap;
use event_model::{Aggregate, Contact, Session};
use uuid::Uuid;

/// A cached state and the tenant it belongs to.
#[doc(hidden)]
pub struct Entry<A> {
    tenant_id: String,
    state: A,
}

/// A bounded map per aggregate type. When one grows past its capacity, a tenth of it is dropped
/// (arbitrary entries: a miss only costs a snapshot read).
pub struct AggregateCache {
    capacity: usize,
    contacts: DashMap<Uuid, Entry<Contact>>,
    sessions: DashMap<Uuid, Entry<Session>>,
}

/// An aggregate type the cache holds.
pub trait Cached: Aggregate + Clone + Send + Sync + 'static {
    #[doc(hidden)]
    fn entries(cache: &AggregateCache) -> &DashMap<Uuid, Entry<Self>>;
}

impl Cached for Contact {
    fn entries(cache: &AggregateCache) -> &DashMap<Uuid, Entry<Self>> {
        &cache.contacts
    }
}

impl Cached for Session {
    fn entries(cache: &AggregateCache) -> &DashMap<Uuid, Entry<Self>> {
        &cache.sessions
    }
}

impl AggregateCache {
    /// A cache of up to `capacity` aggregates of each type; 0 turns it off.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            contacts: DashMap::new(),
            sessions: DashMap::new(),
        }
    }

    /// The committed state last seen of `id` in `tenant_id`, if any.
    pub fn get<A: Cached>(&self, tenant_id: &str, id: Uuid) -> Option<A> {
        A::entries(self)
            .get(&id)
            .filter(|entry| entry.tenant_id == tenant_id)
            .map(|entry| entry.state.clone())
    }

    /// Remembers a committed state; an older one than the entry's is ignored.
    pub fn put<A: Cached>(&self, tenant_id: &str, id: Uuid, state: &A) {
        if self.capacity == 0 {
            return;
        }
        let entries = A::entries(self);
        if entries.len() >= self.capacity {
            let mut seen = 0usize;
            entries.retain(|_, _| {
                seen += 1;
                !seen.is_multiple_of(10)
            });
        }
        match entries.entry(id) {
            dashmap::Entry::Occupied(mut occupied) => {
                let entry = occupied.get_mut();
                if entry.tenant_id != tenant_id || entry.state.version() <= state.version() {
                    *entry = Entry {
                        tenant_id: tenant_id.to_owned(),
                        state: state.clone(),
                    };
                }
            }
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(Entry {
                    tenant_id: tenant_id.to_owned(),
                    state: state.clone(),
                });
            }
        }
    }

    /// Entries held, of both types.
    pub fn len(&self) -> usize {
        self.contacts.len() + self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_model::Snapshot;

    fn contact_at(version: i64) -> Contact {
        Contact {
            version,
            ..Contact::default()
        }
    }

    #[test]
    fn another_tenant_misses_and_older_states_do_not_replace_newer() {
        let cache = AggregateCache::new(100);
        let id = Uuid::now_v7();
        cache.put("a", id, &contact_at(3));
        assert_eq!(cache.get::<Contact>("a", id).map(|c| c.version()), Some(3));
        assert!(cache.get::<Contact>("b", id).is_none());
        assert!(cache.get::<Session>("a", id).is_none(), "types do not mix");

        cache.put("a", id, &contact_at(2));
        assert_eq!(cache.get::<Contact>("a", id).map(|c| c.version()), Some(3));
        cache.put("a", id, &contact_at(5));
        assert_eq!(cache.get::<Contact>("a", id).map(|c| c.version()), Some(5));
    }

    #[test]
    fn stays_within_its_capacity_and_zero_turns_it_off() {
        let cache = AggregateCache::new(50);
        for _ in 0..1_000 {
            cache.put("a", Uuid::now_v7(), &contact_at(1));
        }
        assert!(cache.len() <= 50, "{} entries", cache.len());
        assert!(!cache.is_empty());

        let off = AggregateCache::new(0);
        off.put("a", Uuid::now_v7(), &contact_at(1));
        assert!(off.is_empty());
    }
}
