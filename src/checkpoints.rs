//! Checkpoint bookkeeping for time travel, written once for both runtimes: where to take
//! in-memory checkpoints of a projection's confirmed state, which to keep as the log grows
//! (bounded in count and bytes), which one serves a target position, and when a stored
//! snapshot is trusted.
//!
//! [`CheckpointPlan`] knows positions (and what each checkpoint costs) only; the TS
//! runtime holds the states and calls it through the wasm binding once per batch.
//! [`Checkpoints<T>`] pairs a plan with the states, for Rust's `ProjectionRunner`.
//!
//! The rule: a checkpoint is due at every multiple of `every`. When more than `max_count`
//! are kept, or they weigh more than `max_bytes`, the spacing doubles and only multiples
//! of the new spacing stay (the oldest go if that is not enough), so the kept ones stay
//! evenly spread over the whole log while memory stays bounded. Each checkpoint is
//! recorded with its size and its cost (the time its fold took), so that a later policy
//! can place them by measured cost within the byte budget without a new API.

/// Checkpoints kept per projection by default.
pub const DEFAULT_MAX_CHECKPOINTS: usize = 64;
/// Events between checkpoints by default (before any thinning).
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1_000;
/// Bytes all of one projection's checkpoints may take by default.
pub const DEFAULT_MAX_CHECKPOINT_BYTES: usize = 64 << 20;

/// One kept checkpoint, without its state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointMark {
    pub position: u64,
    /// What the state weighs (for example its JSON length).
    pub bytes: usize,
    /// What reaching it cost (for example ms of folding since the previous one); kept for
    /// adaptive placement, unused by today's count-based policy.
    pub cost: f64,
}

/// Where checkpoints go and which stay: positions only.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointPlan {
    initial_every: u64,
    every: u64,
    max_count: usize,
    max_bytes: usize,
    /// Ascending by position.
    kept: Vec<CheckpointMark>,
    bytes: usize,
}

impl Default for CheckpointPlan {
    fn default() -> Self {
        CheckpointPlan::new(
            DEFAULT_CHECKPOINT_EVERY,
            DEFAULT_MAX_CHECKPOINTS,
            DEFAULT_MAX_CHECKPOINT_BYTES,
        )
    }
}

impl CheckpointPlan {
    /// A plan that takes one checkpoint every `every` events and keeps at most `max_count`
    /// of them, weighing at most `max_bytes` together (each at least 1).
    pub fn new(every: u64, max_count: usize, max_bytes: usize) -> Self {
        CheckpointPlan {
            initial_every: every.max(1),
            every: every.max(1),
            max_count: max_count.max(1),
            max_bytes: max_bytes.max(1),
            kept: Vec::new(),
            bytes: 0,
        }
    }

    /// The current spacing (it doubles as the log grows).
    pub fn every(&self) -> u64 {
        self.every
    }

    pub fn max_count(&self) -> usize {
        self.max_count
    }

    /// The kept checkpoints, ascending.
    pub fn marks(&self) -> &[CheckpointMark] {
        &self.kept
    }

    pub fn positions(&self) -> Vec<u64> {
        self.kept.iter().map(|m| m.position).collect()
    }

    /// What the kept checkpoints weigh together.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a checkpoint is due at `position` at the current spacing.
    pub fn is_due(&self, position: u64) -> bool {
        position > 0 && position % self.every == 0
    }

    /// The positions in `after + 1 ..= to` that should get a checkpoint, ascending.
    pub fn due(&self, after: u64, to: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut next = (after / self.every + 1).saturating_mul(self.every);
        while next <= to {
            out.push(next);
            next = match next.checked_add(self.every) {
                Some(n) => n,
                None => break,
            };
        }
        out
    }

    /// Before a replay from `from` to `to`: widens the spacing to what the replay will end
    /// with, so that it does not take checkpoints only to drop most of them.
    pub fn prepare_replay(&mut self, from: u64, to: u64) {
        let span = to.saturating_sub(from);
        while span / self.every > self.max_count as u64 {
            self.every = self.every.saturating_mul(2);
        }
    }

