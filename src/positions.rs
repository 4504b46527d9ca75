//! A list of log positions in ascending order, as the log's indexes by stream, type and
//! correlation keep them: `u32` while every position fits (any log a browser can hold),
//! `u64` once one does not. Half the memory of a `Vec<u64>` in practice.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Positions {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl Positions {
    /// A list of one position.
    pub fn one(position: u64) -> Self {
        match u32::try_from(position) {
            Ok(narrow) => Positions::Narrow(vec![narrow]),
            Err(_) => Positions::Wide(vec![position]),
        }
    }

    /// Adds `position` (larger than every position already in the list).
    pub fn push(&mut self, position: u64) {
        match self {
            Positions::Narrow(list) => match u32::try_from(position) {
                Ok(narrow) => list.push(narrow),
                Err(_) => {
                    let mut wide: Vec<u64> = list.iter().map(|p| u64::from(*p)).collect();
                    wide.push(position);
                    *self = Positions::Wide(wide);
                }
            },
            Positions::Wide(list) => list.push(position),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Positions::Narrow(list) => list.len(),
            Positions::Wide(list) => list.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of the first position for which `before` is false (`before` holds for a
    /// prefix of the list), as `slice::partition_point`.
    pub fn partition_point(&self, before: impl Fn(u64) -> bool) -> usize {
        match self {
            Positions::Narrow(list) => list.partition_point(|p| before(u64::from(*p))),
            Positions::Wide(list) => list.partition_point(|p| before(*p)),
        }
    }

    /// The positions at indexes `range` (clamped to the list).
    pub fn slice(&self, range: Range<usize>) -> PositionsIter<'_> {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        match self {
            Positions::Narrow(list) => PositionsIter::Narrow(list[start..end].iter()),
            Positions::Wide(list) => PositionsIter::Wide(list[start..end].iter()),
        }
    }

    /// Every position in the list.
    pub fn iter(&self) -> PositionsIter<'_> {
        self.slice(0..self.len())
    }

    /// The list from index `from` on, as a list of its own (`None` when that is empty).
    pub fn tail(&self, from: usize) -> Option<Positions> {
        (from < self.len()).then(|| match self {
            Positions::Narrow(list) => Positions::Narrow(list[from..].to_vec()),
            Positions::Wide(list) => Positions::Wide(list[from..].to_vec()),
        })
    }
}

/// The positions of a [`Positions`] slice, in either direction.
pub enum PositionsIter<'a> {
    Narrow(std::slice::Iter<'a, u32>),
    Wide(std::slice::Iter<'a, u64>),
}

impl Iterator for PositionsIter<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        match self {
            PositionsIter::Narrow(it) => it.next().map(|p| u64::from(*p)),
            PositionsIter::Wide(it) => it.next().copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            PositionsIter::Narrow(it) => it.size_hint(),
            PositionsIter::Wide(it) => it.size_hint(),
        }
    }
}

impl DoubleEndedIterator for PositionsIter<'_> {
    fn next_back(&mut self) -> Option<u64> {
        match self {
            PositionsIter::Narrow(it) => it.next_back().map(|p| u64::from(*p)),
            PositionsIter::Wide(it) => it.next_back().copied(),
        }
    }
}

impl ExactSizeIterator for PositionsIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    const PAST_U32: u64 = u32::MAX as u64 + 1;

    #[test]
    fn keeps_positions_narrow_until_one_does_not_fit_then_all_wide_in_order() {
        let mut list = Positions::one(3);
        list.push(7);
        assert!(matches!(list, Positions::Narrow(_)));
        list.push(PAST_U32);
        list.push(PAST_U32 + 9);
        assert!(matches!(list, Positions::Wide(_)));
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            [3, 7, PAST_U32, PAST_U32 + 9]
        );
        assert_eq!(list.len(), 4);
        assert!(matches!(Positions::one(PAST_U32), Positions::Wide(_)));
    }

    #[test]
    fn answers_like_a_slice_of_u64_in_both_forms() {
        let positions = [2u64, 5, 9, 14, 20];
        let mut narrow = Positions::one(positions[0]);
        let mut wide = Positions::Wide(vec![positions[0]]);
        for p in &positions[1..] {
            narrow.push(*p);
            wide.push(*p);
        }
        for list in [&narrow, &wide] {
            for cut in 0..=21 {
                assert_eq!(
                    list.partition_point(|p| p <= cut),
                    positions.partition_point(|p| *p <= cut)
                );
            }
            assert_eq!(list.slice(1..3).collect::<Vec<_>>(), [5, 9]);
            assert_eq!(list.slice(1..3).rev().collect::<Vec<_>>(), [9, 5]);
            assert_eq!(
                list.slice(4..99).collect::<Vec<_>>(),
                [20],
                "clamped to the list"
            );
            let (start, end) = (9, 2);
            assert_eq!(
                list.slice(start..end).count(),
                0,
                "an empty range past the end"
            );
            assert_eq!(
                list.tail(3).map(|t| t.iter().collect::<Vec<_>>()),
                Some(vec![14, 20])
            );
            assert_eq!(list.tail(5), None);
        }
    }
}
