//! Positions by event id, in about half the memory of a map from the whole id: an entry is
//! the id's 64-bit fingerprint and its position as a `u32` (12 bytes, against 24 for the
//! 16-byte id and a `u64`). A fingerprint names its id only probably, so a lookup confirms
//! a hit against the log (the caller passes what the log holds at a position). Ids whose
//! fingerprint another id took first, and positions past `u32::MAX`, go to a map of whole
//! ids beside it: rare, and exact.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::event::EventId;

/// Hashes event ids cheaply: UUIDs already carry random bits, so folding is enough.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(29) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// An id folded to 64 bits (the same fold the hasher makes of it), kept as two `u32` so that
/// an entry packs into 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint([u32; 2]);

impl Fingerprint {
    fn of(id: &EventId) -> Self {
        let mut hasher = IdHasher::default();
        id.hash(&mut hasher);
        let folded = hasher.finish();
        Fingerprint([folded as u32, (folded >> 32) as u32])
    }
}

impl Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a hash: one word.
        state.write_u64(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32));
    }
}

#[derive(Debug, Default)]
pub struct IdIndex {
    compact: HashMap<Fingerprint, u32, BuildHasherDefault<IdHasher>>,
    /// Ids whose fingerprint an earlier id holds in `compact`, and positions over `u32::MAX`.
    exact: HashMap<EventId, u64, BuildHasherDefault<IdHasher>>,
}

impl IdIndex {
    /// Records `id` at `position` (each id once: the log indexes an event once).
    pub fn insert(&mut self, id: EventId, position: u64) {
        self.insert_as(Fingerprint::of(&id), id, position);
    }

    fn insert_as(&mut self, fingerprint: Fingerprint, id: EventId, position: u64) {
        if let Ok(small) = u32::try_from(position) {
            if let Entry::Vacant(slot) = self.compact.entry(fingerprint) {
                slot.insert(small);
                return;
            }
        }
        self.exact.insert(id, position);
    }

    /// The position of `id`; `holds(position)` tells whether the event there has this id.
    pub fn get(&self, id: &EventId, holds: impl Fn(u64) -> bool) -> Option<u64> {
        self.get_as(Fingerprint::of(id), id, holds)
    }

    fn get_as(
        &self,
        fingerprint: Fingerprint,
        id: &EventId,
        holds: impl Fn(u64) -> bool,
    ) -> Option<u64> {
        if let Some(&small) = self.compact.get(&fingerprint) {
            let position = u64::from(small);
            if holds(position) {
                return Some(position);
            }
        }
        self.exact.get(id).copied()
    }

    /// Makes room for `additional` more ids without growing the table again, if memory
    /// allows (else the table grows as ids come, as it would have).
    pub fn reserve(&mut self, additional: usize) {
        let _ = self.compact.try_reserve(additional);
    }

    /// Keeps the ids whose position `keep` accepts (a retention cut drops the rest).
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.compact
            .retain(|_, position| keep(u64::from(*position)));
        self.exact.retain(|_, position| keep(*position));
    }

    pub fn len(&self) -> usize {
        self.compact.len() + self.exact.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> EventId {
        EventId(n.to_be_bytes())
    }

    /// A log of ids by position, as `holds` reads it.
    fn holds<'a>(log: &'a [(u64, EventId)], wanted: &'a EventId) -> impl Fn(u64) -> bool + 'a {
        move |position| log.iter().any(|(p, i)| *p == position && i == wanted)
    }

    #[test]
    fn finds_each_id_at_its_position_and_nothing_for_an_unknown_one() {
        let log: Vec<(u64, EventId)> = (1..=10_000u64)
            .map(|p| {
                (
                    p,
                    id(u128::from(p).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
                )
            })
            .collect();
        let mut index = IdIndex::default();
        for (p, i) in &log {
            index.insert(*i, *p);
        }
        assert_eq!(index.len(), 10_000);
        let by_position: HashMap<u64, EventId> = log.iter().copied().collect();
        for (p, i) in &log {
            assert_eq!(index.get(i, |q| by_position.get(&q) == Some(i)), Some(*p));
        }
        let unknown = id(7);
        assert_eq!(index.get(&unknown, holds(&log, &unknown)), None);
    }

    #[test]
    fn ids_that_share_a_fingerprint_are_each_found_exactly() {
        // A real 64-bit collision cannot be searched for here: give two ids one fingerprint.
        let shared = Fingerprint([7, 7]);
        let (first, second, third) = (id(1), id(2), id(3));
        let mut index = IdIndex::default();
        index.insert_as(shared, first, 1);
        index.insert_as(shared, second, 2);
        let log = [(1, first), (2, second)];
        assert_eq!(index.get_as(shared, &first, holds(&log, &first)), Some(1));
        assert_eq!(index.get_as(shared, &second, holds(&log, &second)), Some(2));
        // An unknown id with the same fingerprint: the hit is not its event.
        assert_eq!(index.get_as(shared, &third, holds(&log, &third)), None);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_position_past_u32_is_kept_whole() {
        let mut index = IdIndex::default();
        let big = u64::from(u32::MAX) + 5;
        index.insert(id(42), big);
        let log = [(big, id(42))];
        assert_eq!(index.get(&id(42), holds(&log, &id(42))), Some(big));
    }

    #[test]
    fn a_fingerprint_hit_whose_event_has_another_id_is_no_answer() {
        // The compact entry points at an event that is not this id (what a colliding
        // fingerprint looks like): the lookup asks the log, and falls through to none.
        let mut index = IdIndex::default();
        index.insert(id(1), 1);
        assert_eq!(index.get(&id(1), |_| false), None);
    }

    #[test]
    fn retain_drops_the_positions_a_cut_drops() {
        let mut index = IdIndex::default();
        let big = u64::from(u32::MAX) + 1;
        index.insert(id(1), 1);
        index.insert(id(2), 2);
        index.insert(id(3), big);
        index.retain(|p| p > 1);
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(&id(1), |_| true), None);
        assert_eq!(index.get(&id(2), |p| p == 2), Some(2));
        assert_eq!(index.get(&id(3), |p| p == big), Some(big));
    }
}
