//! The weights versions a cached job holds: two at once, so that a worker
//! that alternates between the current update's gradient tasks and the
//! shards of an older version's evaluation fetches each version once.

use rwp_sandbox::WEIGHT_SLOTS;

/// Versions in slots, each with what the backend keeps for it (the decoded
/// weights in process; nothing for a sandbox, which keeps them itself).
#[derive(Debug)]
pub(crate) struct WeightSlots<T> {
    slots: [Option<(u64, T)>; WEIGHT_SLOTS],
    last_used: [u64; WEIGHT_SLOTS],
    clock: u64,
}

impl<T> Default for WeightSlots<T> {
    fn default() -> Self {
        Self { slots: std::array::from_fn(|_| None), last_used: [0; WEIGHT_SLOTS], clock: 0 }
    }
}

impl<T> WeightSlots<T> {
    fn find(&self, version: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.as_ref().is_some_and(|(v, _)| *v == version))
    }

    /// The versions held.
    pub(crate) fn versions(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().flatten().map(|(version, _)| *version)
    }

    pub(crate) fn has(&self, version: u64) -> bool {
        self.find(version).is_some()
    }

    /// The slot that holds `version`, or else the one to install it in
    /// (an empty one, or the least recently used); and whether it holds it.
    pub(crate) fn slot_for(&self, version: u64) -> (usize, bool) {
        if let Some(index) = self.find(version) {
            return (index, true);
        }
        let free = self.slots.iter().position(Option::is_none);
        let oldest = (0..WEIGHT_SLOTS).min_by_key(|&i| self.last_used[i]).unwrap_or(0);
        (free.unwrap_or(oldest), false)
    }

    pub(crate) fn put(&mut self, index: usize, version: u64, value: T) {
        self.slots[index] = Some((version, value));
        self.touch(index);
    }

    /// Marks the slot as used now; returns what it holds.
    pub(crate) fn touch(&mut self, index: usize) -> Option<&T> {
        self.clock += 1;
        self.last_used[index] = self.clock;
        self.slots[index].as_ref().map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_found_where_it_was_put_and_the_least_recently_used_goes_first() {
        let mut slots = WeightSlots::<&str>::default();
        assert_eq!(slots.slot_for(3), (0, false));
        slots.put(0, 3, "v3");
        assert_eq!(slots.slot_for(4), (1, false), "an empty slot before a used one");
        slots.put(1, 4, "v4");
        assert_eq!((slots.slot_for(3), slots.slot_for(4)), ((0, true), (1, true)));
        assert_eq!(slots.touch(0), Some(&"v3"));
        assert_eq!(slots.slot_for(5), (1, false), "version 4 was used longest ago");
        slots.put(1, 5, "v5");
        assert!(slots.has(3) && slots.has(5) && !slots.has(4));
    }
}
