//! Two guests' device models on ONE real virglrenderer (in the compositor's EGL share group, on
//! Mesa here): each numbers its contexts and resources from 1, renders into its own resource, and
//! a stream naming the other guest's resource is rejected before virglrenderer sees it.
//!
//! One test function: virglrenderer is process-global.

use std::rc::Rc;

use scanway::{
    renderer::{
        self,
        virgl::{GlApi, Virgl, VirglOptions},
    },
    virtio::{
        device::{Gpu, GpuConfig, QueueKind},
        protocol::*,
        virgl3d::{Virgl3d, VirglShared},
    },
};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

const W: u32 = 64;
const H: u32 = 64;
const BACKING: u64 = 0x1000;

fn hdr(ty: u32, ctx: u32) -> CtrlHdr {
    CtrlHdr { type_: ty.into(), ctx_id: ctx.into(), ..CtrlHdr::default() }
}

fn exec(gpu: &mut Gpu, mem: &GuestMemoryMmap, req: &[u8]) -> u32 {
    let resp = gpu.handle_request(QueueKind::Control, req, mem);
    u32::from_le_bytes(resp[..4].try_into().unwrap())
}

fn cmd<T: ByteValued>(v: T) -> Vec<u8> {
    v.as_slice().to_vec()
}

/// CREATE_OBJECT(surface 1 over `res`), SET_FRAMEBUFFER_STATE(surface 1), CLEAR(rgba).
fn clear_stream(res: u32, rgba: [f32; 4]) -> Vec<u8> {
    let cmd0 = |op: u32, obj: u32, len: u32| op | (obj << 8) | (len << 16);
    let mut d = vec![cmd0(1, 8, 5), 1, res, 1, 0, 0, cmd0(5, 0, 3), 1, 0, 1, cmd0(7, 0, 8), 1 << 2];
    d.extend(rgba.iter().map(|c| c.to_bits()));
    d.extend([0, 0, 0]);
    d.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn submit(gpu: &mut Gpu, mem: &GuestMemoryMmap, ctx: u32, stream: &[u8]) -> u32 {
    let mut req = cmd(CmdSubmit {
        hdr: hdr(VIRTIO_GPU_CMD_SUBMIT_3D, ctx),
        size: (stream.len() as u32).into(),
        padding: 0.into(),
    });
    req.extend_from_slice(stream);
    exec(gpu, mem, &req)
}

/// A guest with context 1 and a 64x64 B8G8R8A8 render target `res` backed at BACKING.
fn guest_with_target(gpu: &mut Gpu, mem: &GuestMemoryMmap, res: u32, backing: u64) {
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
fn read_pixel(gpu: &mut Gpu, mem: &GuestMemoryMmap, res: u32, backing: u64) -> [u8; 4] {
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

#[test]
fn two_guests_share_one_virglrenderer_without_touching_each_other() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mut compositor = renderer::headless_renderer().expect("EGL (Mesa llvmpipe or a GPU)");
    let display = compositor.egl_context().display().get_display_handle().handle;
    let context = compositor.egl_context().get_context_handle();
    let options = VirglOptions { api: GlApi::SameAsShareContext, thread_sync: false };
    // SAFETY: the renderer outlives virglrenderer (dropped last, below).
    let virgl = unsafe { Virgl::init_with(display, context, options) }.expect("virglrenderer");
    let shared = VirglShared::new(virgl, Some(compositor.egl_context().display().clone()));

    let config = |name: &str| GpuConfig { name: name.into(), ..GpuConfig::default() };
    let (mut a, mut b) = (Gpu::new(config("a")), Gpu::new(config("b")));
    a.enable_3d(Box::new(Virgl3d::new(Rc::clone(&shared))));
    b.enable_3d(Box::new(Virgl3d::new(Rc::clone(&shared))));
    assert_ne!(a.device_features() & (1 << VIRTIO_GPU_F_VIRGL), 0);
    let mem_a = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let mem_b = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();

    // Both guests: context 1, resource 1. Guest a also has resource 2.
    guest_with_target(&mut a, &mem_a, 1, BACKING);
    guest_with_target(&mut a, &mem_a, 2, BACKING + 0x10000);
    guest_with_target(&mut b, &mem_b, 1, BACKING);

    assert_eq!(submit(&mut a, &mem_a, 1, &clear_stream(1, [1.0, 0.0, 0.0, 1.0])), VIRTIO_GPU_RESP_OK_NODATA);
    assert_eq!(submit(&mut b, &mem_b, 1, &clear_stream(1, [0.0, 0.0, 1.0, 1.0])), VIRTIO_GPU_RESP_OK_NODATA);
    // a's second resource: green.
    let mut green = clear_stream(2, [0.0, 1.0, 0.0, 1.0]);
    green[4..8].copy_from_slice(&2u32.to_le_bytes()); // surface object handle 2
    green[36..40].copy_from_slice(&2u32.to_le_bytes()); // framebuffer cbuf 0 = surface 2
    assert_eq!(submit(&mut a, &mem_a, 1, &green), VIRTIO_GPU_RESP_OK_NODATA);

    assert_eq!(read_pixel(&mut a, &mem_a, 1, BACKING), [0, 0, 255, 255], "guest a's resource 1 is red");
    assert_eq!(read_pixel(&mut b, &mem_b, 1, BACKING), [255, 0, 0, 255], "guest b's resource 1 is blue");

    // Guest b names resource 2, which only guest a has: rejected, a's resource untouched.
    assert_eq!(
        submit(&mut b, &mem_b, 1, &clear_stream(2, [1.0, 1.0, 1.0, 1.0])),
        VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
    );
    // An unknown opcode is rejected too.
    let bogus: Vec<u8> = [0xfeu32 | (1 << 16), 0].iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(submit(&mut b, &mem_b, 1, &bogus), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(read_pixel(&mut a, &mem_a, 2, BACKING + 0x10000), [0, 255, 0, 255], "guest a's resource 2 still green");
    // Guest b's context survives its bad streams.
    assert_eq!(submit(&mut b, &mem_b, 1, &clear_stream(1, [0.0, 1.0, 1.0, 1.0])), VIRTIO_GPU_RESP_OK_NODATA);
    assert_eq!(read_pixel(&mut b, &mem_b, 1, BACKING), [255, 255, 0, 255]);

    // A third guest creating its context between two of guest a's commands: virglrenderer makes
    // the new context's GL context current without noting it, so unless the wrapper forgets
    // virglrenderer's current-context cache after creating (Virgl::context_create), a's next
    // command runs in c's GL context: the clear below would land there and a's resource stay red.
    assert_eq!(submit(&mut a, &mem_a, 1, &clear_stream(1, [1.0, 0.0, 0.0, 1.0])), VIRTIO_GPU_RESP_OK_NODATA);
    let mut c = Gpu::new(config("c"));
    c.enable_3d(Box::new(Virgl3d::new(Rc::clone(&shared))));
    let mem_c = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let create = CtxCreate { hdr: hdr(VIRTIO_GPU_CMD_CTX_CREATE, 1), ..CtxCreate::default() };
    assert_eq!(exec(&mut c, &mem_c, &cmd(create)), VIRTIO_GPU_RESP_OK_NODATA);
    // CLEAR alone (a's framebuffer state still names its surface 1): yellow
    let clear_only = clear_stream(1, [1.0, 1.0, 0.0, 1.0])[40..].to_vec();
    assert_eq!(submit(&mut a, &mem_a, 1, &clear_only), VIRTIO_GPU_RESP_OK_NODATA);
    assert_eq!(read_pixel(&mut a, &mem_a, 1, BACKING), [0, 255, 255, 255], "guest a's clear ran in a's context");
    drop(c);

    // Zero copies: the resource's GL texture is what a scanout samples.
    let info = a.virgl_texture(1).expect("texture of a's resource 1");
    assert!(info.tex_id != 0 && info.width == W && info.height == H);

    drop((a, b));
    drop(shared);
    let _ = &mut compositor;
}
