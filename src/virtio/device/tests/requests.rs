//! Tests of request handling: unknown and short requests, fences, reset, error logs.

#[allow(clippy::wildcard_imports)]
use super::*;

#[test]
fn unsupported_and_short_requests() {
    let mem = new_mem();
    let mut g = gpu();
    for ty in [
        0,
        VIRTIO_GPU_CMD_GET_CAPSET_INFO,
        VIRTIO_GPU_CMD_GET_CAPSET,
        VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID,
        VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB,
        VIRTIO_GPU_CMD_SET_SCANOUT_BLOB,
        VIRTIO_GPU_CMD_CTX_CREATE,
        VIRTIO_GPU_CMD_CTX_DESTROY,
        VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE,
        VIRTIO_GPU_CMD_RESOURCE_CREATE_3D,
        VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D,
        VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D,
        VIRTIO_GPU_CMD_SUBMIT_3D,
        VIRTIO_GPU_RESP_OK_NODATA,
        u32::MAX,
    ] {
        let mut req = bytes(&hdr(ty));
        req.extend([0u8; 128]);
        assert_eq!(exec(&mut g, &mem, &req), VIRTIO_GPU_RESP_ERR_UNSPEC, "{ty:#x}");
    }
    for len in [0, 1, 23] {
        let resp = g.handle_request(QueueKind::Control, &cmd_display_info()[..len], &mem);
        assert_eq!(resp.len(), 24);
        assert_eq!(resp_type(&resp), VIRTIO_GPU_RESP_ERR_UNSPEC);
    }
    // A header alone is a valid GET_DISPLAY_INFO but a short CREATE_2D.
    assert_eq!(exec(&mut g, &mem, &cmd_display_info()), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
    for ty in [
        VIRTIO_GPU_CMD_GET_EDID,
        VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
        VIRTIO_GPU_CMD_RESOURCE_UNREF,
        VIRTIO_GPU_CMD_SET_SCANOUT,
        VIRTIO_GPU_CMD_RESOURCE_FLUSH,
        VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D,
        VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING,
        VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING,
    ] {
        assert_eq!(exec(&mut g, &mem, &bytes(&hdr(ty))), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "{ty:#x}");
    }
}

#[test]
fn fences_are_echoed() {
    let mem = new_mem();
    let mut g = gpu();
    let mut req = cmd_create(1, 1, 4, 4);
    let fenced = CtrlHdr {
        type_: VIRTIO_GPU_CMD_RESOURCE_CREATE_2D.into(),
        flags: VIRTIO_GPU_FLAG_FENCE.into(),
        fence_id: 0x1122_3344_5566_7788u64.into(),
        ctx_id: 9.into(),
        ring_idx: 3,
        padding: [0; 3],
    };
    req[..24].copy_from_slice(fenced.as_slice());
    let h = resp_hdr(&g.handle_request(QueueKind::Control, &req, &mem));
    assert_eq!(h.type_.to_native(), VIRTIO_GPU_RESP_OK_NODATA);
    assert_eq!(h.flags.to_native(), VIRTIO_GPU_FLAG_FENCE);
    assert_eq!(h.fence_id.to_native(), 0x1122_3344_5566_7788);
    assert_eq!(h.ctx_id.to_native(), 9);
    assert_eq!(h.ring_idx, 0, "ring_idx only with INFO_RING_IDX");
    // Errors are fenced too; INFO_RING_IDX copies ring_idx.
    let mut with_ring = fenced;
    with_ring.flags = (VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX).into();
    req[..24].copy_from_slice(with_ring.as_slice());
    let h = resp_hdr(&g.handle_request(QueueKind::Control, &req, &mem));
    assert_eq!(h.type_.to_native(), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(h.flags.to_native(), VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX);
    assert_eq!((h.fence_id.to_native(), h.ctx_id.to_native(), h.ring_idx), (0x1122_3344_5566_7788, 9, 3));
    // Short body: still fenced. Display info: fenced in its header.
    let h = resp_hdr(&g.handle_request(QueueKind::Control, &req[..30], &mem));
    assert_eq!(h.type_.to_native(), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(h.fence_id.to_native(), 0x1122_3344_5566_7788);
    let mut di = with_ring;
    di.type_ = VIRTIO_GPU_CMD_GET_DISPLAY_INFO.into();
    let h = resp_hdr(&g.handle_request(QueueKind::Control, di.as_slice(), &mem));
    assert_eq!(h.type_.to_native(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
    assert_eq!((h.fence_id.to_native(), h.ctx_id.to_native(), h.ring_idx), (0x1122_3344_5566_7788, 9, 3));
    // Without FENCE nothing is echoed (INFO_RING_IDX alone is meaningless).
    let mut unfenced = fenced;
    unfenced.flags = VIRTIO_GPU_FLAG_INFO_RING_IDX.into();
    unfenced.type_ = VIRTIO_GPU_CMD_GET_DISPLAY_INFO.into();
    let h = resp_hdr(&g.handle_request(QueueKind::Control, unfenced.as_slice(), &mem));
    assert_eq!((h.flags.to_native(), h.fence_id.to_native(), h.ctx_id.to_native(), h.ring_idx), (0, 0, 0, 0));
}

#[test]
fn reset_frees_everything() {
    let mem = new_mem();
    let mut g = Gpu::new(GpuConfig { num_scanouts: 2, ..GpuConfig::default() });
    ok(&mut g, &mem, &cmd_create(3, 1, 8, 8));
    ok(&mut g, &mem, &cmd_create(1, 1, 8, 8));
    ok(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 256)]));
    ok(&mut g, &mem, &cmd_set_scanout(1, 1, rect(0, 0, 8, 8)));
    ok(&mut g, &mem, &cmd_flush(1, rect(0, 0, 8, 8)));
    exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 3, 4, 5, (0, 0)));
    g.drain_events().for_each(drop);
    g.reset();
    assert_eq!(
        g.drain_events().collect::<Vec<_>>(),
        vec![
            GpuEvent::CursorUpdate { scanout_id: 0, image: None, x: 4, y: 5 },
            GpuEvent::ScanoutSet { scanout_id: 1, resource_id: 0, rect: Rect::default() },
            GpuEvent::ResourceDestroyed { resource_id: 1 },
            GpuEvent::ResourceDestroyed { resource_id: 3 },
        ]
    );
    assert_eq!(g.host_memory_used(), 0);
    assert_eq!(g.resources().count(), 0);
    for i in 0..2 {
        let s = g.scanout(i).unwrap();
        assert_eq!((s.resource_id, s.flush_count, s.cursor.is_none()), (0, 0, true));
    }
    // Ids can be reused after reset.
    ok(&mut g, &mem, &cmd_create(1, 1, 8, 8));
    g.reset();
    g.reset();
    assert_eq!(g.drain_events().count(), 1);
}

