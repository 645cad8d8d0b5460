//! Membership: a bounded, random partial view of the swarm, kept fresh by shuffles and probes.
//!
//! [`Membership`] is a sans-IO state machine in the style of `quinn-proto` and `foca`: it never
//! reads a clock, a socket or an RNG. The driver (`shoal-net`, or the simulator) feeds it
//!
//! - [`Membership::handle_join`] once, with bootstrap addresses,
//! - [`Membership::handle_message`] for every membership message from an authenticated peer,
//! - [`Membership::handle_timer`] when a timer it asked for fires (stale timers are ignored by
//!   their token, so the driver never needs to cancel one),
//! - [`Membership::handle_send_failed`] / [`Membership::handle_connection_lost`] when the
//!   transport notices trouble, and [`Membership::handle_leave`] to go away gracefully,
//!
//! and after each input drains [`Membership::poll_transmit`], [`Membership::poll_timer`] and
//! [`Membership::poll_event`] until they return `None`.
//!
//! # Protocol
//!
//! - **View.** At most [`Config::view_size`] entries, never containing the local peer, a peer
//!   in the dead set, or two entries for one peer.
//! - **Shuffle** (Cyclon): every [`Config::shuffle_interval`] all ages grow by one and the peer
//!   exchanges up to [`Config::shuffle_len`] entries (including a fresh one for itself) with its
//!   oldest neighbour; received entries fill free slots, then replace entries that were sent.
//!   This keeps views random and the overlay connected without anyone knowing everyone.
//! - **Probes**: every [`Config::probe_interval`] each view member without an outstanding probe
//!   gets one; [`Config::max_missed`] consecutive misses (timeouts or failed sends) remove it as
//!   failed. A peer that dies is thus dropped by every view holding it within
//!   `max_missed × probe_interval + probe_timeout` of that holder's next probe round.
//! - **Reconnect**: with an empty view a peer rejoins through its bootstrap list and the peers
//!   that recently left its view; otherwise, every [`Config::join_retry`], it sends `Join` to one
//!   peer it declared failed and has not heard from since, so a group that lost every edge to
//!   the rest under loss or a network split finds it again.
//! - **Leave**: a leaving peer tells its view and every peer that probed it recently; they drop
//!   it at once. Failed and departed peers go to a dead set for [`Config::dead_ttl`] so stale
//!   shuffle entries cannot bring them back; a peer that talks to us directly is alive again.
//! - **Load hints** ride on probes, acks, joins and the sender's own shuffle entry.
//!
//! # Why not `foca` or `iroh-gossip`
//!
//! See `docs/membership.md`: foca is SWIM (a full-membership protocol: every peer ends up knowing
//! every other one, which conflicts with a bounded view) and iroh-gossip's `proto` carries its own
//! identity, addressing and serde/postcard codec tied to iroh types; neither carries our load hints.

mod msg;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

use crate::ids::PeerId;
pub use crate::sansio::LoadHint;
pub use msg::{Entry, MemberMsg};

use crate::sansio::Time;
use rand::RngCore;

/// Tunables of the membership protocol. [`Config::default`] suits a LAN or the internet.
#[derive(Debug, Clone)]
pub struct Config {
    /// Maximum entries in the partial view.
    pub view_size: usize,
    /// Entries exchanged per shuffle.
    pub shuffle_len: usize,
    /// Time between shuffles.
    pub shuffle_interval: Duration,
    /// Time between probe rounds.
    pub probe_interval: Duration,
    /// How long a probe waits for its ack before it counts as missed.
    pub probe_timeout: Duration,
    /// Consecutive missed probes after which a peer is declared failed.
    pub max_missed: u32,
    /// How long a failed or departed peer is kept out of the view.
    pub dead_ttl: Duration,
    /// Entries older than this (in shuffle rounds) are not accepted from others.
    pub max_age: u32,
    /// How often to retry joining while the view is empty, and otherwise to announce ourselves
    /// (a `Join`) to one peer we declared failed, which heals a partition (see [`Membership`]).
    pub join_retry: Duration,
    /// Maximum number of remembered dead peers and recent probers (memory bound).
    pub max_tracked: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            view_size: 16,
            shuffle_len: 8,
            shuffle_interval: Duration::from_secs(1),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(800),
            max_missed: 2,
            dead_ttl: Duration::from_secs(60),
            max_age: 60,
            join_retry: Duration::from_secs(2),
            max_tracked: 1024,
        }
    }
}

