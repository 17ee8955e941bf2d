//! The 3D commands against the fake renderer ([`super::fake3d`]): what reaches the renderer,
//! with which ids, how its errors are answered, host memory accounting, backing iovecs, and
//! fenced responses released through [`Gpu::retire_fences`].

use super::fake3d::{Call, FAKE_CAPSETS, Failure, Fake3d, Method};
#[allow(clippy::wildcard_imports)]
use super::*;
use vm_memory::GuestMemoryBackend;

/// Gallium `PIPE_TEXTURE_2D`.
pub(super) const TEXTURE_2D: u32 = 2;

pub(super) fn gpu3d() -> (Gpu, Fake3d) {
    let fake = Fake3d::new();
    let mut g = gpu();
    g.enable_3d(fake.boxed());
    (g, fake)
}

pub(super) fn hdr_ctx(ty: u32, ctx: u32) -> CtrlHdr {
    CtrlHdr { type_: ty.into(), ctx_id: ctx.into(), ..CtrlHdr::default() }
}

/// `req` with its header fenced: `fence_id`, on ring `ring` if given.
pub(super) fn fenced(mut req: Vec<u8>, fence_id: u64, ring: Option<u8>) -> Vec<u8> {
    let mut h: CtrlHdr = read_struct(&req).unwrap();
    let ring_flag = if ring.is_some() { VIRTIO_GPU_FLAG_INFO_RING_IDX } else { 0 };
    h.flags = (VIRTIO_GPU_FLAG_FENCE | ring_flag).into();
    h.fence_id = fence_id.into();
    h.ring_idx = ring.unwrap_or(0);
    req[..size_of::<CtrlHdr>()].copy_from_slice(h.as_slice());
    req
}

pub(super) fn cmd_ctx_create(ctx: u32, capset: u32, name: &str) -> Vec<u8> {
    let mut c = CtxCreate {
        hdr: hdr_ctx(VIRTIO_GPU_CMD_CTX_CREATE, ctx),
        nlen: (name.len() as u32).into(),
        context_init: capset.into(),
        ..CtxCreate::default()
    };
    c.debug_name[..name.len()].copy_from_slice(name.as_bytes());
    bytes(&c)
}

pub(super) fn cmd_ctx_destroy(ctx: u32) -> Vec<u8> {
    bytes(&CtxDestroy { hdr: hdr_ctx(VIRTIO_GPU_CMD_CTX_DESTROY, ctx) })
}

pub(super) fn cmd_ctx_res(ctx: u32, res: u32, attach: bool) -> Vec<u8> {
    let ty = if attach { VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE } else { VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE };
    bytes(&CtxResource { hdr: hdr_ctx(ty, ctx), resource_id: res.into(), padding: 0.into() })
}

/// RESOURCE_CREATE_3D of a `target` resource `w` x `h` x `depth`, B8G8R8A8, render target.
pub(super) fn cmd_create_3d(res: u32, target: u32, w: u32, h: u32, depth: u32) -> Vec<u8> {
    bytes(&ResourceCreate3d {
        hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_3D),
        resource_id: res.into(),
        target: target.into(),
        format: 1.into(),
        bind: 2.into(),
        width: w.into(),
        height: h.into(),
        depth: depth.into(),
        array_size: 1.into(),
        ..ResourceCreate3d::default()
    })
}

pub(super) fn cmd_transfer_3d(res: u32, ctx: u32, b: Box3d, offset: u64, to_host: bool) -> Vec<u8> {
    let ty = if to_host { VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D } else { VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D };
    bytes(&TransferHost3d {
        hdr: hdr_ctx(ty, ctx),
        box_: GpuBox { x: b.x.into(), y: b.y.into(), z: b.z.into(), w: b.w.into(), h: b.h.into(), d: b.d.into() },
        offset: offset.into(),
        resource_id: res.into(),
        level: 1.into(),
        stride: 256.into(),
        layer_stride: 4096.into(),
    })
}

