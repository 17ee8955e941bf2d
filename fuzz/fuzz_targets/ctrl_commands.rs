//! The device model's command decoder: a sequence of control and cursor queue requests (any
//! bytes) against one device with guest memory, as a guest sends them.
//!
//! Input: 8 bytes of device configuration (scanouts, preferred size), then records of
//! `[flags u8][len u16 LE][len bytes]` (flags bit 0: the cursor queue). Guest memory is
//! 1 MiB whose first bytes are the input itself, so backing addresses find guest-chosen data.
//!
//! Checked after every request: a response of at least a control header whose type is one of
//! the spec's (5.7.6.7: `RESP_OK_*` 0x1100..=0x1108 or `RESP_ERR_*` 0x1200..=0x1205), host
//! memory within the cap; after a device reset, no host memory left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanway::virtio::device::{Gpu, GpuConfig, QueueKind};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: usize = 1 << 20;
/// Host memory cap, bytes: small, so that executions stay fast (resources are zeroed memory).
const CAP: u64 = 8 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((config, mut rest)) = data.split_first_chunk::<8>() else { return };
    let gpu_config = GpuConfig {
        num_scanouts: u32::from(config[0] % 17),
        preferred_size: (
            u32::from(u16::from_le_bytes([config[1], config[2]])),
            u32::from(u16::from_le_bytes([config[3], config[4]])),
        ),
        max_host_memory: CAP,
        name: "fuzz".into(),
    };
    let mut gpu = Gpu::new(gpu_config);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    mem.write_slice(&data[..data.len().min(MEM)], GuestAddress(0)).unwrap();
    while let Some((&flags, tail)) = rest.split_first() {
        let Some((len, tail)) = tail.split_first_chunk::<2>() else { break };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (request, tail) = tail.split_at(len);
        rest = tail;
        let kind = if flags & 1 == 0 { QueueKind::Control } else { QueueKind::Cursor };
        let response = gpu.handle_request(kind, request, &mem);
        assert!(response.len() >= 24, "response shorter than a control header");
        let ty = u32::from_le_bytes(response[..4].try_into().unwrap());
        assert!((0x1100..=0x1108).contains(&ty) || (0x1200..=0x1205).contains(&ty), "response type {ty:#x}");
        assert!(gpu.host_memory_used() <= CAP, "host memory {} over the cap", gpu.host_memory_used());
        let _ = gpu.drain_events().count();
    }
    gpu.reset();
    assert_eq!(gpu.host_memory_used(), 0, "host memory left after a reset");
});
