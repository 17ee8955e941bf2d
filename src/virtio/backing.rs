//! A resource's guest backing: validated guest-physical ranges (RESOURCE_ATTACH_BACKING,
//! 5.7.6.8), read by gathering across them; never mapped by the device. A 3D resource's backing
//! goes to the renderer as host iovecs ([`Backing::host_iovecs`]).

use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// Why a backing read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackingError {
    /// The read reaches past the end of the backing.
    #[error("read past the end of the backing")]
    TooSmall,
    /// Guest memory could not be read at a backing address.
    #[error("reading guest memory failed")]
    GuestMemory,
}

/// One contiguous guest-physical range of a resource's backing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackingEntry {
    /// Guest physical address.
    pub addr: u64,
    /// Length, bytes (non-zero; adjacent guest entries are merged).
    pub len: u64,
    /// Byte offset of this range within the backing (sum of earlier lengths).
    pub offset: u64,
}

/// The guest memory attached to a resource by RESOURCE_ATTACH_BACKING: the
/// validated list of guest-physical ranges, in order. It is not mapped; each
/// TRANSFER_TO_HOST_2D reads it through the guest memory passed to the
/// `process_*` call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backing {
    entries: Vec<BackingEntry>,
    len: u64,
}

impl Backing {
    /// A backing of `entries` (in order, offsets the sums of earlier lengths) of `len` bytes in
    /// all, as RESOURCE_ATTACH_BACKING validated them.
    pub fn new(entries: Vec<BackingEntry>, len: u64) -> Backing {
        Backing { entries, len }
    }

    /// The ranges, in backing order; zero-length guest entries are dropped and
    /// physically contiguous neighbours merged.
    pub fn entries(&self) -> &[BackingEntry] {
        &self.entries
    }

    /// Total length, bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the backing has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Host iovecs of the ranges in `mem`, in backing order, split where a range crosses memory
    /// regions (the lengths sum to [`Backing::len`]); for a 3D renderer's
    /// `Renderer3d::attach_backing`. `None` if a range is not (read-write) guest memory.
    pub fn host_iovecs<M: GuestMemory>(&self, mem: &M) -> Option<Vec<libc::iovec>> {
        let mut iov = Vec::new();
        iov.try_reserve_exact(self.entries.len()).ok()?;
        for e in &self.entries {
            let len = usize::try_from(e.len).ok()?;
            for slice in mem.get_slices(GuestAddress(e.addr), len, Permissions::ReadWrite).ok()? {
                let slice = slice.ok()?;
                iov.push(libc::iovec { iov_base: slice.ptr_guard_mut().as_ptr().cast(), iov_len: slice.len() });
            }
        }
        Some(iov)
    }

    /// Copies `dst.len()` bytes starting at backing offset `offset` out of
    /// guest memory, gathering across entries.
    /// Errors: the read reaches past the backing's end, or guest memory is unreadable there.
    pub fn read<M: GuestMemory>(&self, mem: &M, offset: u64, dst: &mut [u8]) -> Result<(), BackingError> {
        let end = offset.checked_add(dst.len() as u64).ok_or(BackingError::TooSmall)?;
        if end > self.len {
            return Err(BackingError::TooSmall);
        }
        let mut idx =
            self.entries.partition_point(|e| e.offset <= offset).checked_sub(1).ok_or(BackingError::TooSmall)?;
        let mut pos = offset;
        let mut rest = dst;
        while !rest.is_empty() {
            let entry = self.entries.get(idx).ok_or(BackingError::TooSmall)?;
            idx = idx.saturating_add(1);
            let within = pos.checked_sub(entry.offset).ok_or(BackingError::TooSmall)?;
            let avail = entry.len.saturating_sub(within);
            let n = usize::try_from(avail.min(rest.len() as u64)).map_err(|_| BackingError::TooSmall)?;
            if n == 0 {
                continue;
            }
            let (head, tail) = rest.split_at_mut(n);
            let addr = GuestAddress(entry.addr).checked_add(within).ok_or(BackingError::GuestMemory)?;
            mem.read_slice(head, addr).map_err(|_| BackingError::GuestMemory)?;
            rest = tail;
            pos = pos.checked_add(n as u64).ok_or(BackingError::TooSmall)?;
        }
        Ok(())
    }
}
