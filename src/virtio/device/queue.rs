//! Queue processing: descriptor chains popped from the ctrl and cursor queues, requests
//! gathered from guest memory, responses written back (5.7.6.7), and fenced responses
//! released when the 3D renderer retires their fences.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Gpu {
    /// Number of fenced responses waiting for the 3D renderer's fences.
    pub fn pending_fences(&self) -> usize {
        self.pending.len()
    }

    /// Answer every held response whose fence is among `retired` (in
    /// submission order, which is fence order per ring), and those that wait
    /// for the responses before them once these are answered, and add them to
    /// the used ring of the control queue; a response whose fence retired
    /// while one before it on its timeline is still held waits for that one
    /// ([`Wait::Retired`]). Returns whether anything was added.
    pub fn retire_fences<M: GuestMemory>(&mut self, retired: &[Fence], queue: &mut Queue, mem: &M) -> bool {
        let mut added = false;
        let mut still: VecDeque<PendingReply> = VecDeque::with_capacity(self.pending.len());
        while let Some(mut p) = self.pending.pop_front() {
            if let Wait::Fence { fence, .. } = p.wait
                && retired.iter().any(|f| fence.retired_by(f))
            {
                p.wait = Wait::Retired;
            }
            let behind = still.iter().any(|q| q.timeline == p.timeline);
            let done = match p.wait {
                Wait::Fence { .. } => false,
                Wait::Retired => !behind,
                Wait::Earlier => still.is_empty(),
            };
            if done {
                let len = self.write_response(QueueKind::Control, mem, &p.writable, &p.response);
                match queue.add_used(mem, p.head, len) {
                    Ok(()) => added = true,
                    Err(_) => self.guest_error(0, GuestError::UsedRing),
                }
            } else {
                still.push_back(p);
            }
        }
        self.pending = still;
        added
    }

    /// Pops every available chain of the control queue (at most
    /// `queue.size()` per call), executes it, writes the response and adds the
    /// chain to the used ring with the number of bytes written. Returns
    /// whether anything was added to the used ring. Does not notify the
    /// guest: see the module docs for the caller's part.
    pub fn process_ctrl_queue<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M) -> bool {
        self.process_queue(QueueKind::Control, queue, mem)
    }

    /// Same as [`Gpu::process_ctrl_queue`] for the cursor queue (UPDATE_CURSOR,
    /// MOVE_CURSOR). The driver normally supplies no writable buffer there; a
    /// response header is written only if it does.
    pub fn process_cursor_queue<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M) -> bool {
        self.process_queue(QueueKind::Cursor, queue, mem)
    }

    pub(super) fn process_queue<M: GuestMemory>(&mut self, kind: QueueKind, queue: &mut Queue, mem: &M) -> bool {
        let mut added = false;
        for _ in 0..queue.size() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let Some(used_len) = self.process_chain(kind, head, chain, mem) else {
                continue;
            };
            match queue.add_used(mem, head, used_len) {
                Ok(()) => added = true,
                Err(_) => self.guest_error(0, GuestError::UsedRing),
            }
        }
        added
    }

    /// Executes one chain; returns the number of bytes written to its
    /// writable part, or `None` when the response waits for a fence.
    pub(super) fn process_chain<M: GuestMemory>(
        &mut self,
        kind: QueueKind,
        head: u16,
        chain: DescriptorChain<&M>,
        mem: &M,
    ) -> Option<u32> {
        // A fence left by a request handled outside a chain (`handle_request`) is not this one's.
        self.deferred = None;
        let mut readable: Vec<(GuestAddress, u32)> = Vec::new();
        let mut writable: Vec<(GuestAddress, u32)> = Vec::new();
        // The iterator is bounded by the queue size / indirect table length.
        for desc in chain {
            if desc.is_write_only() {
                writable.push((desc.addr(), desc.len()));
            } else {
                readable.push((desc.addr(), desc.len()));
            }
        }

        let response = match gather(mem, &readable) {
            Some(request) => self.handle_request(kind, &request, mem),
            None => {
                self.guest_error(0, GuestError::MalformedChain);
                response_bytes(CtrlHdr::default(), |h| h, VIRTIO_GPU_RESP_ERR_UNSPEC, None)
            }
        };

        if let Some((wait, timeline)) = self.deferred.take() {
            self.pending.push_back(PendingReply { head, writable, response, wait, timeline });
            return None;
        }
        Some(self.write_response(kind, mem, &writable, &response))
    }

    /// Writes `response` over the `writable` descriptors, whole or not at all;
    /// returns the number of bytes written.
    pub(super) fn write_response<M: GuestMemory>(
        &mut self,
        kind: QueueKind,
        mem: &M,
        writable: &[(GuestAddress, u32)],
        response: &[u8],
    ) -> u32 {
        let capacity: u64 = writable.iter().map(|(_, len)| u64::from(*len)).sum();
        if capacity < response.len() as u64 {
            // The driver gives the cursor queue no response buffer: not an error.
            if kind == QueueKind::Control {
                self.guest_error(0, GuestError::ResponseTooSmall);
            }
            return 0;
        }
        // Split the response over the writable descriptors and check every
        // piece first, so a response is either written whole or not at all.
        let mut pieces: Vec<(GuestAddress, &[u8])> = Vec::new();
        let mut rest: &[u8] = response;
        for &(addr, len) in writable {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(rest.len().min(len as usize));
            pieces.push((addr, head));
            rest = tail;
        }
        if !pieces.iter().all(|(addr, piece)| mem.check_range(*addr, piece.len(), Permissions::Write)) {
            self.guest_error(0, GuestError::ResponseWrite);
            return 0;
        }
        let mut written = 0u32;
        for (addr, piece) in pieces {
            if mem.write_slice(piece, addr).is_err() {
                self.guest_error(0, GuestError::ResponseWrite);
                break;
            }
            written = written.saturating_add(piece.len() as u32);
        }
        written
    }
}

/// A zero-filled buffer of `len` bytes, `None` if it cannot be allocated.
pub(super) fn zeroed(len: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0);
    Some(v)
}

/// Copies the readable descriptors, in order, up to [`MAX_REQUEST_BYTES`].
/// `None` if a descriptor within that prefix is not in guest memory.
pub(super) fn gather<M: GuestMemory>(mem: &M, readable: &[(GuestAddress, u32)]) -> Option<Vec<u8>> {
    let total: u64 = readable.iter().map(|(_, len)| u64::from(*len)).sum();
    let mut request = zeroed(usize::try_from(total.min(MAX_REQUEST_BYTES as u64)).ok()?)?;
    let mut rest: &mut [u8] = &mut request;
    for (addr, len) in readable {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(*len as usize);
        let (head, tail) = rest.split_at_mut(n);
        mem.read_slice(head, *addr).ok()?;
        rest = tail;
    }
    Some(request)
}
