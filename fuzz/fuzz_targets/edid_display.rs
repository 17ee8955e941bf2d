//! EDID and display-info generation for any scanout geometry and name (`virtio::edid`,
//! `GET_DISPLAY_INFO`, `GET_EDID`).
//!
//! Input: width and height (u32 LE each), scanout count, then the name bytes.
//! Checked: the EDID's base block checksum is right (its 128 bytes sum to 0 mod 256) and its
//! header is the fixed 00 FF FF FF FF FF FF 00; the device answers GET_DISPLAY_INFO and GET_EDID
//! for every scanout with OK responses of their full size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanway::virtio::{
    device::{Gpu, GpuConfig, QueueKind},
    edid,
    protocol::{CtrlHdr, GetEdid, VIRTIO_GPU_CMD_GET_DISPLAY_INFO, VIRTIO_GPU_CMD_GET_EDID},
};
use vm_memory::{ByteValued, GuestAddress, GuestMemoryMmap};

fuzz_target!(|data: &[u8]| {
    let Some((geometry, name)) = data.split_first_chunk::<9>() else { return };
    let width = u32::from_le_bytes(geometry[0..4].try_into().unwrap());
    let height = u32::from_le_bytes(geometry[4..8].try_into().unwrap());
    let name = String::from_utf8_lossy(name);
    let block = edid::generate(width, height, &name);
    assert_eq!(block[..8], [0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    assert_eq!(block[..128].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "base block checksum");

    let scanouts = u32::from(geometry[8] % 17);
    let mut gpu = Gpu::new(GpuConfig {
        num_scanouts: scanouts,
        preferred_size: (width, height),
        name: name.into_owned(),
        ..GpuConfig::default()
    });
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4096)]).unwrap();
    let hdr = |ty: u32| CtrlHdr { type_: ty.into(), ..CtrlHdr::default() };
    let info = gpu.handle_request(QueueKind::Control, hdr(VIRTIO_GPU_CMD_GET_DISPLAY_INFO).as_slice(), &mem);
    assert_eq!(u32::from_le_bytes(info[..4].try_into().unwrap()), 0x1101, "OK_DISPLAY_INFO");
    for s in 0..gpu.num_scanouts() {
        let req = GetEdid { hdr: hdr(VIRTIO_GPU_CMD_GET_EDID), scanout: s.into(), padding: 0.into() };
        let resp = gpu.handle_request(QueueKind::Control, req.as_slice(), &mem);
        assert_eq!(u32::from_le_bytes(resp[..4].try_into().unwrap()), 0x1104, "OK_EDID for scanout {s}");
    }
});
