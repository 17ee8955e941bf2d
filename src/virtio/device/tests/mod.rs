//! The device model driven without GL or sockets: commands as bytes, guest memory as a
//! mmap, queues as virtio-queue's mock split queue. Helpers here, tests by idea beside.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod display;
mod fake3d;
mod props;
mod props3d;
mod queue;
mod requests;
mod resources;
mod three_d;

use super::*;
use proptest::prelude::*;
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestMemoryMmap;

type Mem = GuestMemoryMmap<()>;
const MEM_SIZE: u64 = 32 << 20;
const DATA_START: u64 = 0x10_0000;
const QUEUE_SIZE: u16 = 256;

fn new_mem() -> Mem {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

fn gpu() -> Gpu {
    Gpu::new(GpuConfig::default())
}

fn bytes<T: ByteValued>(v: &T) -> Vec<u8> {
    v.as_slice().to_vec()
}

fn hdr(ty: u32) -> CtrlHdr {
    CtrlHdr { type_: ty.into(), ..CtrlHdr::default() }
}

fn rect(x: u32, y: u32, w: u32, h: u32) -> GpuRect {
    Rect::new(x, y, w, h).into()
}

// The commands as bytes: the synthetic guest's builders (one definition of the wire layout for
// every test), with the device tests' short names and `GpuRect` arguments.
use crate::virtio::synthetic::cmd;

fn cmd_display_info() -> Vec<u8> {
    cmd::display_info()
}

fn cmd_edid(scanout: u32) -> Vec<u8> {
    cmd::edid(scanout)
}

fn cmd_create(id: u32, format: u32, w: u32, h: u32) -> Vec<u8> {
    cmd::create_2d(id, format, w, h)
}

fn cmd_unref(id: u32) -> Vec<u8> {
    cmd::unref(id)
}

fn attach_header(id: u32, nr: u32) -> Vec<u8> {
    cmd::attach_backing_header(id, nr)
}

fn mem_entries(entries: &[(u64, u32)]) -> Vec<u8> {
    cmd::mem_entries(entries)
}

fn cmd_attach(id: u32, entries: &[(u64, u32)]) -> Vec<u8> {
    cmd::attach_backing(id, entries)
}

fn cmd_detach(id: u32) -> Vec<u8> {
    cmd::detach_backing(id)
}

fn cmd_transfer(id: u32, r: GpuRect, offset: u64) -> Vec<u8> {
    cmd::transfer_to_host_2d(id, r.into(), offset)
}

fn cmd_set_scanout(scanout: u32, id: u32, r: GpuRect) -> Vec<u8> {
    cmd::set_scanout(scanout, id, r.into())
}

fn cmd_flush(id: u32, r: GpuRect) -> Vec<u8> {
    cmd::flush(id, r.into())
}

fn cmd_cursor(ty: u32, scanout: u32, id: u32, x: i32, y: i32, hot: (u32, u32)) -> Vec<u8> {
    cmd::cursor(ty, scanout, id, x, y, hot)
}

fn resp_hdr(resp: &[u8]) -> CtrlHdr {
    read_struct(resp).expect("response has a header")
}

fn resp_type(resp: &[u8]) -> u32 {
    resp_hdr(resp).type_.to_native()
}

fn exec(gpu: &mut Gpu, mem: &Mem, req: &[u8]) -> u32 {
    let resp = gpu.handle_request(QueueKind::Control, req, mem);
    assert!(resp.len() >= size_of::<CtrlHdr>());
    resp_type(&resp)
}

fn exec_cursor(gpu: &mut Gpu, mem: &Mem, req: &[u8]) -> u32 {
    resp_type(&gpu.handle_request(QueueKind::Cursor, req, mem))
}

fn ok(gpu: &mut Gpu, mem: &Mem, req: &[u8]) {
    let t = exec(gpu, mem, req);
    assert_eq!(t, VIRTIO_GPU_RESP_OK_NODATA, "{}", ctrl_type_name(t));
}

/// Simple driver side of a split queue on top of `MockSplitQueue`.
struct Driver<'a> {
    mem: &'a Mem,
    vq: MockSplitQueue<'a, Mem>,
    queue: Queue,
    next_desc: u16,
    next_addr: u64,
    chains: u16,
}

