//! Core: server-side authorities, which re-check pushed events of the streams they claim
//! against the stream's stored events (a [`Decider`] turned into a server rule). Used by
//! every server backend and the in-memory test server through [`PushCheck`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::EventRef;
use crate::command::{Decider, DeciderStep};
use crate::event::Event;
use crate::protocol::PushEvent;
use crate::push::rules::{Placed, PushCheck};
use crate::upcast::{with_upcast, Upcasters};

/// Re-checks pushed events of the streams it claims, on the server, against the stream's
/// stored events: a refusal answers `rejected` with its message, for that event only, and
/// the client reports it like any conflict.
pub trait Authority: Send + Sync {
    /// Whether this authority governs `stream` (for example streams named `todo-...`).
    fn claims(&self, stream: &str) -> bool;

    /// `Err(reason)` refuses `event`, given the stream's events before it (stored ones, then
    /// those accepted earlier in the same push), in order.
    fn check(&self, history: &[Event], event: &EventRef<'_>) -> Result<(), String>;
}

/// A [`Decider`] as an authority: its state is folded from the stream's history with
/// `evolve`, and [`Decider::check`] judges each pushed event. With upcasters
/// ([`DeciderAuthority::with_upcasters`]) both see events upcast to their current schema
/// version, whatever version the clients wrote them at; what is stored stays as pushed.
pub struct DeciderAuthority<D, C> {
    decider: D,
    claims: C,
    upcasters: Option<Arc<Upcasters>>,
}

impl<D, C> DeciderAuthority<D, C>
where
    D: Decider + Send + Sync,
    C: Fn(&str) -> bool + Send + Sync,
{
    pub fn new(decider: D, claims: C) -> Self {
        DeciderAuthority {
            decider,
            claims,
            upcasters: None,
        }
    }

    /// The decider sees upcast events. The chain is checked now ([`Upcasters::check`]),
    /// so a server with a broken chain fails at startup, not at the first push.
    pub fn with_upcasters(mut self, upcasters: Arc<Upcasters>) -> crate::error::Result<Self> {
        upcasters.check()?;
        self.upcasters = Some(upcasters);
        Ok(self)
    }
}

impl<D, C> Authority for DeciderAuthority<D, C>
where
    D: Decider + Send + Sync,
    C: Fn(&str) -> bool + Send + Sync,
{
    fn claims(&self, stream: &str) -> bool {
        (self.claims)(stream)
    }

    fn check(&self, history: &[Event], event: &EventRef<'_>) -> Result<(), String> {
        // Deletes, closes and erasures are annals' own: the push rules judge them.
        if DeciderStep::of(event) != DeciderStep::Evolve {
            return Ok(());
        }
        let mut state = self.decider.initial();
        let upcasters = self.upcasters.as_deref();
        // The state the stream's aggregates decide on, folded by the same rule.
        for past in history {
            let past = EventRef::from_event(past);
            match DeciderStep::of(&past) {
                DeciderStep::Restart => state = self.decider.initial(),
                DeciderStep::Skip => {}
                // An event that cannot be upcast cannot be judged: refused, with the reason.
                DeciderStep::Evolve => {
                    with_upcast(upcasters, &past, |e| self.decider.evolve(&mut state, e))
                        .map_err(|e| format!("stored event {} of the stream: {e}", past.id))?
                }
            }
        }
        with_upcast(upcasters, event, |e| self.decider.check(&state, e))
            .map_err(|e| e.to_string())?
    }
}

/// The authorities a server runs.
#[derive(Clone, Default)]
pub struct Authorities(Vec<Arc<dyn Authority>>);

impl std::fmt::Debug for Authorities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authorities({})", self.0.len())
    }
}

impl Authorities {
    pub fn new(list: Vec<Arc<dyn Authority>>) -> Self {
        Authorities(list)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, stream: &str) -> Option<&Arc<dyn Authority>> {
        self.0.iter().find(|a| a.claims(stream))
    }

    /// The streams of `events` that an authority claims: their histories must be loaded
    /// (inside the push transaction) for [`Authorities::checker`].
    pub fn claimed_streams<'e>(&self, events: &'e [PushEvent]) -> Vec<&'e str> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let mut streams: Vec<&str> = Vec::new();
        for e in events {
            if !streams.contains(&e.stream.as_str()) && self.find(&e.stream).is_some() {
                streams.push(&e.stream);
            }
        }
        streams
    }

    /// A check for [`crate::push::rules::plan_push`], given the stored events of the claimed streams.
    pub fn checker(&self, histories: HashMap<String, Vec<Event>>) -> AuthorityCheck<'_> {
        AuthorityCheck {
            authorities: self,
            histories,
        }
    }
}

/// Judges pushed events one by one; an accepted event joins its stream's history.
pub struct AuthorityCheck<'a> {
    authorities: &'a Authorities,
    histories: HashMap<String, Vec<Event>>,
}

impl PushCheck for AuthorityCheck<'_> {
    fn check(&mut self, event: &PushEvent, placed: Placed) -> Result<(), String> {
        let Some(authority) = self.authorities.find(&event.stream) else {
            return Ok(());
        };
        let history = self.histories.entry(event.stream.clone()).or_default();
        let candidate = Event {
            id: event.id,
            position: placed.position,
            stream: event.stream.clone(),
            version: placed.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            data: event.data.clone(),
            meta: event.meta.clone(),
            time: event.time,
            origin: None,
            pending: false,
            erased: event.erased,
        };
        authority.check(history, &EventRef::from_event(&candidate))?;
        history.push(candidate);
        Ok(())
    }
}
