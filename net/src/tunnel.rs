//! The endpoint's socket: the real UDP socket, plus relayed paths that look like addresses.
//!
//! A relayed path (peer `P` reached through relay `R`, see [`crate::relay`]) gets a *virtual*
//! address in `240.0.0.0/4`, a block reserved for future use and never routed. quinn sends to
//! and receives from it like from any address; [`TunnelSocket`] hands datagrams for virtual
//! addresses to the relay pump instead of the kernel, and delivers datagrams the relay pump
//! received as if they came from the virtual address. The QUIC connection over a relayed path
//! is therefore end-to-end (TLS between the two peers, the relay sees only ciphertext), and
//! everything above it (streams, blobs, membership) works unchanged.
//!
//! Invariants: a virtual address never reaches the kernel socket; relayed datagrams in either
//! direction are bounded ([`QUEUE`] each way) and dropped beyond, like a full UDP buffer.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;

/// Datagrams queued per direction between the socket and the relay pump.
pub(crate) const QUEUE: usize = 1024;

/// The virtual address of relayed path number `index`.
pub(crate) fn virtual_addr(index: u32) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(0xF000_0000 | (index & 0x0FFF_FFFF)), 1))
}

/// Whether `addr` is a virtual (relayed) address, in either IPv4 or IPv4-mapped IPv6 form.
pub(crate) fn is_virtual(addr: SocketAddr) -> bool {
    match addr.ip().to_canonical() {
        std::net::IpAddr::V4(v4) => v4.octets()[0] & 0xF0 == 0xF0 && !v4.is_broadcast(),
        std::net::IpAddr::V6(_) => false,
    }
}

/// Datagrams quinn sent to virtual addresses, for the relay pump.
pub(crate) type Outgoing = mpsc::Receiver<(SocketAddr, Vec<u8>)>;

/// Datagrams received over relays, waiting for quinn.
#[derive(Default)]
struct Arrivals {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

/// The handle the relay pump uses to deliver datagrams to the endpoint.
#[derive(Clone)]
pub(crate) struct Deliver {
    arrivals: Arc<Mutex<Arrivals>>,
    v6: bool,
}

impl fmt::Debug for Deliver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deliver").finish_non_exhaustive()
    }
}

impl Deliver {
    /// Hands quinn a datagram from virtual address `from`; false when the queue is full (the
    /// datagram is dropped).
    pub(crate) fn deliver(&self, from: SocketAddr, datagram: Vec<u8>) -> bool {
        // A dual-stack socket reports IPv4 sources in IPv4-mapped form; so do we.
        let from = match (self.v6, from) {
            (true, SocketAddr::V4(v4)) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
            (_, a) => a,
        };
        let mut a = self.arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if a.queue.len() >= QUEUE {
            return false;
        }
        a.queue.push_back((from, datagram));
        if let Some(w) = a.waker.take() {
            w.wake();
        }
        true
    }
}

/// The endpoint's socket (see the module docs).
pub(crate) struct TunnelSocket {
    real: Arc<dyn AsyncUdpSocket>,
    arrivals: Arc<Mutex<Arrivals>>,
    outgoing: mpsc::Sender<(SocketAddr, Vec<u8>)>,
}

impl fmt::Debug for TunnelSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelSocket").field("real", &self.real).finish_non_exhaustive()
    }
}

impl TunnelSocket {
    /// Wraps `real`; returns the socket, the receiver of datagrams for virtual addresses and
    /// the handle that delivers relayed datagrams.
    pub(crate) fn new(real: Arc<dyn AsyncUdpSocket>) -> io::Result<(Arc<Self>, Outgoing, Deliver)> {
        let v6 = real.local_addr()?.is_ipv6();
        let (outgoing, rx) = mpsc::channel(QUEUE);
        let arrivals = Arc::new(Mutex::new(Arrivals::default()));
        let deliver = Deliver { arrivals: arrivals.clone(), v6 };
        Ok((Arc::new(TunnelSocket { real, arrivals, outgoing }), rx, deliver))
    }
}

impl AsyncUdpSocket for TunnelSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.real.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if !is_virtual(transmit.destination) {
            return self.real.try_send(transmit);
        }
        let to = SocketAddr::new(transmit.destination.ip().to_canonical(), transmit.destination.port());
        let size = transmit.segment_size.unwrap_or(transmit.contents.len()).max(1);
        for datagram in transmit.contents.chunks(size) {
            // A full queue drops the datagram, as a full socket buffer would; QUIC recovers.
            let _ = self.outgoing.try_send((to, datagram.to_vec()));
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        {
            let mut a = self.arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let (Some((from, datagram)), Some(buf), Some(m)) =
                (a.queue.pop_front(), bufs.first_mut(), meta.first_mut())
            {
                let len = datagram.len().min(buf.len());
                buf[..len].copy_from_slice(&datagram[..len]);
                *m = RecvMeta { addr: from, len, stride: len, ecn: None, dst_ip: None };
                return Poll::Ready(Ok(1));
            }
            a.waker = Some(cx.waker().clone());
        }
        self.real.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.real.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.real.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.real.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.real.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_addresses_are_recognised_in_both_forms_and_real_ones_are_not() {
        for i in [0, 1, 77, 0x0FFF_FFFE] {
            let a = virtual_addr(i);
            assert!(is_virtual(a), "{a}");
            let mapped = SocketAddr::new(
                match a.ip() {
                    std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().into(),
                    ip => ip,
                },
                a.port(),
            );
            assert!(is_virtual(mapped), "{mapped}");
        }
        for real in ["10.0.0.1:7600", "192.168.1.2:1", "[::1]:7600", "255.255.255.255:1", "239.1.1.1:5353"] {
            assert!(!is_virtual(real.parse().unwrap()), "{real}");
        }
    }
}
