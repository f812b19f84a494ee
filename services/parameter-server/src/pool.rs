//! Payload buffers reused from one push to the next. A pushed result is put
//! together in one buffer, which the engine decodes; a new buffer the size of
//! a ResNet-18 gradient (44.7 MB) is a fresh mapping, and its 11,000 page
//! faults cost a push on loopback about a third of its time
//! (`bench-transport`). The engine hands each buffer back once it has decoded
//! the result, and a later push of about that size fills the same memory.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

/// Idle buffers kept at most, in bytes: a few updates' worth of shards of
/// the models the service trains (the memory stays with the process).
pub const MAX_IDLE_BYTES: usize = 512 << 20;

pub struct PayloadPool {
    idle: Mutex<Vec<Vec<u8>>>,
    max_idle_bytes: usize,
}

impl std::fmt::Debug for PayloadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.lock();
        f.debug_struct("PayloadPool")
            .field("idle_buffers", &idle.len())
            .field("idle_bytes", &idle.iter().map(Vec::capacity).sum::<usize>())
            .field("max_idle_bytes", &self.max_idle_bytes)
            .finish()
    }
}

impl PayloadPool {
    #[must_use]
    pub fn new(max_idle_bytes: usize) -> Self {
        Self { idle: Mutex::new(Vec::new()), max_idle_bytes }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty buffer for a payload of `size` bytes: the smallest idle one
    /// that holds it and is not more than twice as large, else a new, empty
    /// one (allocated by whoever fills it).
    #[must_use]
    pub fn take(&self, size: usize) -> Vec<u8> {
        let mut idle = self.lock();
        let fits = idle
            .iter()
            .enumerate()
            .filter(|(_, b)| (size..=size.saturating_mul(2)).contains(&b.capacity()))
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        fits.map(|i| idle.swap_remove(i)).unwrap_or_default()
    }

    /// Takes back a decoded payload once nothing else refers to its memory
    /// (otherwise, or when the pool is full, it is simply dropped).
    pub fn give(&self, payload: Bytes) {
        let Ok(mut buffer) = payload.try_into_mut() else { return };
        buffer.clear();
        let buffer = Vec::from(buffer);
        let mut idle = self.lock();
        let held: usize = idle.iter().map(Vec::capacity).sum();
        if held + buffer.capacity() <= self.max_idle_bytes {
            idle.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_only_when_unshared() {
        let pool = PayloadPool::new(1 << 20);
        let mut first = pool.take(1000);
        first.extend_from_slice(&[7; 1000]);
        let address = first.as_ptr();
        let first = Bytes::from(first);
        let (head, tail) = (first.slice(..600), first.slice(600..));
        drop(first);
        pool.give(head.clone());
        assert!(pool.lock().is_empty(), "still shared: not taken back");
        drop(tail);
        pool.give(head);
        let again = pool.take(900);
        assert!(again.is_empty() && again.capacity() >= 1000);
        assert_eq!(again.as_ptr(), address, "the same memory");
        assert!(pool.lock().is_empty());
    }

    #[test]
    fn sizes_and_the_idle_limit_are_respected() {
        let pool = PayloadPool::new(3000);
        for _ in 0..4 {
            pool.give(Bytes::from(vec![1; 1000]));
        }
        assert_eq!(pool.lock().len(), 3, "the fourth is over the limit");
        assert_eq!(pool.take(400).capacity(), 0, "an idle buffer over twice the size is left alone");
        assert!(pool.take(600).capacity() >= 1000);
        assert_eq!(pool.take(1001).capacity(), 0);
        assert_eq!(pool.lock().len(), 2);
    }
}