/// One descriptor of a chain built by a test.
#[derive(Clone, Debug)]
enum Desc {
    /// Readable, holding these bytes (placed in fresh guest memory).
    Read(Vec<u8>),
    /// Writable, of this many bytes (fresh guest memory, filled with 0xEE).
    Write(u32),
    /// Raw descriptor at an arbitrary address.
    Raw { addr: u64, len: u32, write: bool },
}

impl<'a> Driver<'a> {
    fn new(mem: &'a Mem) -> Self {
        let vq = MockSplitQueue::new(mem, QUEUE_SIZE);
        let queue: Queue = vq.create_queue().unwrap();
        Driver { mem, vq, queue, next_desc: 0, next_addr: DATA_START, chains: 0 }
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let addr = self.next_addr;
        self.next_addr = (addr + len + 15) & !15;
        assert!(self.next_addr <= MEM_SIZE, "test guest memory exhausted");
        addr
    }

    /// Adds one chain; returns (address, length) of each `Desc::Write`.
    fn add(&mut self, descs: &[Desc]) -> Vec<(u64, u32)> {
        assert!(!descs.is_empty());
        let mut raw = Vec::new();
        let mut writes = Vec::new();
        let first = self.next_desc;
        for (i, d) in descs.iter().enumerate() {
            let (addr, len, write) = match d {
                Desc::Read(data) => {
                    let addr = self.alloc(data.len() as u64);
                    self.mem.write_slice(data, GuestAddress(addr)).unwrap();
                    (addr, data.len() as u32, false)
                }
                Desc::Write(len) => {
                    let addr = self.alloc(u64::from(*len));
                    self.mem.write_slice(&vec![0xee; *len as usize], GuestAddress(addr)).unwrap();
                    writes.push((addr, *len));
                    (addr, *len, true)
                }
                Desc::Raw { addr, len, write } => (*addr, *len, *write),
            };
            let last = i + 1 == descs.len();
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = if last { 0 } else { first + i as u16 + 1 };
            raw.push(RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next)));
        }
        self.vq.add_desc_chains(&raw, first).unwrap();
        self.next_desc += descs.len() as u16;
        self.chains += 1;
        assert!(self.next_desc <= QUEUE_SIZE && self.chains <= QUEUE_SIZE);
        writes
    }

    /// Adds a request with one readable and one writable descriptor.
    fn request(&mut self, req: &[u8], resp_len: u32) -> (u64, u32) {
        self.add(&[Desc::Read(req.to_vec()), Desc::Write(resp_len)])[0]
    }

    fn used(&self) -> Vec<(u32, u32)> {
        let n = self.vq.used().idx().load();
        (0..n)
            .map(|i| {
                let e = self.vq.used().ring().ref_at(i as usize).unwrap().load();
                (e.id(), e.len())
            })
            .collect()
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

/// QEMU's TRANSFER_TO_HOST_2D on a flat backing; `None` if it reads past it.
fn reference_transfer(data: &mut [u8], width: u32, backing: &[u8], r: Rect, offset: u64) -> Option<()> {
    let stride = u64::from(width) * 4;
    if r.is_empty() {
        return Some(());
    }
    for h in 0..u64::from(r.height) {
        let src = offset.checked_add(stride * h)?;
        let len = u64::from(r.width) * 4;
        let end = src.checked_add(len)?;
        if end > backing.len() as u64 {
            return None;
        }
        let dst = ((u64::from(r.y) + h) * stride + u64::from(r.x) * 4) as usize;
        data[dst..dst + len as usize].copy_from_slice(&backing[src as usize..end as usize]);
    }
    Some(())
}

// ---------------------------------------------------------------- Rect