impl Config {
    /// The longest time, after a peer dies, until a holder that already has it in view drops it:
    /// one probe round to notice, `max_missed` misses, plus a timeout.
    pub fn failure_detection_bound(&self) -> Duration {
        self.probe_interval * (self.max_missed + 1) + self.probe_timeout
    }
}

/// Where a membership message must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A known peer at its known address.
    Peer(PeerId, SocketAddr),
    /// An address whose peer is not known yet (bootstrap); the driver learns the id on connect.
    Addr(SocketAddr),
}

/// A membership message to send.
pub type Transmit = crate::sansio::Transmit<MemberMsg, Target>;

/// A membership timer to arm: call [`Membership::handle_timer`] with its token at `at`.
pub type Timer = crate::sansio::Timer<TimerToken>;

/// What a timer is for. Compared with the machine's state when it fires; stale ones do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// Time for a shuffle.
    Shuffle,
    /// Time for a probe round.
    ProbeRound,
    /// A probe to `peer` has had time to be answered.
    ProbeTimeout(PeerId),
    /// Retry joining if the view is still empty.
    JoinRetry,
}

/// What a membership timer carries back to [`Membership::handle_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerToken {
    /// What the timer is for.
    pub kind: TimerKind,
    /// Generation (round timers) or probe sequence (probe timeouts): a fired timer whose token
    /// no longer matches the state is stale and ignored.
    pub token: u64,
}

/// Why a peer left the local view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// Replaced by a shuffle or a join (the peer is probably alive).
    Replaced,
    /// Missed too many probes.
    Failed,
    /// Announced it was leaving.
    Left,
}

/// A change of the local view, for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A peer entered the view.
    Added(Entry),
    /// A peer left the view.
    Removed(PeerId, RemoveReason),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    entry: Entry,
    /// Outstanding probe sequence number, if any.
    probing: Option<u64>,
    missed: u32,
    /// When the peer itself last showed it was alive (ack or any message from it).
    alive_at: Option<Duration>,
}

/// The membership state machine of one peer. See the module docs for the call order.
#[derive(Debug)]
pub struct Membership {
    me: PeerId,
    cfg: Config,
    hints: LoadHint,
    view: Vec<Slot>,
    bootstrap: Vec<SocketAddr>,
    /// Peers that left the view other than by leaving (failed or replaced), newest first, at
    /// most `view_size`: with an empty view a peer rejoins through them as well as through its
    /// bootstrap list (a peer with no bootstrap list, the swarm's first, would otherwise stay
    /// alone after losing its view to a bad network).
    fallback: VecDeque<(PeerId, SocketAddr)>,
    /// Peers we declared failed and have not heard from since, newest first, at most
    /// `view_size`: every `join_retry` one of them gets a `Join` (SWIM's "announce to down
    /// members", as foca does), so two groups that each dropped the other under loss find each
    /// other again once it stops. A peer leaves the list when it talks to us or enters our view.
    down: VecDeque<(PeerId, SocketAddr)>,
    /// Failed or departed peers, with the time until which they are refused.
    dead: BTreeMap<PeerId, Duration>,
    /// Peers that probed us recently (they have us in view): address and last time seen.
    probers: BTreeMap<PeerId, (SocketAddr, Duration)>,
    /// Entries sent in the outstanding shuffle, by seq.
    shuffle_sent: Option<(u64, Vec<PeerId>)>,
    seq: u64,
    generation: u64,
    started: bool,
    left: bool,
    transmits: VecDeque<Transmit>,
    timers: VecDeque<Timer>,
    events: VecDeque<Event>,
}

