//! Shared memory between a host and its sandbox: weights go in and
//! gradients come out through `memfd` regions mapped by both processes, so
//! the sandbox costs one `memcpy` each way instead of a pipe's copies.
//!
//! The parent creates every region (the sandbox cannot create files of any
//! size: its `RLIMIT_FSIZE` is 0) and passes its descriptor over the control
//! socket; the two sides take turns, never touching a region at once: the
//! parent writes the input before it sends a request and reads the output
//! after the answer; the child does its part in between.

// mmap is the one unsafe call of this module; the mapping lives exactly as
// long as its Region.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{memfd_create, MemfdFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// One shared, mapped region.
#[derive(Debug)]
pub struct Region {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; access is serialised by the protocol
// (see the module docs), and `&mut self` guards writes on each side.
unsafe impl Send for Region {}

impl Region {
    /// A new region of `len` bytes (at least one page is mapped).
    pub fn create(name: &str, len: usize) -> io::Result<Self> {
        let fd = memfd_create(name, MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, len.max(1) as u64)?;
        Self::map(fd, len)
    }

    /// Maps a region received from the other side, of `len` bytes.
    pub fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        let size = len.max(1);
        // SAFETY: a fresh shared mapping of a memfd we hold; nothing else in
        // this process refers to the address range.
        let ptr =
            unsafe { mmap(std::ptr::null_mut(), size, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, &fd, 0)? };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { fd, ptr, len })
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes are mapped for the region's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only reference on
        // this side.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `map` and no slice of it outlives `self`.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len.max(1)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_of_one_region_share_their_bytes() {
        let mut a = Region::create("test", 4096).unwrap();
        let fd = a.fd().try_clone_to_owned().unwrap();
        let b = Region::map(fd, 4096).unwrap();
        a.as_mut_slice()[..5].copy_from_slice(b"hello");
        assert_eq!(&b.as_slice()[..5], b"hello");
    }
}
