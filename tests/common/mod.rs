//! Guest-side helpers of the integration tests: virtio-gpu commands as a guest driver sends
//! them to a device model ([`Gpu::handle_request`]), and a small virgl stream.
#![allow(dead_code)]

use scanway::virtio::{
    device::{Gpu, QueueKind},
    protocol::*,
};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

pub const W: u32 = 64;
pub const H: u32 = 64;
pub const BACKING: u64 = 0x1000;

pub fn hdr(ty: u32, ctx: u32) -> CtrlHdr {
    CtrlHdr { type_: ty.into(), ctx_id: ctx.into(), ..CtrlHdr::default() }
}

pub fn exec(gpu: &mut Gpu, mem: &GuestMemoryMmap, req: &[u8]) -> u32 {
    let resp = gpu.handle_request(QueueKind::Control, req, mem);
    u32::from_le_bytes(resp[..4].try_into().unwrap())
}

pub fn cmd<T: ByteValued>(v: T) -> Vec<u8> {
    v.as_slice().to_vec()
}

/// CREATE_OBJECT(surface 1 over `res`), SET_FRAMEBUFFER_STATE(surface 1), CLEAR(rgba).
pub fn clear_stream(res: u32, rgba: [f32; 4]) -> Vec<u8> {
    let cmd0 = |op: u32, obj: u32, len: u32| op | (obj << 8) | (len << 16);
    let mut d = vec![cmd0(1, 8, 5), 1, res, 1, 0, 0, cmd0(5, 0, 3), 1, 0, 1, cmd0(7, 0, 8), 1 << 2];
    d.extend(rgba.iter().map(|c| c.to_bits()));
    d.extend([0, 0, 0]);
    d.iter().flat_map(|w| w.to_le_bytes()).collect()
}

pub fn submit(gpu: &mut Gpu, mem: &GuestMemoryMmap, ctx: u32, stream: &[u8]) -> u32 {
    let mut req = cmd(CmdSubmit {
        hdr: hdr(VIRTIO_GPU_CMD_SUBMIT_3D, ctx),
        size: (stream.len() as u32).into(),
        padding: 0.into(),
    });
    req.extend_from_slice(stream);
    exec(gpu, mem, &req)
}

/// A guest with context 1 and a 64x64 B8G8R8A8 render target `res` backed at BACKING.
pub fn guest_with_target(gpu: &mut Gpu, mem: &GuestMemoryMmap, res: u32, backing: u64) {
    let mut create = CtxCreate { hdr: hdr(VIRTIO_GPU_CMD_CTX_CREATE, 1), nlen: 4.into(), ..CtxCreate::default() };
    create.debug_name[..4].copy_from_slice(b"test");
    if gpu.resources().count() == 0 {
        assert_eq!(exec(gpu, mem, &cmd(create)), VIRTIO_GPU_RESP_OK_NODATA);
    }
    let create3d = ResourceCreate3d {
        hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_3D, 0),
        resource_id: res.into(),
        target: 2.into(),                   // PIPE_TEXTURE_2D
        format: 1.into(),                   // B8G8R8A8_UNORM
        bind: ((1 << 1) | (1 << 3)).into(), // RENDER_TARGET | SAMPLER_VIEW
        width: W.into(),
        height: H.into(),
        depth: 1.into(),
        array_size: 1.into(),
        ..ResourceCreate3d::default()
    };
    assert_eq!(exec(gpu, mem, &cmd(create3d)), VIRTIO_GPU_RESP_OK_NODATA);
    let mut attach = cmd(ResourceAttachBacking {
        hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, 0),
        resource_id: res.into(),
        nr_entries: 1.into(),
    });
    attach.extend(cmd(MemEntry { addr: backing.into(), length: (W * H * 4).into(), padding: 0.into() }));
    assert_eq!(exec(gpu, mem, &attach), VIRTIO_GPU_RESP_OK_NODATA);
    let ctx_attach =
        CtxResource { hdr: hdr(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 1), resource_id: res.into(), padding: 0.into() };
    assert_eq!(exec(gpu, mem, &cmd(ctx_attach)), VIRTIO_GPU_RESP_OK_NODATA);
}

/// Read resource `res` back into its backing and return the pixel at (1, 1) as B,G,R,A bytes.
pub fn read_pixel(gpu: &mut Gpu, mem: &GuestMemoryMmap, res: u32, backing: u64) -> [u8; 4] {
    let t = TransferHost3d {
        hdr: hdr(VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D, 1),
        box_: GpuBox { x: 0.into(), y: 0.into(), z: 0.into(), w: W.into(), h: H.into(), d: 1.into() },
        offset: 0.into(),
        resource_id: res.into(),
        level: 0.into(),
        stride: (W * 4).into(),
        layer_stride: 0.into(),
    };
    assert_eq!(exec(gpu, mem, &cmd(t)), VIRTIO_GPU_RESP_OK_NODATA);
    let mut px = [0u8; 4];
    mem.read_slice(&mut px, GuestAddress(backing + u64::from(W * 4 + 4))).unwrap();
    px
}
