//! The driver's side of one split virtqueue (virtio 1.2, section 2.7) in guest memory: the
//! descriptor table, the available ring and the used ring, and a scratch area holding the
//! buffers of the chains in flight.
//!
//! Every chain is one or more device-readable buffers (the request) followed by at most one
//! device-writable buffer (the response), as the Linux virtio-gpu driver builds them.

use std::collections::HashMap;
use std::num::Wrapping;
use std::sync::atomic::{Ordering, fence};

use anyhow::{Context, bail, ensure};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Bytes of one `struct virtq_desc` (2.7.5).
const DESC_BYTES: u64 = 16;
/// `VIRTQ_DESC_F_NEXT`: the chain continues with the descriptor in `next` (2.7.5).
const DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the buffer is device-writable (2.7.5).
const DESC_F_WRITE: u16 = 2;
/// `VIRTQ_USED_F_NO_NOTIFY`: the device asks not to be kicked, without EVENT_IDX (2.7.10).
const USED_F_NO_NOTIFY: u16 = 1;
/// Alignment of each buffer in the scratch area, bytes.
const SCRATCH_ALIGN: u64 = 16;

/// Rounds `value` up to a multiple of `align` (a power of two).
pub(super) fn align_up(value: u64, align: u64) -> u64 {
    value.next_multiple_of(align)
}

/// Where one split virtqueue lives: guest physical addresses of its three parts (2.7, with
/// the alignments of 2.7.2: 16 bytes for the descriptor table, 2 for the available ring, 4 for
/// the used ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingLayout {
    /// Queue size, descriptors.
    pub size: u16,
    /// `struct virtq_desc[size]`, 16 bytes each (2.7.5).
    pub desc: u64,
    /// `struct virtq_avail`: flags, idx, ring[size], used_event; 6 + 2 * size bytes (2.7.6).
    pub avail: u64,
    /// `struct virtq_used`: flags, idx, ring[size] of (id, len), avail_event; 6 + 8 * size
    /// bytes (2.7.8).
    pub used: u64,
}

impl RingLayout {
    /// A queue of `size` descriptors placed at `base` or just after; returns it and the
    /// address of the first byte after it.
    pub fn at(base: u64, size: u16) -> (RingLayout, u64) {
        let n = u64::from(size);
        let desc = align_up(base, 16);
        let avail = desc + DESC_BYTES * n;
        let used = align_up(avail + 6 + 2 * n, 4);
        let end = used + 6 + 8 * n;
        (RingLayout { size, desc, avail, used }, end)
    }

    fn avail_idx(&self) -> GuestAddress {
        GuestAddress(self.avail + 2)
    }

    fn avail_entry(&self, index: Wrapping<u16>) -> GuestAddress {
        GuestAddress(self.avail + 4 + 2 * u64::from(index.0 % self.size))
    }

    /// `used_event`, after the available ring's entries (2.7.10).
    fn used_event(&self) -> GuestAddress {
        GuestAddress(self.avail + 4 + 2 * u64::from(self.size))
    }

    fn used_flags(&self) -> GuestAddress {
        GuestAddress(self.used)
    }

    fn used_idx(&self) -> GuestAddress {
        GuestAddress(self.used + 2)
    }

    fn used_entry(&self, index: Wrapping<u16>) -> GuestAddress {
        GuestAddress(self.used + 4 + 8 * u64::from(index.0 % self.size))
    }

    /// `avail_event`, after the used ring's entries (2.7.10).
    fn avail_event(&self) -> GuestAddress {
        GuestAddress(self.used + 4 + 8 * u64::from(self.size))
    }
}

/// `vring_need_event` (2.7.10): whether moving an index from `old` to `new` passes `event`.
fn need_event(event: Wrapping<u16>, new: Wrapping<u16>, old: Wrapping<u16>) -> bool {
    new - event - Wrapping(1) < new - old
}

/// A chain the device has not put on the used ring yet.
#[derive(Debug)]
struct InFlight {
    serial: u64,
    descs: Vec<u16>,
    /// The writable buffer: guest address and length, bytes.
    response: Option<(u64, u32)>,
}

