//! Per-peer limits and the inbound token bucket that enforces the byte rate.
//!
//! Invariant: a connection never reads more than `burst + rate × elapsed` frame payload bytes
//! from its peer: every stream of the connection takes tokens from one shared bucket after the
//! length check and before reading the payload. Once over, its streams stop reading and QUIC
//! flow control pushes back on that peer alone, so one noisy peer cannot starve the others.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Limits applied to every peer connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame payload accepted or sent (bytes). Blob bytes are not framed.
    pub max_frame: usize,
    /// Concurrent streams a peer may open towards us, per direction (uni and bi).
    pub max_concurrent_streams: u32,
    /// Sustained inbound frame bytes per second per peer.
    pub inbound_bytes_per_sec: u64,
    /// Inbound burst allowance per peer (bytes).
    pub inbound_burst: u64,
    /// Largest blob fetched or served.
    pub max_blob_size: u64,
    /// Time for TLS plus the Shoal `Hello` exchange.
    pub handshake_timeout: Duration,
    /// Time a request waits for its response (and a responder for the application's reply).
    pub request_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Connections this peer dialled send a keep-alive when idle this long, so they (and the
    /// NAT mappings under them) stay up while the peer needs them as mediators; `None` for none.
    pub keep_alive: Option<Duration>,
    /// QUIC flow-control window per stream (bytes a peer may send ahead of our reading).
    pub stream_window: u32,
    /// QUIC flow-control window per connection: the most one peer can make us buffer.
    pub connection_window: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: shoal_core::wire::DEFAULT_MAX_FRAME,
            max_concurrent_streams: 128,
            inbound_bytes_per_sec: 16 << 20,
            inbound_burst: 4 << 20,
            max_blob_size: 1 << 30,
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            keep_alive: Some(Duration::from_secs(4)),
            stream_window: 8 << 20,
            connection_window: 16 << 20,
        }
    }
}

/// A token bucket over bytes.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    pub(crate) fn new(rate: u64, burst: u64) -> Self {
        Bucket {
            rate: rate.max(1) as f64,
            burst: burst as f64,
            state: Mutex::new((burst as f64, Instant::now())),
        }
    }

    /// Takes `n` bytes' worth of tokens, waiting while the bucket is in debt.
    pub(crate) async fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.burst) - n as f64;
            s.1 = now;
            if s.0 < 0.0 { Some(Duration::from_secs_f64(-s.0 / self.rate)) } else { None }
        };
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_holds_the_rate() {
        let b = Bucket::new(1000, 500);
        let start = Instant::now();
        for _ in 0..10 {
            b.take(250).await;
        }
        // 2500 bytes at 1000 B/s with a 500-byte burst: at least 2 s of (virtual) waiting.
        assert!(Instant::now() - start >= Duration::from_secs(2));
    }
}