    /// Records checkpoints taken at these marks (a mark at a kept position replaces it).
    /// Returns the positions no longer kept (some of those just recorded, possibly), whose
    /// states the caller drops.
    pub fn record(&mut self, marks: &[CheckpointMark]) -> Vec<u64> {
        for mark in marks {
            let i = self.kept.partition_point(|m| m.position < mark.position);
            match self.kept.get_mut(i) {
                Some(m) if m.position == mark.position => {
                    self.bytes = self.bytes - m.bytes + mark.bytes;
                    *m = *mark;
                }
                _ => {
                    self.bytes += mark.bytes;
                    self.kept.insert(i, *mark);
                }
            }
        }
        let mut dropped = Vec::new();
        if self.over_budget() {
            self.thin(&mut dropped);
        }
        dropped
    }

    fn over_budget(&self) -> bool {
        self.kept.len() > self.max_count || (self.bytes > self.max_bytes && self.kept.len() > 1)
    }

    /// Doubles the spacing until the multiples of it fit (at least once: the log grew past
    /// what this spacing serves), then drops the oldest if still over.
    fn thin(&mut self, dropped: &mut Vec<u64>) {
        loop {
            self.every = self.every.saturating_mul(2);
            let every = self.every;
            let bytes = &mut self.bytes;
            self.kept.retain(|m| {
                let keep = m.position % every == 0;
                if !keep {
                    *bytes -= m.bytes;
                    dropped.push(m.position);
                }
                keep
            });
            // The same marks would survive every further doubling: stop there.
            if !self.over_budget() || self.kept.len() <= 1 || every == u64::MAX {
                break;
            }
            if self
                .kept
                .iter()
                .all(|m| m.position % every.saturating_mul(2) == 0)
            {
                break;
            }
        }
        while self.over_budget() {
            let oldest = self.kept.remove(0);
            self.bytes -= oldest.bytes;
            // `retain` dropped positions in ascending order; keep the list so.
            let at = dropped.partition_point(|p| *p < oldest.position);
            dropped.insert(at, oldest.position);
        }
    }

    /// The kept checkpoint nearest at or before `target`.
    pub fn base_for(&self, target: u64) -> Option<u64> {
        let i = self.kept.partition_point(|m| m.position <= target);
        i.checked_sub(1).map(|i| self.kept[i].position)
    }

    /// Whether a replay to `target` from `base` is long enough (more than one spacing) to be
    /// worth reading the stored snapshot first, in case it is nearer.
    pub fn wants_snapshot(&self, target: u64, base: u64) -> bool {
        target.saturating_sub(base) > self.every
    }

    /// Forgets every checkpoint and goes back to the first spacing (the confirmed log was
    /// reset).
    pub fn reset(&mut self) {
        self.kept.clear();
        self.bytes = 0;
        self.every = self.initial_every;
    }
}

/// What is known of a stored snapshot, and of the log it would be replayed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotFacts {
    /// The projection version it was folded with.
    pub version: u32,
    /// The last position folded into it.
    pub position: u64,
}

/// Whether a stored snapshot may stand for the projection's state: folded by the same
/// version of the projection, and not ahead of the confirmed log (a snapshot past the
/// confirmed head belongs to a log that was reset since; writes of states folded before a
/// reset are refused by the engine's generation check, so what is stored is of this
/// generation or ahead of it).
pub fn snapshot_trusted(
    snapshot: SnapshotFacts,
    projection_version: u32,
    confirmed_head: u64,
) -> bool {
    snapshot.version == projection_version && snapshot.position <= confirmed_head
}

/// A plan with the states it keeps: Rust projections' checkpoints.
#[derive(Debug, Clone)]
pub struct Checkpoints<T> {
    plan: CheckpointPlan,
    /// Ascending by position, the same positions as the plan's marks.
    states: Vec<(u64, T)>,
}

impl<T> Default for Checkpoints<T> {
    fn default() -> Self {
        Checkpoints::new(CheckpointPlan::default())
    }
}

impl<T> Checkpoints<T> {
    pub fn new(plan: CheckpointPlan) -> Self {
        Checkpoints {
            plan,
            states: Vec::new(),
        }
    }

    pub fn plan(&self) -> &CheckpointPlan {
        &self.plan
    }