/// The driver state of one split virtqueue. See the module docs.
#[derive(Debug)]
pub(crate) struct Ring {
    layout: RingLayout,
    /// `VIRTIO_RING_F_EVENT_IDX` negotiated: kicks and interrupts suppressed by
    /// `avail_event`/`used_event` instead of the flags (2.7.10).
    event_idx: bool,
    free: Vec<u16>,
    /// The available index the driver publishes next.
    next_avail: Wrapping<u16>,
    /// The used index up to which used entries were collected.
    last_used: Wrapping<u16>,
    /// By head descriptor index.
    in_flight: HashMap<u16, InFlight>,
    /// Responses collected from the used ring, by serial.
    answered: HashMap<u64, Vec<u8>>,
    /// Scratch area for request and response buffers, guest addresses: [start, end).
    scratch: (u64, u64),
    /// Next free byte of the scratch area; back to its start whenever nothing is in flight.
    scratch_next: u64,
}

impl Ring {
    /// A ring laid out at `layout` (its memory must be zero: ring indices start at 0), using
    /// guest memory `scratch` = [start, end) for the buffers of its chains.
    pub fn new(layout: RingLayout, scratch: (u64, u64), event_idx: bool) -> Self {
        Ring {
            layout,
            event_idx,
            free: (0..layout.size).rev().collect(),
            next_avail: Wrapping(0),
            last_used: Wrapping(0),
            in_flight: HashMap::new(),
            answered: HashMap::new(),
            scratch,
            scratch_next: scratch.0,
        }
    }