/// SUBMIT_3D of `dwords` in `ctx`, its `size` field `size` (None: the stream's length).
pub(super) fn cmd_submit(ctx: u32, dwords: &[u32], size: Option<u32>) -> Vec<u8> {
    let stream: Vec<u8> = dwords.iter().flat_map(|d| d.to_le_bytes()).collect();
    let size = size.unwrap_or(stream.len() as u32);
    let mut v = bytes(&CmdSubmit { hdr: hdr_ctx(VIRTIO_GPU_CMD_SUBMIT_3D, ctx), size: size.into(), padding: 0.into() });
    v.extend(stream);
    v
}

fn cmd_capset_info(index: u32) -> Vec<u8> {
    bytes(&GetCapsetInfo { hdr: hdr(VIRTIO_GPU_CMD_GET_CAPSET_INFO), capset_index: index.into(), padding: 0.into() })
}

fn cmd_capset(id: u32, version: u32) -> Vec<u8> {
    bytes(&GetCapset { hdr: hdr(VIRTIO_GPU_CMD_GET_CAPSET), capset_id: id.into(), capset_version: version.into() })
}

/// Host memory charged for a 64x32 texture.
const TEX_CHARGE: u64 = 64 * 32 * 4 + RESOURCE_OVERHEAD_BYTES;

/// A 3D device with context 1 and a 64x32 texture 5 (calls forgotten).
fn with_ctx_and_texture() -> (Gpu, Fake3d, Mem) {
    let mem = new_mem();
    let (mut g, fake) = gpu3d();
    ok(&mut g, &mem, &cmd_ctx_create(1, 2, "t"));
    ok(&mut g, &mem, &cmd_create_3d(5, TEXTURE_2D, 64, 32, 1));
    fake.take_calls();
    (g, fake, mem)
}