impl Membership {
    /// A machine for peer `me`. Nothing happens until [`Membership::handle_join`].
    pub fn new(me: PeerId, cfg: Config) -> Self {
        Membership {
            me,
            cfg,
            hints: LoadHint::default(),
            view: Vec::new(),
            bootstrap: Vec::new(),
            fallback: VecDeque::new(),
            down: VecDeque::new(),
            dead: BTreeMap::new(),
            probers: BTreeMap::new(),
            shuffle_sent: None,
            seq: 0,
            generation: 0,
            started: false,
            left: false,
            transmits: VecDeque::new(),
            timers: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The local peer.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The current view.
    pub fn view(&self) -> impl Iterator<Item = &Entry> {
        self.view.iter().map(|s| &s.entry)
    }

    /// The view entry for `peer`, if it is in view.
    pub fn get(&self, peer: &PeerId) -> Option<&Entry> {
        self.view.iter().find(|s| s.entry.id == *peer).map(|s| &s.entry)
    }

    /// The local load hints, as last set.
    pub fn hints(&self) -> LoadHint {
        self.hints
    }

    /// Whether [`Membership::handle_leave`] was called.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Sets the local load hints; they travel with the next probes, acks and shuffles.
    pub fn handle_hints(&mut self, _now: Time, hints: LoadHint) {
        self.hints = hints;
    }

    /// Starts the protocol: sends `Join` to every bootstrap address and arms the periodic timers.
    /// An empty list makes this peer the first of a swarm (it waits to be joined).
    pub fn handle_join(&mut self, now: Time, bootstrap: &[SocketAddr]) {
        if self.started || self.left {
            return;
        }
        self.started = true;
        self.bootstrap = bootstrap.to_vec();
        self.send_joins();
        let g = self.generation;
        self.timer(now + self.cfg.shuffle_interval, TimerKind::Shuffle, g);
        self.timer(now + self.cfg.probe_interval, TimerKind::ProbeRound, g);
        self.timer(now + self.cfg.join_retry, TimerKind::JoinRetry, g);
    }

    /// Leaves gracefully: tells the view and recent probers, empties the view. Afterwards every
    /// message from a peer is answered with `Leave` and timers are ignored.
    pub fn handle_leave(&mut self, _now: Time) {
        if self.left {
            return;
        }
        self.left = true;
        self.generation += 1;
        let mut told: Vec<PeerId> = Vec::new();
        for s in std::mem::take(&mut self.view) {
            told.push(s.entry.id);
            self.send(Target::Peer(s.entry.id, s.entry.addr), MemberMsg::Leave);
            self.events.push_back(Event::Removed(s.entry.id, RemoveReason::Left));
        }
        for (id, (addr, _)) in std::mem::take(&mut self.probers) {
            if !told.contains(&id) {
                self.send(Target::Peer(id, addr), MemberMsg::Leave);
            }
        }
    }

    /// Handles a membership message from the authenticated peer `from`, reached at `addr`.
    pub fn handle_message(
        &mut self,
        now: Time,
        from: PeerId,
        addr: SocketAddr,
        msg: MemberMsg,
        rng: &mut dyn RngCore,
    ) {
        if from == self.me {
            return;
        }
        if self.left {
            // Whoever still talks to us missed the announcement: tell them (the driver keeps the
            // endpoint up for a grace period after leaving).
            if !matches!(msg, MemberMsg::Leave) {
                self.send(Target::Peer(from, addr), MemberMsg::Leave);
            }
            return;
        }
        if !matches!(msg, MemberMsg::Leave) {
            // A peer that talks to us first-hand is alive, whatever we heard before.
            self.dead.remove(&from);
        }
        // Alive, or gone for good: either way no longer one to announce ourselves to.
        self.down.retain(|(d, _)| *d != from);
        self.dispatch(now, from, addr, msg, rng);
        if let Some(s) = self.slot_mut(&from) {
            s.alive_at = Some(now);
        }
    }

    fn dispatch<R: Rng + ?Sized>(
        &mut self,
        now: Duration,
        from: PeerId,
        addr: SocketAddr,
        msg: MemberMsg,
        rng: &mut R,
    ) {
        match msg {
            MemberMsg::Join { hints } => {
                let mut entries = self.sample(now, self.cfg.view_size.saturating_sub(1), &[from], rng);
                entries.push(self.self_entry(addr));
                self.send(Target::Peer(from, addr), MemberMsg::JoinReply { entries });
                self.insert_first_hand(Entry { id: from, addr, age: 0, hints }, rng);
            }
            MemberMsg::JoinReply { entries } => {
                for e in entries {
                    let e = if e.id == from { Entry { addr, age: 0, ..e } } else { e };
                    self.merge_one(e, &mut Vec::new());
                }
            }
            MemberMsg::Shuffle { seq, entries } => {
                let reply = self.sample(now, self.cfg.shuffle_len, &[from], rng);
                let sent: Vec<PeerId> = reply.iter().map(|e| e.id).collect();
                self.send(Target::Peer(from, addr), MemberMsg::ShuffleReply { seq, entries: reply });
                self.merge(from, addr, entries, &sent, rng);
            }
            MemberMsg::ShuffleReply { seq, entries } => {
                let sent = match self.shuffle_sent.take() {
                    Some((s, sent)) if s == seq => sent,
                    other => {
                        self.shuffle_sent = other;
                        Vec::new()
                    }
                };
                self.merge(from, addr, entries, &sent, rng);
            }
            MemberMsg::Probe { seq, hints } => {
                self.send(Target::Peer(from, addr), MemberMsg::ProbeAck { seq, hints: self.hints });
                self.note_prober(now, from, addr);
                if let Some(s) = self.slot_mut(&from) {
                    s.entry.hints = hints;
                } else if self.view.len() < self.cfg.view_size {
                    self.insert_first_hand(Entry { id: from, addr, age: 0, hints }, rng);
                }
            }
            MemberMsg::ProbeAck { seq, hints } => {
                if let Some(s) = self.slot_mut(&from)
                    && s.probing == Some(seq)
                {
                    s.probing = None;
                    s.missed = 0;
                    s.entry.hints = hints;
                    s.entry.addr = addr;
                    s.alive_at = Some(now);
                }
            }
            MemberMsg::Leave => {
                self.probers.remove(&from);
                self.mark_dead(now, from);
                self.remove(&from, RemoveReason::Left);
            }
        }
    }

    /// Handles a timer previously returned by [`Membership::poll_timer`].
    pub fn handle_timer(&mut self, now: Time, timer: TimerToken, rng: &mut dyn RngCore) {
        if self.left {
            return;
        }
        match timer.kind {
            TimerKind::Shuffle if timer.token == self.generation => {
                self.timer(now + self.cfg.shuffle_interval, TimerKind::Shuffle, self.generation);
                self.shuffle(now, rng);
            }
            TimerKind::ProbeRound if timer.token == self.generation => {
                self.timer(now + self.cfg.probe_interval, TimerKind::ProbeRound, self.generation);
                self.expire(now);
                let ids: Vec<PeerId> =
                    self.view.iter().filter(|s| s.probing.is_none()).map(|s| s.entry.id).collect();
                for id in ids {
                    self.probe(now, id);
                }
            }
            TimerKind::JoinRetry if timer.token == self.generation => {
                self.timer(now + self.cfg.join_retry, TimerKind::JoinRetry, self.generation);
                if self.view.is_empty() {
                    self.send_joins();
                } else if let Some(&(id, addr)) = self.down.make_contiguous().choose(rng) {
                    // The view may hold only our side of a partition: announce ourselves to the
                    // other side (the contact adds us, its reply brings its view).
                    self.send(Target::Peer(id, addr), MemberMsg::Join { hints: self.hints });
                }
            }
            TimerKind::ProbeTimeout(peer) => {
                if self.slot_mut(&peer).is_some_and(|s| s.probing == Some(timer.token)) {
                    self.missed(now, peer);
                }
            }
            // A round timer from an older generation: stale.
            TimerKind::Shuffle | TimerKind::ProbeRound | TimerKind::JoinRetry => {}
        }
    }

    /// The driver could not deliver a message to `peer` (dial or stream failure): counts as a
    /// missed probe.
    pub fn handle_send_failed(&mut self, now: Duration, peer: PeerId) {
        if self.left {
            return;
        }
        if self.get(&peer).is_some() {
            self.missed(now, peer);
        }
    }

    /// The transport lost its connection to `peer`: probe it now rather than at the next round.
    pub fn handle_connection_lost(&mut self, now: Duration, peer: PeerId) {
        if self.left {
            return;
        }
        if self.slot_mut(&peer).is_some_and(|s| s.probing.is_none()) {
            self.probe(now, peer);
        }
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next timer to arm: call [`Membership::handle_timer`] with it at the given time.
    pub fn poll_timer(&mut self) -> Option<Timer> {
        self.timers.pop_front()
    }

    /// Next view change.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- internals ----

    fn send(&mut self, to: Target, msg: MemberMsg) {
        self.transmits.push_back(Transmit { to, msg });
    }

    fn timer(&mut self, at: Duration, kind: TimerKind, token: u64) {
        self.timers.push_back(Timer { at, token: TimerToken { kind, token } });
    }

    fn send_joins(&mut self) {
        for a in self.bootstrap.clone() {
            self.send(Target::Addr(a), MemberMsg::Join { hints: self.hints });
        }
        for (id, addr) in self.fallback.clone() {
            if !self.bootstrap.contains(&addr) {
                self.send(Target::Peer(id, addr), MemberMsg::Join { hints: self.hints });
            }
        }
    }

    fn self_entry(&self, addr_seen_by_peer: SocketAddr) -> Entry {
        // The address is a placeholder: receivers replace it with the address they observe for
        // the sender, which is the one that works for them.
        Entry { id: self.me, addr: addr_seen_by_peer, age: 0, hints: self.hints }
    }

    fn slot_mut(&mut self, id: &PeerId) -> Option<&mut Slot> {
        self.view.iter_mut().find(|s| s.entry.id == *id)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn probe(&mut self, now: Duration, id: PeerId) {
        let seq = self.next_seq();
        let hints = self.hints;
        let Some(s) = self.slot_mut(&id) else { return };
        s.probing = Some(seq);
        let addr = s.entry.addr;
        self.send(Target::Peer(id, addr), MemberMsg::Probe { seq, hints });
        self.timer(now + self.cfg.probe_timeout, TimerKind::ProbeTimeout(id), seq);
    }

    fn missed(&mut self, now: Duration, id: PeerId) {
        let max = self.cfg.max_missed;
        let Some(s) = self.slot_mut(&id) else { return };
        s.probing = None;
        s.missed += 1;
        if s.missed >= max {
            self.mark_dead(now, id);
            self.remove(&id, RemoveReason::Failed);
        }
    }

    fn mark_dead(&mut self, now: Duration, id: PeerId) {
        self.dead.insert(id, now + self.cfg.dead_ttl);
        if self.dead.len() > self.cfg.max_tracked
            && let Some(oldest) = self.dead.iter().min_by_key(|(_, until)| **until).map(|(k, _)| *k)
        {
            self.dead.remove(&oldest);
        }
    }

    fn note_prober(&mut self, now: Duration, id: PeerId, addr: SocketAddr) {
        self.probers.insert(id, (addr, now));
        if self.probers.len() > self.cfg.max_tracked
            && let Some(oldest) = self.probers.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k)
        {
            self.probers.remove(&oldest);
        }
    }

    fn expire(&mut self, now: Duration) {
        self.dead.retain(|_, until| *until > now);
        let keep = self.cfg.probe_interval * 3;
        self.probers.retain(|_, (_, seen)| now.saturating_sub(*seen) <= keep);
    }

    fn remove(&mut self, id: &PeerId, reason: RemoveReason) -> Option<Entry> {
        let i = self.view.iter().position(|s| s.entry.id == *id)?;
        let s = self.view.swap_remove(i);
        if reason != RemoveReason::Left {
            remember(&mut self.fallback, (*id, s.entry.addr), self.cfg.view_size);
        }
        if reason == RemoveReason::Failed {
            remember(&mut self.down, (*id, s.entry.addr), self.cfg.view_size);
        }
        self.events.push_back(Event::Removed(*id, reason));
        Some(s.entry)
    }

    fn push(&mut self, entry: Entry) {
        self.down.retain(|(d, _)| *d != entry.id);
        self.view.push(Slot { entry, probing: None, missed: 0, alive_at: None });
        self.events.push_back(Event::Added(entry));
    }

    /// A random sample of up to `n` view entries, excluding `except`, among those whose peer
    /// showed it was alive within the last probe round: an entry for a dead peer therefore stops
    /// spreading one round after its death, which is what bounds failure detection.
    fn sample<R: Rng + ?Sized>(&self, now: Duration, n: usize, except: &[PeerId], rng: &mut R) -> Vec<Entry> {
        let fresh = self.cfg.probe_interval + self.cfg.probe_timeout;
        let candidates: Vec<Entry> = self
            .view
            .iter()
            .filter(|s| s.alive_at.is_some_and(|t| now.saturating_sub(t) <= fresh))
            .map(|s| s.entry)
            .filter(|e| !except.contains(&e.id))
            .collect();
        candidates.choose_multiple(rng, n).copied().collect()
    }

    /// Inserts an entry that its own peer just vouched for, making room if needed.
    fn insert_first_hand<R: Rng + ?Sized>(&mut self, entry: Entry, rng: &mut R) {
        if let Some(s) = self.slot_mut(&entry.id) {
            s.entry = entry;
            return;
        }
        if self.view.len() >= self.cfg.view_size {
            // Evict a random entry (HyParView's rule), so the newcomer always gets in.
            let Some(victim) = self.view.choose(rng).map(|s| s.entry.id) else { return };
            self.remove(&victim, RemoveReason::Replaced);
        }
        self.push(entry);
    }

    /// Cyclon merge: the sender's own entry is first-hand and goes first, so it always gets in
    /// (a free slot, else an entry we sent, else a random one, as for a join): a peer whose entry
    /// every holder happened to trade away is back in a view at its next shuffle. The others fill
    /// free slots, then replace entries we sent in this exchange.
    fn merge<R: Rng + ?Sized>(
        &mut self,
        from: PeerId,
        addr: SocketAddr,
        entries: Vec<Entry>,
        sent: &[PeerId],
        rng: &mut R,
    ) {
        let mut replaceable: Vec<PeerId> = sent.iter().copied().filter(|id| *id != from).collect();
        replaceable.shuffle(rng);
        let (own, others): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| e.id == from);
        if let Some(e) = own.into_iter().next() {
            let e = Entry { addr, age: 0, ..e };
            if let Some(s) = self.slot_mut(&from) {
                s.entry = e;
            } else {
                self.merge_one(e, &mut replaceable);
                if self.slot_mut(&from).is_none() {
                    self.insert_first_hand(e, rng);
                }
            }
        }
        for e in others {
            self.merge_one(e, &mut replaceable);
        }
    }

    fn merge_one(&mut self, e: Entry, replaceable: &mut Vec<PeerId>) {
        if e.id == self.me || e.age > self.cfg.max_age || self.dead.contains_key(&e.id) {
            return;
        }
        if let Some(s) = self.slot_mut(&e.id) {
            if e.age < s.entry.age {
                s.entry.age = e.age;
                s.entry.hints = e.hints;
            }
            return;
        }
        if self.view.len() < self.cfg.view_size {
            self.push(e);
            return;
        }
        while let Some(victim) = replaceable.pop() {
            if self.remove(&victim, RemoveReason::Replaced).is_some() {
                self.push(e);
                return;
            }
        }
    }

    fn shuffle<R: Rng + ?Sized>(&mut self, now: Duration, rng: &mut R) {
        for s in &mut self.view {
            s.entry.age = s.entry.age.saturating_add(1);
        }
        let Some(target) = self.view.iter().max_by_key(|s| s.entry.age).map(|s| s.entry) else {
            return;
        };
        if let Some(s) = self.slot_mut(&target.id) {
            s.entry.age = 0;
        }
        let mut entries = self.sample(now, self.cfg.shuffle_len.saturating_sub(1), &[target.id], rng);
        let sent: Vec<PeerId> = entries.iter().map(|e| e.id).collect();
        entries.push(self.self_entry(target.addr));
        let seq = self.next_seq();
        self.shuffle_sent = Some((seq, sent));
        self.send(Target::Peer(target.id, target.addr), MemberMsg::Shuffle { seq, entries });
    }
}

/// Puts `peer` first in a newest-first list of at most `max` peers, without duplicates.
fn remember(list: &mut VecDeque<(PeerId, SocketAddr)>, peer: (PeerId, SocketAddr), max: usize) {
    list.retain(|(p, _)| *p != peer.0);
    list.push_front(peer);
    list.truncate(max);
}
