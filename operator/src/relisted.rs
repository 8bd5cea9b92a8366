//! An index kept from a watch's events, rebuilt on every (re)listing.
//!
//! A watch starts (and restarts after a gap) with a full listing; objects deleted during the
//! gap appear in no event, so the listing builds a new index that replaces the old one only
//! when complete. Until then the old one answers.

use kube::runtime::watcher;

/// The index `T` and the listing in progress.
#[derive(Default)]
pub struct Relisted<T> {
    pub live: T,
    listing: Option<T>,
    /// A first listing completed.
    pub listed: bool,
}

impl<T: Default> Relisted<T> {
    /// Applies one watch event: `set` records an object (new or changed), `delete` forgets it.
    pub fn apply<K>(
        &mut self,
        event: &watcher::Event<K>,
        set: impl Fn(&mut T, &K),
        delete: impl Fn(&mut T, &K),
    ) {
        match event {
            watcher::Event::Init => self.listing = Some(T::default()),
            watcher::Event::InitApply(x) => {
                if let Some(listing) = self.listing.as_mut() {
                    set(listing, x);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = self.listing.take() {
                    self.live = listing;
                }
                self.listed = true;
            }
            watcher::Event::Apply(x) => set(&mut self.live, x),
            watcher::Event::Delete(x) => delete(&mut self.live, x),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use watcher::Event;

    use super::*;

    fn apply(index: &mut Relisted<BTreeSet<u32>>, event: Event<u32>) {
        index.apply(
            &event,
            |set, x| {
                set.insert(*x);
            },
            |set, x| {
                set.remove(x);
            },
        );
    }

    #[test]
    fn a_listing_replaces_the_index_only_when_complete() {
        let mut index = Relisted::default();
        apply(&mut index, Event::Apply(1));
        apply(&mut index, Event::Apply(2));
        apply(&mut index, Event::Delete(1));
        assert_eq!(index.live, BTreeSet::from([2]));
        assert!(!index.listed);
        apply(&mut index, Event::Init);
        apply(&mut index, Event::InitApply(3));
        assert_eq!(
            index.live,
            BTreeSet::from([2]),
            "the old index answers meanwhile"
        );
        apply(&mut index, Event::InitDone);
        assert_eq!(index.live, BTreeSet::from([3]));
        assert!(index.listed);
    }
}