#[test]
fn capsets_come_from_the_renderer() {
    let mem = new_mem();
    let (mut g, _fake) = gpu3d();
    assert_eq!(g.config_space().num_capsets.to_native(), FAKE_CAPSETS.len() as u32);
    for (i, &(id, version, size)) in FAKE_CAPSETS.iter().enumerate() {
        let resp = g.handle_request(QueueKind::Control, &cmd_capset_info(i as u32), &mem);
        let info: RespCapsetInfo = read_struct(&resp).unwrap();
        assert_eq!(info.hdr.type_.to_native(), VIRTIO_GPU_RESP_OK_CAPSET_INFO);
        assert_eq!(
            (info.capset_id.to_native(), info.capset_max_version.to_native(), info.capset_max_size.to_native()),
            (id, version, size)
        );
        let resp = g.handle_request(QueueKind::Control, &cmd_capset(id, version), &mem);
        assert_eq!(resp_type(&resp), VIRTIO_GPU_RESP_OK_CAPSET);
        let caps = &resp[size_of::<RespCapset>()..];
        assert_eq!(caps.len(), size as usize);
        assert_eq!(caps[3], (id * 16 + version + 3) as u8);
    }
    assert_eq!(exec(&mut g, &mem, &cmd_capset_info(2)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(exec(&mut g, &mem, &cmd_capset(2, 3)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(exec(&mut g, &mem, &cmd_capset(7, 0)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    // A 2D-only device has no capsets and no 3D commands.
    let mut g2 = gpu();
    assert_eq!(g2.config_space().num_capsets.to_native(), 0);
    assert_eq!(exec(&mut g2, &mem, &cmd_capset_info(0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_eq!(exec(&mut g2, &mem, &cmd_ctx_create(1, 2, "t")), VIRTIO_GPU_RESP_ERR_UNSPEC);
}

#[test]
fn features_and_reset() {
    let (mut g, fake, mem) = with_ctx_and_texture();
    assert!(g.has_3d());
    let virgl = (1 << VIRTIO_GPU_F_VIRGL) | (1 << VIRTIO_GPU_F_CONTEXT_INIT);
    assert_eq!(g.device_features() & virgl, virgl);
    assert_eq!(gpu().device_features() & virgl, 0);
    assert_eq!(g.virgl_texture(5).unwrap().tex_id, 505);
    ok(&mut g, &mem, &cmd_create(6, 1, 4, 4));
    assert_eq!(g.virgl_texture(6), None);
    g.reset();
    assert_eq!(fake.take_calls(), vec![Call::Reset]);
    assert!(fake.state().contexts.is_empty() && fake.state().resources.is_empty());
    assert_eq!(g.host_memory_used(), 0);
    // Still 3D after a reset; the guest numbers from 1 again.
    ok(&mut g, &mem, &cmd_ctx_create(1, 0, ""));
    g.disable_3d();
    assert!(!g.has_3d());
    assert_eq!(g.device_features() & virgl, 0);
}

#[test]
fn contexts_reach_the_renderer_with_the_guests_ids() {
    let mem = new_mem();
    let (mut g, fake) = gpu3d();
    ok(&mut g, &mem, &cmd_ctx_create(3, 2, "mesa"));
    ok(&mut g, &mem, &cmd_create_3d(7, TEXTURE_2D, 8, 8, 1));
    ok(&mut g, &mem, &cmd_ctx_res(3, 7, true));
    ok(&mut g, &mem, &cmd_ctx_res(3, 7, false));
    ok(&mut g, &mem, &cmd_ctx_destroy(3));
    assert_eq!(
        fake.take_calls().into_iter().filter(|c| !matches!(c, Call::ResourceCreate { .. })).collect::<Vec<_>>(),
        vec![
            Call::ContextCreate { ctx: 3, capset: 2, name: "mesa".into() },
            Call::ContextAttach { ctx: 3, res: 7, attach: true },
            Call::ContextAttach { ctx: 3, res: 7, attach: false },
            Call::ContextDestroy(3),
        ]
    );
    // A 2D resource lives in the device: attaching it is a no-op for the renderer.
    ok(&mut g, &mem, &cmd_create(8, 1, 4, 4));
    ok(&mut g, &mem, &cmd_ctx_res(3, 8, true));
    // An unknown resource never reaches it.
    assert_eq!(exec(&mut g, &mem, &cmd_ctx_res(3, 9, true)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(fake.take_calls(), vec![]);
    assert!(fake.state().unknown_resources.is_empty());
}

#[test]
fn context_errors_map_to_response_codes() {
    let (mut g, fake, mem) = with_ctx_and_texture();
    type Case = (Vec<u8>, Option<(Method, Failure)>, u32);
    let cases: [Case; 10] = [
        (cmd_ctx_create(0, 2, ""), None, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID),
        (cmd_ctx_create(1, 2, ""), None, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID),
        (cmd_ctx_create(2, 9, ""), None, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER),
        (cmd_ctx_create(2, 2, ""), Some((Method::ContextCreate, Failure::Renderer)), VIRTIO_GPU_RESP_ERR_UNSPEC),
        (cmd_ctx_destroy(4), None, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID),
        (cmd_ctx_destroy(1), Some((Method::ContextDestroy, Failure::Renderer)), VIRTIO_GPU_RESP_ERR_UNSPEC),
        (cmd_ctx_res(4, 5, true), None, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID),
        (cmd_ctx_res(0, 5, false), None, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID),
        (
            cmd_ctx_res(1, 5, true),
            Some((Method::ContextAttach, Failure::Refused)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER,
        ),
        (cmd_ctx_res(1, 5, true), Some((Method::ContextAttach, Failure::Renderer)), VIRTIO_GPU_RESP_ERR_UNSPEC),
    ];
    for (req, fail, want) in cases {
        if let Some((method, failure)) = fail {
            fake.fail(method, failure);
        }
        assert_eq!(exec(&mut g, &mem, &req), want, "{fail:?}");
    }
    // Failed calls changed nothing: context 1 alone, nothing attached.
    assert_eq!(fake.state().contexts.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert!(fake.state().attached.is_empty());
    // A CTX_CREATE too short for its struct never reaches the renderer.
    fake.take_calls();
    assert_eq!(exec(&mut g, &mem, &cmd_ctx_create(2, 2, "")[..40]), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(fake.take_calls(), vec![]);
}

#[test]
fn create_3d_charges_host_memory_and_refunds_it() {
    let mem = new_mem();
    let (mut g, fake) = gpu3d();
    ok(&mut g, &mem, &cmd_create_3d(5, TEXTURE_2D, 64, 32, 1));
    assert_eq!(g.host_memory_used(), TEX_CHARGE);
    assert_eq!(g.resource(5).unwrap().kind, ResourceKind::ThreeD { charge: TEX_CHARGE });
    let Call::ResourceCreate { res: 5, args } = fake.take_calls()[0] else { panic!("no create") };
    assert_eq!((args.handle, args.target, args.width, args.height, args.depth), (0, TEXTURE_2D, 64, 32, 1));
    // A buffer is charged its bytes.
    ok(&mut g, &mem, &cmd_create_3d(6, 0, 1000, 1, 1));
    assert_eq!(g.host_memory_used(), TEX_CHARGE + 1000 + RESOURCE_OVERHEAD_BYTES);
    // Refused by the renderer: refunded, not in the device.
    fake.fail(Method::ResourceCreate, Failure::Refused);
    assert_eq!(exec(&mut g, &mem, &cmd_create_3d(7, TEXTURE_2D, 16, 16, 1)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    fake.fail(Method::ResourceCreate, Failure::Renderer);
    assert_eq!(exec(&mut g, &mem, &cmd_create_3d(7, TEXTURE_2D, 16, 16, 1)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert!(g.resource(7).is_none());
    assert_eq!(g.host_memory_used(), TEX_CHARGE + 1000 + RESOURCE_OVERHEAD_BYTES);
    fake.take_calls();
    // Refused by the device: the renderer never hears of it.
    for (req, want) in [
        (cmd_create_3d(0, TEXTURE_2D, 4, 4, 1), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID),
        (cmd_create_3d(5, TEXTURE_2D, 4, 4, 1), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID),
        (cmd_create(6, 1, 4, 4), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID),
        (cmd_create_3d(8, TEXTURE_2D, 16385, 4, 1), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER),
        (cmd_create_3d(8, 0, MAX_BUFFER_BYTES + 1, 1, 1), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER),
        (cmd_create_3d(8, TEXTURE_2D, 16384, 16384, 1), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY),
        (cmd_create_3d(8, TEXTURE_2D, 4, 4, 1)[..60].to_vec(), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER),
    ] {
        assert_eq!(exec(&mut g, &mem, &req), want);
    }
    assert_eq!(fake.take_calls(), vec![]);
    // Unref refunds, and reaches the renderer.
    ok(&mut g, &mem, &cmd_unref(5));
    ok(&mut g, &mem, &cmd_unref(6));
    assert_eq!(g.host_memory_used(), 0);
    assert_eq!(fake.take_calls(), vec![Call::ResourceUnref(5), Call::ResourceUnref(6)]);
    assert!(fake.state().resources.is_empty());
    // A renderer error on unref is logged; the resource is gone from both sides.
    ok(&mut g, &mem, &cmd_create_3d(5, TEXTURE_2D, 4, 4, 1));
    fake.fail(Method::ResourceUnref, Failure::Renderer);
    ok(&mut g, &mem, &cmd_unref(5));
    assert!(g.resource(5).is_none() && fake.state().resources.is_empty());
    assert_eq!(g.host_memory_used(), 0);
}

#[test]
fn attach_backing_3d_hands_over_iovecs_into_guest_memory() {
    let (mut g, fake, mem) = with_ctx_and_texture();
    // Three entries, the first two contiguous (merged into one).
    let entries = [(DATA_START, 4096), (DATA_START + 4096, 904), (DATA_START + 0x3000, 3000)];
    ok(&mut g, &mem, &cmd_attach(5, &entries));
    let calls = fake.take_calls();
    let [Call::AttachBacking { res: 5, iov }] = calls.as_slice() else { panic!("{calls:?}") };
    let want = [(DATA_START, 5000usize), (DATA_START + 0x3000, 3000)];
    assert_eq!(iov.len(), want.len());
    for (&(base, len), &(addr, want_len)) in iov.iter().zip(&want) {
        assert_eq!(base, mem.get_host_address(GuestAddress(addr)).unwrap() as usize);
        assert_eq!(len, want_len);
    }
    assert_eq!(iov.iter().map(|v| v.1 as u64).sum::<u64>(), g.resource(5).unwrap().backing.as_ref().unwrap().len());
    assert_eq!(fake.state().resources[&5].backing, Some(8000));
    assert_eq!(g.host_memory_used(), TEX_CHARGE + 2 * BACKING_ENTRY_BYTES);
    // Detach reaches the renderer and refunds the entries.
    ok(&mut g, &mem, &cmd_detach(5));
    assert_eq!(fake.take_calls(), vec![Call::DetachBacking(5)]);
    assert_eq!(fake.state().resources[&5].backing, None);
    assert_eq!(g.host_memory_used(), TEX_CHARGE);
    // The renderer failing: refunded, no backing on either side.
    fake.fail(Method::AttachBacking, Failure::Renderer);
    assert_eq!(exec(&mut g, &mem, &cmd_attach(5, &entries)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert!(g.resource(5).unwrap().backing.is_none());
    assert_eq!(g.host_memory_used(), TEX_CHARGE);
    fake.take_calls();
    // Outside guest memory: refused by the device.
    assert_eq!(exec(&mut g, &mem, &cmd_attach(5, &[(MEM_SIZE - 8, 16)])), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(fake.take_calls(), vec![]);
    // Unref with backing attached: the entries are refunded too.
    ok(&mut g, &mem, &cmd_attach(5, &entries));
    ok(&mut g, &mem, &cmd_unref(5));
    assert_eq!(g.host_memory_used(), 0);
}

#[test]
fn transfers_3d() {
    let (mut g, fake, mem) = with_ctx_and_texture();
    let b = Box3d { x: 1, y: 2, z: 0, w: 3, h: 4, d: 1 };
    // No backing: the renderer refuses.
    assert_eq!(exec(&mut g, &mem, &cmd_transfer_3d(5, 1, b, 0, true)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    ok(&mut g, &mem, &cmd_attach(5, &[(DATA_START, 8192)]));
    fake.take_calls();
    ok(&mut g, &mem, &cmd_transfer_3d(5, 1, b, 64, true));
    ok(&mut g, &mem, &cmd_transfer_3d(5, 0, b, 128, false));
    let t = Transfer3d {
        resource: 5,
        ctx: 1,
        level: 1,
        stride: 256,
        layer_stride: 4096,
        bbox: b,
        offset: 64,
        to_host: true,
    };
    assert_eq!(
        fake.take_calls(),
        vec![Call::Transfer(t), Call::Transfer(Transfer3d { ctx: 0, offset: 128, to_host: false, ..t })]
    );
    // TRANSFER_TO_HOST_2D of a 3D resource goes to the renderer, in context 0.
    ok(&mut g, &mem, &cmd_transfer(5, rect(1, 2, 3, 4), 16));
    assert_eq!(
        fake.take_calls(),
        vec![Call::Transfer(Transfer3d { resource: 5, bbox: b, offset: 16, to_host: true, ..Transfer3d::default() })]
    );
    // The renderer refusing the box.
    fake.fail(Method::Transfer, Failure::Refused);
    assert_eq!(exec(&mut g, &mem, &cmd_transfer_3d(5, 1, b, 0, false)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    fake.take_calls();
    // Refused by the device: a 2D resource, an unknown one, a short request.
    ok(&mut g, &mem, &cmd_create(6, 1, 4, 4));
    ok(&mut g, &mem, &cmd_attach(6, &[(DATA_START, 64)]));
    assert_eq!(exec(&mut g, &mem, &cmd_transfer_3d(6, 1, b, 0, true)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(exec(&mut g, &mem, &cmd_transfer_3d(9, 1, b, 0, true)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    let short = cmd_transfer_3d(5, 1, b, 0, true)[..50].to_vec();
    assert_eq!(exec(&mut g, &mem, &short), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(fake.take_calls(), vec![]);
    assert!(fake.state().unknown_resources.is_empty());
}

#[test]
fn submit_3d() {
    let (mut g, fake, mem) = with_ctx_and_texture();
    let stream = [0x0001_0000u32, 0xdead_beef, 7];
    ok(&mut g, &mem, &cmd_submit(1, &stream, None));
    assert_eq!(fake.take_calls(), vec![Call::Submit { ctx: 1, stream: stream.to_vec() }]);
    ok(&mut g, &mem, &cmd_submit(1, &[], None));
    assert_eq!(fake.take_calls(), vec![Call::Submit { ctx: 1, stream: vec![] }]);
    // Refused by the device: misaligned, oversized, longer than the request.
    for size in [6, MAX_SUBMIT_BYTES as u32 + 4, u32::MAX, 16] {
        assert_eq!(exec(&mut g, &mem, &cmd_submit(1, &stream, Some(size))), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    }
    assert_eq!(fake.take_calls(), vec![]);
    // Refused by the renderer.
    assert_eq!(exec(&mut g, &mem, &cmd_submit(2, &stream, None)), VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
    fake.fail(Method::Submit, Failure::Renderer);
    assert_eq!(exec(&mut g, &mem, &cmd_submit(1, &stream, None)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    // The largest stream accepted.
    let big = vec![0u32; MAX_SUBMIT_BYTES / 4];
    fake.take_calls();
    ok(&mut g, &mem, &cmd_submit(1, &big, None));
    assert!(matches!(&fake.take_calls()[..], [Call::Submit { ctx: 1, stream }] if stream.len() == big.len()));
}

#[test]
fn unref_of_an_attached_resource_detaches_it() {
    let (mut g, fake, mem) = with_ctx_and_texture();
    ok(&mut g, &mem, &cmd_ctx_create(2, 2, "u"));
    ok(&mut g, &mem, &cmd_ctx_res(1, 5, true));
    ok(&mut g, &mem, &cmd_ctx_res(2, 5, true));
    assert_eq!(fake.state().attached.len(), 2);
    ok(&mut g, &mem, &cmd_unref(5));
    assert!(fake.state().attached.is_empty(), "{:?}", fake.state().attached);
    // The id is free again on both sides, and the new resource is attached to nothing.
    ok(&mut g, &mem, &cmd_create_3d(5, TEXTURE_2D, 4, 4, 1));
    assert!(fake.state().attached.is_empty());
    // Detaching the gone resource from a context: unknown to the device.
    ok(&mut g, &mem, &cmd_unref(5));
    assert_eq!(exec(&mut g, &mem, &cmd_ctx_res(1, 5, false)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    assert!(fake.state().unknown_resources.is_empty());
}

/// The header of the response written at `addr`.
fn resp_at(d: &Driver<'_>, addr: u64) -> CtrlHdr {
    read_struct(&d.read(addr, 24)).unwrap()
}

#[test]
fn fenced_responses_wait_for_their_fence_in_order() {
    let mem = new_mem();
    let mut d = Driver::new(&mem);
    let (mut g, fake) = gpu3d();
    let r0 = d.request(&cmd_ctx_create(1, 2, "f"), 24);
    let r1 = d.request(&fenced(cmd_submit(1, &[0], None), 10, None), 24);
    let r2 = d.request(&fenced(cmd_submit(1, &[0], None), 11, None), 24);
    let r3 = d.request(&fenced(cmd_submit(1, &[0], None), 12, Some(0)), 24);
    let r4 = d.request(&cmd_display_info(), 408);
    assert!(g.process_ctrl_queue(&mut d.queue, &mem));
    // The unfenced ones at once; the fenced ones wait.
    assert_eq!(d.used(), vec![(0, 24), (8, 408)]);
    assert_eq!(g.pending_fences(), 3);
    assert_eq!(resp_at(&d, r0.0).type_.to_native(), VIRTIO_GPU_RESP_OK_NODATA);
    assert_eq!(fake.state().fences.len(), 3);
    assert!(fake.take_calls().contains(&Call::CreateFence { ctx: 1, ring: Some(0) }));
    // No fence retired: nothing.
    assert!(!g.retire_fences(&[], &mut d.queue, &mem));
    // The first global fence.
    assert!(g.retire_fences(&fake.retire(1), &mut d.queue, &mem));
    assert_eq!(d.used()[2..], [(2, 24)]);
    let h = resp_at(&d, r1.0);
    assert_eq!(h.type_.to_native(), VIRTIO_GPU_RESP_OK_NODATA);
    assert_eq!((h.flags.to_native(), h.fence_id.to_native(), h.ctx_id.to_native()), (VIRTIO_GPU_FLAG_FENCE, 10, 1));
    // The rest at once: one merged report per timeline.
    let reports = fake.retire_all();
    assert_eq!(reports.len(), 2);
    assert!(g.retire_fences(&reports, &mut d.queue, &mem));
    assert_eq!(d.used()[3..], [(4, 24), (6, 24)]);
    assert_eq!(resp_at(&d, r2.0).fence_id.to_native(), 11);
    let h = resp_at(&d, r3.0);
    let ring_flags = VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX;
    assert_eq!((h.flags.to_native(), h.fence_id.to_native(), h.ring_idx), (ring_flags, 12, 0));
    assert_eq!(g.pending_fences(), 0);
    let _ = r4;
    // A retired fence reported again answers nothing more.
    assert!(!g.retire_fences(&reports, &mut d.queue, &mem));
}

#[test]
fn reset_drops_pending_responses_and_fences_stay_harmless() {
    let mem = new_mem();
    let mut d = Driver::new(&mem);
    let (mut g, fake) = gpu3d();
    d.request(&cmd_ctx_create(1, 2, "f"), 24);
    d.request(&fenced(cmd_submit(1, &[0], None), 1, None), 24);
    g.process_ctrl_queue(&mut d.queue, &mem);
    assert_eq!(g.pending_fences(), 1);
    g.reset();
    assert_eq!(g.pending_fences(), 0);
    assert!(!g.retire_fences(&fake.retire_all(), &mut d.queue, &mem));
    assert_eq!(d.used().len(), 1);
}

// ------------------------------------------------ device-model bugs the fake found

#[test]
fn failed_detach_keeps_backing_and_accounting() {
    let (mut g, fake, mem) = with_ctx_and_texture();
    ok(&mut g, &mem, &cmd_attach(5, &[(DATA_START, 64)]));
    fake.fail(Method::DetachBacking, Failure::Renderer);
    assert_eq!(exec(&mut g, &mem, &cmd_detach(5)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    // The renderer still holds the backing, so the device does too, and still charges it.
    assert!(fake.state().resources[&5].backing.is_some());
    assert!(g.resource(5).unwrap().backing.is_some());
    assert_eq!(g.host_memory_used(), g.resources().map(|(_, r)| r.host_memory()).sum::<u64>());
    ok(&mut g, &mem, &cmd_detach(5));
    ok(&mut g, &mem, &cmd_unref(5));
    assert_eq!(g.host_memory_used(), 0);
}

#[test]
fn a_failed_fenced_command_does_not_overtake_earlier_fences() {
    let mem = new_mem();
    let mut d = Driver::new(&mem);
    let (mut g, fake) = gpu3d();
    d.request(&cmd_ctx_create(1, 2, "f"), 24);
    d.request(&fenced(cmd_submit(1, &[0], None), 1, None), 24);
    // Fails (unknown context): its response carries fence 2, which to Linux means fence 1 is
    // done too, so it must wait behind fence 1.
    let r2 = d.request(&fenced(cmd_submit(9, &[0], None), 2, None), 24);
    g.process_ctrl_queue(&mut d.queue, &mem);
    assert_eq!(d.used(), vec![(0, 24)], "the failed fenced command went out before fence 1");
    g.retire_fences(&fake.retire_all(), &mut d.queue, &mem);
    assert_eq!(d.used(), vec![(0, 24), (2, 24), (4, 24)]);
    let h = resp_at(&d, r2.0);
    assert_eq!((h.type_.to_native(), h.fence_id.to_native()), (VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID, 2));
    // The fence cannot be created (unknown context for a ring fence, or the renderer failing):
    // held behind the newest pending response instead.
    d.request(&fenced(cmd_submit(1, &[0], None), 3, None), 24);
    d.request(&fenced(cmd_submit(9, &[0], None), 4, Some(0)), 24);
    g.process_ctrl_queue(&mut d.queue, &mem);
    fake.fail(Method::CreateFence, Failure::Renderer);
    d.request(&fenced(cmd_display_info(), 5, None), 408);
    g.process_ctrl_queue(&mut d.queue, &mem);
    assert_eq!(d.used().len(), 3);
    assert_eq!(g.pending_fences(), 3);
    g.retire_fences(&fake.retire_all(), &mut d.queue, &mem);
    assert_eq!(d.used()[3..], [(6, 24), (8, 24), (10, 408)]);
    // With nothing pending, answered at once.
    fake.fail(Method::CreateFence, Failure::Renderer);
    d.request(&fenced(cmd_display_info(), 6, None), 408);
    g.process_ctrl_queue(&mut d.queue, &mem);
    assert_eq!(d.used().len(), 7);
}

#[test]
fn fenced_cursor_commands_are_answered_on_the_cursor_queue() {
    let mem = new_mem();
    let mut d = Driver::new(&mem);
    let (mut g, fake) = gpu3d();
    let mv = cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 0, 1, 2, (0, 0));
    d.request(&fenced(mv, 1, None), 24);
    assert!(g.process_cursor_queue(&mut d.queue, &mem));
    assert_eq!(d.used(), vec![(0, 24)]);
    assert_eq!(g.pending_fences(), 0, "a cursor-queue chain waits to go to the control queue's used ring");
    assert!(fake.state().fences.is_empty());
}

#[test]
fn responses_fenced_on_a_destroyed_context_are_answered() {
    let mem = new_mem();
    let mut d = Driver::new(&mem);
    let (mut g, fake) = gpu3d();
    d.request(&cmd_ctx_create(1, 2, "f"), 24);
    d.request(&cmd_ctx_create(2, 2, "g"), 24);
    let r = d.request(&fenced(cmd_submit(1, &[0], None), 7, Some(0)), 24);
    d.request(&fenced(cmd_submit(2, &[0], None), 8, Some(0)), 24);
    d.request(&cmd_ctx_destroy(1), 24);
    g.process_ctrl_queue(&mut d.queue, &mem);
    assert_eq!(d.used().len(), 3);
    // virglrenderer dropped context 1's fence; the response waits for something that retires.
    g.retire_fences(&fake.retire_all(), &mut d.queue, &mem);
    assert_eq!(d.used().len(), 5, "the response fenced on the destroyed context is lost");
    let h = resp_at(&d, r.0);
    assert_eq!((h.type_.to_native(), h.fence_id.to_native(), h.ring_idx), (VIRTIO_GPU_RESP_OK_NODATA, 7, 0));
    assert_eq!(g.pending_fences(), 0);
}

#[test]
fn a_fence_of_a_request_handled_outside_a_chain_does_not_stick_to_the_next_chain() {
    let mem = new_mem();
    let mut d = Driver::new(&mem);
    let (mut g, _fake) = gpu3d();
    ok(&mut g, &mem, &cmd_ctx_create(1, 2, "f"));
    let resp = g.handle_request(QueueKind::Control, &fenced(cmd_submit(1, &[0], None), 1, None), &mem);
    assert_eq!(resp_type(&resp), VIRTIO_GPU_RESP_OK_NODATA);
    d.request(&cmd_display_info(), 408);
    g.process_ctrl_queue(&mut d.queue, &mem);
    assert_eq!(d.used(), vec![(0, 408)]);
    assert_eq!(g.pending_fences(), 0);
}
