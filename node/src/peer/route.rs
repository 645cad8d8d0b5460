//! Message routing: inbound messages from the network, scheduling messages routed to the owner
//! of their job or to the peer scheduler, and transmits sent out.
//!
//! Invariants: a message to this peer itself never touches the network (it is queued in
//! `Actor::local` and delivered in order by `drain`); a report for a job not owned here (finished
//! or cancelled) is dropped; every message to another peer goes through its outbox (ordered,
//! bounded: see [`super::outbox`]).

use shoal_core::ids::PeerId;
use shoal_core::sched::{SchedMsg, Transmit};
use shoal_core::wire::Message;
use shoal_net::Inbound;
use tracing::{debug, trace};

use super::Actor;

impl Actor {
    pub(super) fn on_inbound(&mut self, inbound: Inbound) {
        let Inbound { from, message, reply } = inbound;
        match (message, reply) {
            (Message::Sched(msg), _) => {
                self.learn_addresses(&msg);
                self.dispatch(from, msg);
                self.drain();
            }
            (Message::Ping(n), Some(reply)) => {
                let _ = reply.send(Message::Pong(n));
            }
            (other, _) => trace!(peer = %from.short(), "ignored message {other:?}"),
        }
    }

    /// Routes one scheduling message to the owner of its job or to the peer scheduler.
    pub(super) fn dispatch(&mut self, from: PeerId, msg: SchedMsg) {
        if msg.for_driver() {
            self.on_job_msg(from, msg);
            return;
        }
        let now = self.now();
        match msg.owner_job() {
            Some(job) => match self.jobs.get_mut(&job) {
                Some(entry) => {
                    if let Err(e) = entry.owner.handle_msg(now, from, msg) {
                        debug!(peer = %from.short(), %job, "owner refused a message: {e}");
                    }
                }
                None => trace!(%job, "report for a job not owned here (finished or cancelled)"),
            },
            None => self.sched.handle_msg(now, from, msg, &mut self.rng),
        }
    }

    pub(super) fn transmit(&mut self, mut t: Transmit) {
        if t.to == self.me {
            self.local.push_back(t.msg);
            return;
        }
        if matches!(t.msg, SchedMsg::Deputize { .. }) {
            t.msg = self.deputize_by_blobs(t.msg);
        }
        self.attach_addresses(t.to, &mut t.msg);
        self.outbox.send(t.to, Message::Sched(t.msg));
    }
}