    pub fn plan_mut(&mut self) -> &mut CheckpointPlan {
        &mut self.plan
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Whether a checkpoint is due at `position`.
    pub fn is_due(&self, position: u64) -> bool {
        self.plan.is_due(position)
    }

    /// Keeps `state` as the state right after `position`.
    pub fn record(&mut self, position: u64, state: T, bytes: usize, cost: f64) {
        let dropped = self.plan.record(&[CheckpointMark {
            position,
            bytes,
            cost,
        }]);
        let i = self.states.partition_point(|(p, _)| *p < position);
        match self.states.get_mut(i) {
            Some((p, s)) if *p == position => *s = state,
            _ => self.states.insert(i, (position, state)),
        }
        if !dropped.is_empty() {
            self.states
                .retain(|(p, _)| dropped.binary_search(p).is_err());
        }
    }

    /// The kept state nearest at or before `target`, with its position.
    pub fn base_for(&self, target: u64) -> Option<(u64, &T)> {
        let i = self.states.partition_point(|(p, _)| *p <= target);
        i.checked_sub(1)
            .map(|i| (self.states[i].0, &self.states[i].1))
    }

    pub fn reset(&mut self) {
        self.plan.reset();
        self.states.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(position: u64) -> CheckpointMark {
        CheckpointMark {
            position,
            bytes: 10,
            cost: 0.0,
        }
    }

    #[test]
    fn checkpoints_are_due_at_multiples_of_the_spacing() {
        let plan = CheckpointPlan::new(10, 4, usize::MAX);
        assert_eq!(plan.due(0, 35), vec![10, 20, 30]);
        assert_eq!(plan.due(10, 20), vec![20]);
        assert_eq!(plan.due(11, 19), Vec::<u64>::new());
        assert!(plan.is_due(40) && !plan.is_due(41) && !plan.is_due(0));
    }

    #[test]
    fn past_the_cap_the_spacing_doubles_and_the_kept_ones_stay_spread() {
        let mut plan = CheckpointPlan::new(10, 4, usize::MAX);
        let marks: Vec<_> = plan.due(0, 50).into_iter().map(mark).collect();
        assert_eq!(plan.record(&marks), vec![10, 30, 50]);
        assert_eq!(plan.every(), 20);
        assert_eq!(plan.positions(), vec![20, 40]);
    }

    #[test]
    fn the_byte_budget_bounds_what_is_kept() {
        let mut plan = CheckpointPlan::new(10, 100, 25);
        let marks: Vec<_> = [10, 20, 30].into_iter().map(mark).collect();
        assert_eq!(plan.record(&marks), vec![10, 30]);
        assert_eq!(plan.positions(), vec![20]);
        assert!(plan.bytes() <= 25);
    }

    #[test]
    fn a_long_log_keeps_at_most_the_cap() {
        let mut checkpoints = Checkpoints::new(CheckpointPlan::new(1, 8, usize::MAX));
        for position in 1..=10_000u64 {
            if checkpoints.is_due(position) {
                checkpoints.record(position, position, 8, 0.0);
            }
            assert!(checkpoints.len() <= 8);
        }
        let (at, state) = checkpoints.base_for(9_999).unwrap();
        assert_eq!(at, *state);
        assert!(9_999 - at <= checkpoints.plan().every());
    }

    #[test]
    fn the_base_for_a_target_is_the_nearest_kept_at_or_before_it() {
        let mut plan = CheckpointPlan::new(10, 10, usize::MAX);
        plan.record(&[mark(10), mark(20)]);
        assert_eq!(plan.base_for(9), None);
        assert_eq!(plan.base_for(10), Some(10));
        assert_eq!(plan.base_for(19), Some(10));
        assert_eq!(plan.base_for(1_000), Some(20));
    }

    #[test]
    fn a_snapshot_is_trusted_only_at_its_version_and_within_the_confirmed_log() {
        let facts = SnapshotFacts {
            version: 2,
            position: 100,
        };
        assert!(snapshot_trusted(facts, 2, 100));
        assert!(!snapshot_trusted(facts, 3, 500), "another version");
        assert!(
            !snapshot_trusted(facts, 2, 99),
            "ahead of the log: a reset store"
        );
    }

    #[test]
    fn a_replay_widens_the_spacing_first() {
        let mut plan = CheckpointPlan::new(10, 4, usize::MAX);
        plan.prepare_replay(0, 1_000);
        assert_eq!(plan.every(), 320);
        plan.reset();
        assert_eq!(plan.every(), 10);
    }
}
