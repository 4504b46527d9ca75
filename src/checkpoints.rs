//! Checkpoint bookkeeping for time travel, written once for both runtimes: where to take
//! in-memory checkpoints of a projection's confirmed state, which to keep as the log grows
//! (bounded in count and bytes), which one serves a target position, and when a stored
//! snapshot is trusted.
//!
//! [`CheckpointPlan`] knows positions (and what each checkpoint costs) only; the TS
//! runtime holds the states and calls it through the wasm binding once per batch.
//! [`Checkpoints<T>`] pairs a plan with the states, for Rust's `ProjectionRunner`.
//!
//! The rule: a checkpoint is due at every multiple of `every`, and every kept one is at a
//! multiple of it. Where and how densely depends on what a fold costs, as measured: a
//! travel should fold at most about [`GAP_MS`] of events from its base, and taking a
//! checkpoint (serialising the state) should cost at most a tenth of the folding between
//! two. So an expensive reducer gets dense checkpoints and a cheap one sparse ones; the
//! spacing halves while the measured gaps are too slow (kept ones stay multiples of the
//! new spacing) and doubles while checkpoints cost too much. When more than `max_count`
//! are kept, or they weigh more than `max_bytes`, the spacing doubles and only multiples of
//! the new spacing stay (the oldest go if that is not enough), so the kept ones stay
//! evenly spread over the whole log while memory stays bounded. Marks without a measured
//! cost (0) leave the spacing to the count and byte bounds alone.

/// Checkpoints kept per projection by default.
pub const DEFAULT_MAX_CHECKPOINTS: usize = 64;
/// Events between checkpoints by default, before it adapts (a power of two, so that it
/// can halve down to one).
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1_024;
/// Checkpoints kept per projection by default when their cost is measured: the byte
/// budget is then the bound that matters.
pub const DEFAULT_MAX_MEASURED_CHECKPOINTS: usize = 16_384;
/// What folding from a checkpoint to any position should cost at most, in ms.
pub const GAP_MS: f64 = 4.0;
/// Taking checkpoints may cost at most this share of the folding between them.
pub const TAKE_SHARE: f64 = 0.1;
/// ms to read one event on the way to a target, whatever the reducer (parsing its JSON).
pub const READ_MS_PER_EVENT: f64 = 0.002;
/// Weight of a new measurement in the running averages.
const SMOOTHING: f64 = 0.25;
/// Bytes all of one projection's checkpoints may take by default.
pub const DEFAULT_MAX_CHECKPOINT_BYTES: usize = 64 << 20;

