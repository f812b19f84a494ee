//! How many connections one peer may hold open to a port.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts each peer IP address's open connections to one port and admits a
/// new one only while the peer is below the limit.
///
/// Behind a load balancer or an ingress every client arrives from its
/// address, so the limit must cover all of them there.
#[derive(Clone, Debug)]
pub struct ConnectionsPerPeer {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionsPerPeer {
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self { limit, open: Arc::default() }
    }

    /// A place for one more connection from `peer`, to hold as long as the
    /// connection is open; `None` when `peer` already holds the limit.
    #[must_use]
    pub fn admit(&self, peer: IpAddr) -> Option<PeerPermit> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(peer).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(PeerPermit { peer, open: self.open.clone() })
    }

    /// The limit per peer.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// One admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct PeerPermit {
    peer: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_holds_at_most_the_limit_and_a_closed_connection_frees_its_place() {
        let peers = ConnectionsPerPeer::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = peers.admit(a).unwrap();
        let _second = peers.admit(a).unwrap();
        assert!(peers.admit(a).is_none(), "the third from one peer is refused");
        assert!(peers.admit(b).is_some(), "other peers have their own count");
        drop(first);
        assert!(peers.admit(a).is_some());
    }
}