#[test]
fn guest_errors_warn_once_per_kind() {
    let mem = new_mem();
    let mut g = gpu();
    for _ in 0..10 {
        exec(&mut g, &mem, &cmd_unref(42));
    }
    assert_eq!(g.warned.count_ones(), 1);
    exec(&mut g, &mem, &cmd_create(0, 1, 1, 1));
    assert_eq!(g.warned.count_ones(), 2);
    // a device reset within the connection keeps them quiet; the next connection warns again
    g.reset();
    assert_eq!(g.warned.count_ones(), 2);
    g.rearm_warnings();
    assert_eq!(g.warned, 0);
}

#[test]
fn guest_errors_are_counted_per_kind_and_connection() {
    let mem = new_mem();
    let mut g = gpu();
    for _ in 0..10 {
        exec(&mut g, &mem, &cmd_unref(42));
    }
    exec(&mut g, &mem, &cmd_create(0, 1, 1, 1));
    let faults: Vec<_> = g.faults().iter().map(|(k, n)| (*k, *n)).collect();
    assert_eq!(faults, [("UnknownResource", 10), ("ZeroResourceId", 1)]);
    g.reset();
    assert_eq!(g.faults().len(), 2, "a device reset keeps the connection's counts");
    g.rearm_warnings();
    assert!(g.faults().is_empty());
}

// ------------------------------------------------------------ via queue