/// One kept checkpoint, without its state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointMark {
    pub position: u64,
    /// What the state weighs (for example its JSON length).
    pub bytes: usize,
    /// What folding one event cost on the way to it (ms per event, averaged since the
    /// previous checkpoint); 0 when not measured.
    pub cost: f64,
    /// What taking it cost (ms, for example serialising the state); 0 when not measured.
    pub take_ms: f64,
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
    /// Running averages of the measured costs: ms to fold one event, ms to take one checkpoint.
    fold_ms: Option<f64>,
    take_ms: Option<f64>,
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
            fold_ms: None,
            take_ms: None,
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
        self.measure(marks);
        self.coarsen(&mut dropped);
        if self.over_budget() {
            self.thin(&mut dropped);
        }
        self.densify();
        dropped.sort_unstable();
        dropped
    }

    /// Doubles the spacing while taking checkpoints at it would cost too much for what the
    /// folding between them costs, dropping the kept ones that are no longer multiples.
    fn coarsen(&mut self, dropped: &mut Vec<u64>) {
        let Some(wanted) = self.wanted_every() else {
            return;
        };
        let before = self.every;
        while wanted >= self.every.saturating_mul(2) && self.every < u64::MAX / 2 {
            self.every *= 2;
        }
        if self.every != before {
            self.drop_off_spacing(dropped);
        }
    }

    /// Drops the kept marks that are not multiples of the spacing.
    fn drop_off_spacing(&mut self, dropped: &mut Vec<u64>) {
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
    }

    /// The running averages of fold and take costs, with what `marks` measured.
    fn measure(&mut self, marks: &[CheckpointMark]) {
        let mix = |old: Option<f64>, new: f64| match old {
            Some(old) => Some(old + (new - old) * SMOOTHING),
            None => Some(new),
        };
        for mark in marks {
            if mark.cost > 0.0 && mark.cost.is_finite() {
                self.fold_ms = mix(self.fold_ms, mark.cost);
            }
            if mark.take_ms > 0.0 && mark.take_ms.is_finite() {
                self.take_ms = mix(self.take_ms, mark.take_ms);
            }
        }
    }

    /// The spacing the measured costs ask for, if any were measured: at most [`GAP_MS`] of
    /// folding between checkpoints, and taking them at most [`TAKE_SHARE`] of that.
    pub fn wanted_every(&self) -> Option<u64> {
        let fold = self.fold_ms?;
        let per_event = fold + READ_MS_PER_EVENT;
        let fastest = (GAP_MS / per_event).floor().max(1.0);
        let cheapest = match self.take_ms {
            Some(take) => (take / (TAKE_SHARE * per_event)).ceil().max(1.0),
            None => 1.0,
        };
        Some(fastest.max(cheapest).min(u64::MAX as f64) as u64)
    }

    /// Narrows the spacing while the measured gaps are too slow, if what would then be kept
    /// over the log so far still fits the count and the byte budget.
    fn densify(&mut self) {
        let Some(wanted) = self.wanted_every() else {
            return;
        };
        let span = self.kept.last().map_or(0, |m| m.position);
        let average = if self.kept.is_empty() {
            0
        } else {
            self.bytes / self.kept.len()
        };
        if self.every <= wanted {
            return;
        }
        // The new spacing divides the old one, so that every kept checkpoint stays a
        // multiple of it: the largest divisor within what is wanted that still fits.
        let fits = |every: u64| {
            let count = span / every + 1;
            count <= self.max_count as u64
                && (count as usize).saturating_mul(average) <= self.max_bytes
        };
        let mut divisors = Vec::new();
        let mut d = 1;
        while d * d <= self.every {
            if self.every % d == 0 {
                divisors.push(d);
                divisors.push(self.every / d);
            }
            d += 1;
        }
        divisors.sort_unstable();
        // Fewer checkpoints fit more easily: from the largest divisor within `wanted` up.
        let start = divisors.partition_point(|d| *d <= wanted).saturating_sub(1);
        if let Some(every) = divisors[start..].iter().copied().find(|d| fits(*d)) {
            self.every = every;
        }
    }

    /// Ms of folding measured per event (0 until measured).
    pub fn fold_ms(&self) -> f64 {
        self.fold_ms.unwrap_or(0.0)
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
            self.drop_off_spacing(dropped);
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
    /// reset). The measured costs stay: they describe the reducer, not the log.
    pub fn reset(&mut self) {
        self.kept.clear();
        self.bytes = 0;
        self.every = self.initial_every;
    }

    /// The byte budget of the kept checkpoints.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
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
            take_ms: 0.0,
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
            take_ms: 0.0,
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

    fn measured(position: u64, bytes: usize, cost: f64, take_ms: f64) -> CheckpointMark {
        CheckpointMark {
            position,
            bytes,
            cost,
            take_ms,
        }
    }

    #[test]
    fn an_expensive_reducer_gets_dense_checkpoints() {
        // 0.1 ms per event: a gap of GAP_MS holds about 39 events; taking one costs 0.2 ms,
        // so no denser than 21. The spacing halves from 1024 to 32.
        let mut plan = CheckpointPlan::new(1_024, 16_384, 64 << 20);
        plan.record(&[measured(1_024, 20_000, 0.1, 0.2)]);
        assert_eq!(plan.wanted_every(), Some(39));
        assert_eq!(plan.every(), 32);
        assert_eq!(
            plan.positions(),
            vec![1_024],
            "the kept one is a multiple of the new spacing"
        );
        assert_eq!(plan.due(1_024, 1_100), vec![1_056, 1_088]);
    }

    #[test]
    fn a_cheap_reducer_with_a_costly_state_gets_sparse_ones() {
        // Folding is almost free but serialising the state is not: checkpoints as dense as
        // the gap target would cost more than the folding; the spacing doubles instead.
        let mut plan = CheckpointPlan::new(64, 16_384, 64 << 20);
        let marks: Vec<_> = (1..=4)
            .map(|i| measured(i * 64, 100, 0.0005, 0.5))
            .collect();
        let dropped = plan.record(&marks);
        assert!(plan.every() >= 1_024, "spacing {}", plan.every());
        assert_eq!(dropped.len() + plan.positions().len(), 4);
    }

    #[test]
    fn densifying_stops_at_the_byte_budget() {
        // Dense checkpoints are wanted, but 100 kB each over 100k events would take far more
        // than the 1 MB budget: the spacing does not halve.
        let mut plan = CheckpointPlan::new(1_024, 16_384, 1 << 20);
        plan.record(&[measured(99_328, 100_000, 1.0, 0.1)]);
        assert_eq!(plan.every(), 1_024);
        assert_eq!(plan.wanted_every(), Some(3));
    }

    #[test]
    fn unmeasured_marks_keep_the_count_policy() {
        let mut plan = CheckpointPlan::new(1_024, 64, 64 << 20);
        plan.record(&[mark(1_024), mark(2_048)]);
        assert_eq!(plan.every(), 1_024);
        assert_eq!(plan.wanted_every(), None);
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