    /// Where the ring lives.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// Number of chains the device has not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn scratch_alloc(&mut self, len: usize) -> anyhow::Result<u64> {
        let addr = align_up(self.scratch_next, SCRATCH_ALIGN);
        let end = addr.checked_add(len as u64).context("scratch address overflow")?;
        if end > self.scratch.1 {
            bail!(
                "queue scratch area full: {} bytes needed at {addr:#x}, area [{:#x}, {:#x}) with {} chains in \
                 flight (collect responses, or send smaller requests)",
                len,
                self.scratch.0,
                self.scratch.1,
                self.in_flight.len()
            );
        }
        self.scratch_next = end;
        Ok(addr)
    }

    /// Puts one chain on the available ring: the `readable` buffers (copied into the scratch
    /// area), then a zeroed writable buffer of `response_len` bytes unless 0. Returns whether
    /// the device wants a kick (2.7.13: notification suppression).
    pub fn add(
        &mut self,
        mem: &GuestMemoryMmap,
        serial: u64,
        readable: &[&[u8]],
        response_len: u32,
    ) -> anyhow::Result<bool> {
        let count = readable.len() + usize::from(response_len > 0);
        ensure!(count > 0, "a chain needs at least one buffer");
        ensure!(
            count <= self.free.len(),
            "queue full: {count} descriptors needed, {} free, {} chains in flight",
            self.free.len(),
            self.in_flight.len()
        );
        if self.in_flight.is_empty() {
            self.scratch_next = self.scratch.0;
        }
        let mut buffers = Vec::with_capacity(count);
        for part in readable {
            let addr = self.scratch_alloc(part.len())?;
            mem.write_slice(part, GuestAddress(addr))?;
            let len = u32::try_from(part.len()).context("request part longer than 4 GiB")?;
            buffers.push((addr, len, 0));
        }
        let mut response = None;
        if response_len > 0 {
            let len = usize::try_from(response_len)?;
            let addr = self.scratch_alloc(len)?;
            mem.write_slice(&vec![0; len], GuestAddress(addr))?;
            buffers.push((addr, response_len, DESC_F_WRITE));
            response = Some((addr, response_len));
        }
        let descs: Vec<u16> = (0..count).filter_map(|_| self.free.pop()).collect();
        for (i, (&(addr, len, flags), &desc)) in buffers.iter().zip(&descs).enumerate() {
            let next = descs.get(i + 1).copied();
            let flags = if next.is_some() { flags | DESC_F_NEXT } else { flags };
            let mut raw = [0u8; DESC_BYTES as usize];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.unwrap_or(0).to_le_bytes());
            mem.write_slice(&raw, GuestAddress(self.layout.desc + DESC_BYTES * u64::from(desc)))?;
        }
        let head = descs[0];
        mem.store(head.to_le(), self.layout.avail_entry(self.next_avail), Ordering::Relaxed)?;
        let old = self.next_avail;
        self.next_avail += Wrapping(1);
        // The descriptors and the ring entry are visible before the new index (2.7.13.2).
        mem.store(self.next_avail.0.to_le(), self.layout.avail_idx(), Ordering::Release)?;
        self.in_flight.insert(head, InFlight { serial, descs, response });
        // The index is published before the suppression field is read (2.7.13.4).
        fence(Ordering::SeqCst);
        if self.event_idx {
            let event = Wrapping(u16::from_le(mem.load(self.layout.avail_event(), Ordering::Acquire)?));
            Ok(need_event(event, self.next_avail, old))
        } else {
            let flags = u16::from_le(mem.load(self.layout.used_flags(), Ordering::Acquire)?);
            Ok(flags & USED_F_NO_NOTIFY == 0)
        }
    }

    /// Collects every new used entry (2.7.8): frees its descriptors and keeps the bytes the
    /// device wrote into its writable buffer for [`Ring::take`]. Errors when the device breaks
    /// the used ring protocol (an index too far ahead, an unknown chain, a length larger than
    /// the buffer).
    pub fn collect(&mut self, mem: &GuestMemoryMmap) -> anyhow::Result<()> {
        let used = Wrapping(u16::from_le(mem.load(self.layout.used_idx(), Ordering::Acquire)?));
        let new = (used - self.last_used).0;
        ensure!(
            usize::from(new) <= self.in_flight.len(),
            "device moved the used index to {} with {} chains in flight after index {}",
            used.0,
            self.in_flight.len(),
            self.last_used.0
        );
        for _ in 0..new {
            let entry = self.layout.used_entry(self.last_used);
            let id = u32::from_le(mem.read_obj(entry)?);
            let len = u32::from_le(mem.read_obj(GuestAddress(entry.0 + 4))?);
            let chain = u16::try_from(id)
                .ok()
                .and_then(|head| self.in_flight.remove(&head))
                .with_context(|| format!("device used chain {id}, which is not in flight"))?;
            let bytes = match chain.response {
                Some((addr, cap)) => {
                    ensure!(len <= cap, "device wrote {len} bytes into the {cap}-byte response of chain {id}");
                    let mut bytes = vec![0; usize::try_from(len)?];
                    mem.read_slice(&mut bytes, GuestAddress(addr))?;
                    bytes
                }
                None => {
                    ensure!(len == 0, "device wrote {len} bytes into chain {id}, which has no writable buffer");
                    Vec::new()
                }
            };
            self.free.extend(chain.descs);
            self.answered.insert(chain.serial, bytes);
            self.last_used += Wrapping(1);
        }
        if self.event_idx {
            // Interrupt for the next used entry (2.7.10).
            mem.store(self.last_used.0.to_le(), self.layout.used_event(), Ordering::Release)?;
        }
        Ok(())
    }

    /// The response of chain `serial`, once [`Ring::collect`] saw it; each is taken once.
    pub fn take(&mut self, serial: u64) -> Option<Vec<u8>> {
        self.answered.remove(&serial)
    }

    /// The available index as it is in guest memory.
    pub fn avail_idx(&self, mem: &GuestMemoryMmap) -> anyhow::Result<u16> {
        Ok(u16::from_le(mem.load(self.layout.avail_idx(), Ordering::Acquire)?))
    }

    /// The used index as the device left it in guest memory.
    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> anyhow::Result<u16> {
        Ok(u16::from_le(mem.load(self.layout.used_idx(), Ordering::Acquire)?))
    }

    /// Writes the available index directly (a hostile or buggy driver); later
    /// [`Ring::add`] calls still count from the driver's own index.
    pub fn set_avail_idx(&mut self, mem: &GuestMemoryMmap, idx: u16) -> anyhow::Result<()> {
        Ok(mem.store(idx.to_le(), self.layout.avail_idx(), Ordering::Release)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn layout_alignment_and_sizes() {
        let (l, end) = RingLayout::at(0x1001, 256);
        assert_eq!(l.desc, 0x1010);
        assert_eq!(l.avail, 0x1010 + 16 * 256);
        assert_eq!(l.used, align_up(l.avail + 6 + 512, 4));
        assert_eq!(end, l.used + 6 + 8 * 256);
    }

    #[test]
    fn need_event_wraps() {
        let w = Wrapping;
        assert!(need_event(w(0), w(1), w(0)));
        assert!(!need_event(w(5), w(5), w(4)));
        assert!(need_event(w(u16::MAX), w(0), w(u16::MAX)));
        assert!(need_event(w(3), w(10), w(2)));
    }
}
