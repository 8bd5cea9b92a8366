//! The cache's memory: entries by key, bounded by bytes, least recently used evicted first.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

/// Something stored with its size in bytes.
pub trait Weighed {
    fn size(&self) -> u64;
}

/// A byte-bounded LRU map. Each use of an entry moves it to the back of the line; inserting
/// past the bound evicts from the front.
pub struct Lru<V> {
    max_bytes: u64,
    bytes: u64,
    tick: u64,
    entries: HashMap<String, (u64, Arc<V>)>,
    /// Use order: tick of last use → key.
    order: BTreeMap<u64, String>,
}

impl<V: Weighed> Lru<V> {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            bytes: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The entry under `key`, marked as just used.
    pub fn get(&mut self, key: &str) -> Option<Arc<V>> {
        self.tick += 1;
        let tick = self.tick;
        let (t, v) = self.entries.get_mut(key)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, key.to_string());
        Some(v.clone())
    }

    /// Stores `value` under `key` (replacing what was there), then evicts the least recently
    /// used entries until the total fits. A value larger than the whole bound is not kept.
    pub fn insert(&mut self, key: String, value: V) {
        self.remove(&key);
        let size = value.size();
        if size > self.max_bytes {
            return;
        }
        self.tick += 1;
        self.bytes += size;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (self.tick, Arc::new(value)));
        while self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, v)) = self.entries.remove(&oldest) {
                self.bytes -= v.size();
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        if let Some((t, v)) = self.entries.remove(key) {
            self.order.remove(&t);
            self.bytes -= v.size();
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Blob(u64);
    impl Weighed for Blob {
        fn size(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_bound_holds() {
        let mut lru = Lru::new(100);
        lru.insert("a".into(), Blob(40));
        lru.insert("b".into(), Blob(40));
        assert!(lru.get("a").is_some()); // b is now the oldest
        lru.insert("c".into(), Blob(40));
        assert!(lru.get("b").is_none(), "b was evicted");
        assert!(lru.get("a").is_some() && lru.get("c").is_some());
        assert_eq!(lru.bytes(), 80);
    }

    #[test]
    fn replacing_and_oversized_values_keep_the_count_right() {
        let mut lru = Lru::new(100);
        lru.insert("a".into(), Blob(60));
        lru.insert("a".into(), Blob(30));
        assert_eq!((lru.len(), lru.bytes()), (1, 30));
        lru.insert("huge".into(), Blob(101));
        assert!(lru.get("huge").is_none());
        assert_eq!(lru.bytes(), 30);
        for i in 0..10_000 {
            lru.insert(format!("k{i}"), Blob(7));
            assert!(lru.bytes() <= 100);
        }
        assert_eq!(lru.len(), 14);
    }
}
