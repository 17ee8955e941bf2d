//! A resource's guest backing: validated guest-physical ranges (RESOURCE_ATTACH_BACKING,
//! 5.7.6.8), read by gathering across them; never mapped.

#[allow(clippy::wildcard_imports)]
use super::*;

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
    pub(super) entries: Vec<BackingEntry>,
    pub(super) len: u64,
}

impl Backing {
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

    /// Copies `dst.len()` bytes starting at backing offset `offset` out of
    /// guest memory, gathering across entries.
    pub(super) fn read<M: GuestMemory>(&self, mem: &M, offset: u64, dst: &mut [u8]) -> Result<(), GuestError> {
        let end = offset.checked_add(dst.len() as u64).ok_or(GuestError::BackingTooSmall)?;
        if end > self.len {
            return Err(GuestError::BackingTooSmall);
        }
        let mut idx =
            self.entries.partition_point(|e| e.offset <= offset).checked_sub(1).ok_or(GuestError::BackingTooSmall)?;
        let mut pos = offset;
        let mut rest = dst;
        while !rest.is_empty() {
            let entry = self.entries.get(idx).ok_or(GuestError::BackingTooSmall)?;
            idx = idx.saturating_add(1);
            let within = pos.checked_sub(entry.offset).ok_or(GuestError::BackingTooSmall)?;
            let avail = entry.len.saturating_sub(within);
            let n = usize::try_from(avail.min(rest.len() as u64)).map_err(|_| GuestError::BackingTooSmall)?;
            if n == 0 {
                continue;
            }
            let (head, tail) = rest.split_at_mut(n);
            let addr = GuestAddress(entry.addr).checked_add(within).ok_or(GuestError::GuestMemoryRead)?;
            mem.read_slice(head, addr).map_err(|_| GuestError::GuestMemoryRead)?;
            rest = tail;
            pos += n as u64;
        }
        Ok(())
    }
}
