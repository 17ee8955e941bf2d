//! The rings themselves (virtio 1.2, 2.7): guest memory holding a split virtqueue's descriptor
//! table, available and used rings, indirect tables and requests, all of it any bytes, then the
//! control and cursor queues processed as after a kick.
//!
//! Input: byte 0 picks the queue sizes (a power of two, 1..=256) and EVENT_IDX; the rest is the
//! first 64 KiB of guest memory: descriptor table at 0, available ring at 0x1000, used ring at
//! 0x2000, the rest for requests and indirect tables.
//!
//! Checked: processing returns (bounded work whatever the indices say), the device's used index
//! moves by at most the queue size per kick, and a second kick after it returns too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanway::virtio::device::{Gpu, GpuConfig};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: usize = 64 << 10;

fn queue(size: u16, event_idx: bool, base: u64) -> Queue {
    let mut q = Queue::new(256).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some((base + 0x1000) as u32), Some(0));
    q.set_used_ring_address(Some((base + 0x2000) as u32), Some(0));
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, bytes)) = data.split_first() else { return };
    let size = 1u16 << (shape % 9);
    let event_idx = shape & 0x80 != 0;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM), (GuestAddress(0x10000), MEM)]).unwrap();
    mem.write_slice(&bytes[..bytes.len().min(MEM)], GuestAddress(0)).unwrap();
    // the cursor queue's rings: the same bytes in the second region
    mem.write_slice(&bytes[..bytes.len().min(MEM)], GuestAddress(0x10000)).unwrap();
    // a small cap keeps each execution fast (resources are zeroed host memory)
    let mut gpu = Gpu::new(GpuConfig { max_host_memory: 4 << 20, ..GpuConfig::default() });
    let (mut ctrl, mut cursor) = (queue(size, event_idx, 0), queue(size, event_idx, 0x10000));
    for _ in 0..2 {
        // the device's own used index (the one in guest memory starts as whatever the input says)
        let (c0, k0) = (ctrl.next_used(), cursor.next_used());
        gpu.process_ctrl_queue(&mut ctrl, &mem);
        gpu.process_cursor_queue(&mut cursor, &mem);
        let (c, k) = (ctrl.next_used().wrapping_sub(c0), cursor.next_used().wrapping_sub(k0));
        assert!(c <= size && k <= size, "{c} and {k} used entries in one kick of queues of {size}");
        let _ = gpu.drain_events().count();
    }
});
