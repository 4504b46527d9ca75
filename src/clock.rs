//! Time and ids, injected so that tests (and simulations) can control them.
//! `cfg(target_arch)` only picks where the wall clock and the randomness come from.

use crate::event::EventId;

/// Milliseconds since the Unix epoch. Informational only: clocks never order events.
pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// The platform's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(target_arch = "wasm32")]
    fn now_ms(&self) -> u64 {
        js_sys::Date::now() as u64
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that returns what the test sets.
#[derive(Debug, Clone, Default)]
pub struct FixedClock(pub std::rc::Rc<std::cell::Cell<u64>>);

impl FixedClock {
    pub fn at(ms: u64) -> Self {
        FixedClock(std::rc::Rc::new(std::cell::Cell::new(ms)))
    }
    pub fn set(&self, ms: u64) {
        self.0.set(ms);
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

/// Where new event ids come from.
pub trait IdSource {
    fn next_id(&mut self, now_ms: u64) -> EventId;
}

/// UUIDv7 (RFC 9562): 48-bit milliseconds, then a 12-bit counter that keeps ids made in
/// the same millisecond increasing, then 62 random bits.
#[derive(Debug, Default)]
pub struct Uuidv7 {
    last_ms: u64,
    counter: u16,
    /// Random bytes drawn ahead: one call to the platform's source (a crossing to JS in
    /// a browser) serves many ids.
    pool: Vec<u8>,
    used: usize,
}

/// Random bytes one id takes, and how many ids one draw serves.
const ID_RANDOM_BYTES: usize = 10;
const IDS_PER_DRAW: usize = 64;

impl Uuidv7 {
    pub fn new() -> Self {
        Self::default()
    }
}

fn random_bytes(buf: &mut [u8]) {
    // getrandom only fails when the platform has no entropy source at all; fall back to
    // address and time bits rather than refusing to append.
    if getrandom::getrandom(buf).is_err() {
        let seed = (buf.as_ptr() as u64) ^ SystemClock.now_ms().rotate_left(17);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(i as u32 * 7)
                >> 24) as u8;
        }
    }
}

impl Uuidv7 {
    fn random(&mut self) -> [u8; ID_RANDOM_BYTES] {
        if self.used + ID_RANDOM_BYTES > self.pool.len() {
            self.pool.resize(ID_RANDOM_BYTES * IDS_PER_DRAW, 0);
            random_bytes(&mut self.pool);
            self.used = 0;
        }
        let mut out = [0u8; ID_RANDOM_BYTES];
        out.copy_from_slice(&self.pool[self.used..self.used + ID_RANDOM_BYTES]);
        self.used += ID_RANDOM_BYTES;
        out
    }
}

impl IdSource for Uuidv7 {
    fn next_id(&mut self, now_ms: u64) -> EventId {
        let random = self.random();
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.counter = u16::from_be_bytes([random[0] & 0x03, random[1]]); // start low, leave room
        } else if self.counter < 0x0fff {
            self.counter += 1;
        } else {
            // Counter exhausted within one millisecond: borrow the next millisecond.
            self.last_ms += 1;
            self.counter = 0;
        }
        let ms = self.last_ms & 0xffff_ffff_ffff;
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        b[6] = 0x70 | ((self.counter >> 8) as u8 & 0x0f);
        b[7] = self.counter as u8;
        b[8] = 0x80 | (random[2] & 0x3f);
        b[9..].copy_from_slice(&random[3..]);
        EventId(b)
    }
}

/// Ids 00000000-0000-7000-8000-000000000001, ...2, ... for deterministic tests.
#[derive(Debug, Default)]
pub struct SequentialIds(u64);

impl IdSource for SequentialIds {
    fn next_id(&mut self, _now_ms: u64) -> EventId {
        self.0 += 1;
        let mut b = [0u8; 16];
        b[6] = 0x70;
        b[8] = 0x80;
        b[10..].copy_from_slice(&self.0.to_be_bytes()[2..]);
        EventId(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuidv7_ids_are_versioned_and_increase() {
        let mut ids = Uuidv7::new();
        let mut previous = ids.next_id(1_700_000_000_000);
        for i in 0..10_000u64 {
            let id = ids.next_id(1_700_000_000_000 + i / 100);
            assert!(id > previous, "ids must increase");
            assert_eq!(id.0[6] >> 4, 7, "version 7");
            assert_eq!(id.0[8] >> 6, 0b10, "RFC variant");
            previous = id;
        }
    }

    #[test]
    fn uuidv7_random_bits_differ_across_draws() {
        let mut ids = Uuidv7::new();
        let all: std::collections::HashSet<[u8; 8]> = (0..1_000u64)
            .map(|i| {
                let id = ids.next_id(1_700_000_000_000 + i);
                id.0[8..].try_into().unwrap()
            })
            .collect();
        assert_eq!(all.len(), 1_000, "random bits repeat");
    }
}
