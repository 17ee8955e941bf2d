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
        device::{Gpu, GpuConfig},
        protocol::*,
        virgl3d::{Virgl3d, VirglShared},
    },
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

mod common;

use common::*;

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
