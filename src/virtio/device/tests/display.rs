//! Tests of display info, EDID, scanouts, flushes and the cursor.

#[allow(clippy::wildcard_imports)]
use super::*;

#[test]
fn config_is_clamped_and_features() {
    let g = Gpu::new(GpuConfig { num_scanouts: 99, preferred_size: (0, 100_000), ..GpuConfig::default() });
    assert_eq!(g.num_scanouts(), 16);
    assert_eq!(g.config().preferred_size, (1, MAX_RESOURCE_DIMENSION));
    assert_eq!(g.device_features(), 1 << VIRTIO_GPU_F_EDID);
    assert_eq!(g.config_space().num_scanouts.to_native(), 16);
    let g = Gpu::new(GpuConfig { num_scanouts: 0, ..GpuConfig::default() });
    assert_eq!(g.num_scanouts(), 1);
    assert!(g.scanout(1).is_none());
    assert_eq!(g.scanout(0).unwrap().width, 1280);
}

#[test]
fn display_info_side_by_side() {
    let mem = new_mem();
    let mut g = Gpu::new(GpuConfig { num_scanouts: 3, preferred_size: (1024, 768), ..GpuConfig::default() });
    assert!(g.set_display_size(1, 800, 600));
    assert!(!g.set_display_size(3, 800, 600));
    let resp = g.handle_request(QueueKind::Control, &cmd_display_info(), &mem);
    assert_eq!(resp.len(), size_of::<RespDisplayInfo>());
    let info: RespDisplayInfo = read_struct(&resp).unwrap();
    assert_eq!(info.hdr.type_.to_native(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
    let modes: Vec<_> = info.pmodes.iter().map(|m| (Rect::from(m.r), m.enabled.to_native())).collect();
    assert_eq!(modes[0], (Rect::new(0, 0, 1024, 768), 1));
    assert_eq!(modes[1], (Rect::new(1024, 0, 800, 600), 1));
    assert_eq!(modes[2], (Rect::new(1824, 0, 1024, 768), 1));
    for m in &info.pmodes[3..] {
        assert_eq!(*m, DisplayOne::default());
    }
    // Everything after the pmodes we filled is zero: no stale bytes.
    assert!(resp[24 + 3 * 24..].iter().all(|b| *b == 0));
}

#[test]
fn get_edid() {
    let mem = new_mem();
    let mut g = Gpu::new(GpuConfig {
        num_scanouts: 2,
        preferred_size: (1920, 1080),
        name: "testvm".into(),
        ..GpuConfig::default()
    });
    let resp = g.handle_request(QueueKind::Control, &cmd_edid(1), &mem);
    assert_eq!(resp.len(), size_of::<RespEdid>());
    let e: RespEdid = read_struct(&resp).unwrap();
    assert_eq!(e.hdr.type_.to_native(), VIRTIO_GPU_RESP_OK_EDID);
    assert_eq!(e.size.to_native(), 128);
    assert_eq!(e.edid[..128], edid::generate(1920, 1080, "testvm"));
    assert!(e.edid[128..].iter().all(|b| *b == 0));
    assert_eq!(exec(&mut g, &mem, &cmd_edid(2)), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
    assert_eq!(exec(&mut g, &mem, &cmd_edid(u32::MAX)), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
    assert_eq!(exec(&mut g, &mem, &cmd_edid(0)[..30]), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
}

#[test]
fn set_scanout_and_flush() {
    let mem = new_mem();
    let mut g = Gpu::new(GpuConfig { num_scanouts: 2, ..GpuConfig::default() });
    let e = |g: &mut Gpu, req: Vec<u8>| exec(g, &mem, &req);
    ok(&mut g, &mem, &cmd_create(1, 2, 100, 50));
    assert_eq!(e(&mut g, cmd_set_scanout(2, 1, rect(0, 0, 100, 50))), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
    assert_eq!(e(&mut g, cmd_set_scanout(u32::MAX, 0, rect(0, 0, 0, 0))), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
    assert_eq!(e(&mut g, cmd_set_scanout(0, 2, rect(0, 0, 10, 10))), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(e(&mut g, cmd_set_scanout(0, 1, rect(0, 0, 0, 10))), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_set_scanout(0, 1, rect(1, 0, 100, 50))), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_set_scanout(0, 1, rect(u32::MAX, 0, 2, 10))), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(g.drain_events().count(), 0);
    ok(&mut g, &mem, &cmd_set_scanout(0, 1, rect(0, 0, 100, 50)));
    ok(&mut g, &mem, &cmd_set_scanout(1, 1, rect(50, 10, 50, 40)));
    let ev: Vec<_> = g.drain_events().collect();
    assert_eq!(
        ev,
        vec![
            GpuEvent::ScanoutSet { scanout_id: 0, resource_id: 1, rect: Rect::new(0, 0, 100, 50) },
            GpuEvent::ScanoutSet { scanout_id: 1, resource_id: 1, rect: Rect::new(50, 10, 50, 40) },
        ]
    );
    // Flush: within the resource, counted on both scanouts.
    ok(&mut g, &mem, &cmd_flush(1, rect(90, 40, 10, 10)));
    ok(&mut g, &mem, &cmd_flush(1, rect(0, 0, 100, 50)));
    // Reaching outside, or wrapping a u32 (as QEMU: an invalid parameter); empty: nothing.
    for r in [rect(90, 40, 1000, u32::MAX), rect(100, 0, 5, 5), rect(0, 1, 100, 50), rect(u32::MAX, 0, 2, 1)] {
        assert_eq!(e(&mut g, cmd_flush(1, r)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "{r:?}");
    }
    assert_eq!(e(&mut g, cmd_flush(1, rect(0, u32::MAX, 1, 2))), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    ok(&mut g, &mem, &cmd_flush(1, rect(100, 50, 0, 0)));
    assert_eq!(e(&mut g, cmd_flush(7, rect(0, 0, 1, 1))), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    let ev: Vec<_> = g.drain_events().collect();
    assert_eq!(
        ev,
        vec![
            GpuEvent::ResourceFlush { resource_id: 1, rect: Rect::new(90, 40, 10, 10) },
            GpuEvent::ResourceFlush { resource_id: 1, rect: Rect::new(0, 0, 100, 50) },
        ]
    );
    assert_eq!(g.scanout(0).unwrap().flush_count, 2);
    assert_eq!(g.scanout(1).unwrap().flush_count, 2);
    // Disable scanout 1.
    ok(&mut g, &mem, &cmd_set_scanout(1, 0, rect(5, 5, 5, 5)));
    assert_eq!(g.scanout(1).unwrap().resource_id, 0);
    assert_eq!(g.scanout(1).unwrap().rect, Rect::default());
    // Unref while scanned out disables the remaining scanout.
    g.drain_events().for_each(drop);
    ok(&mut g, &mem, &cmd_unref(1));
    let ev: Vec<_> = g.drain_events().collect();
    assert_eq!(
        ev,
        vec![
            GpuEvent::ScanoutSet { scanout_id: 0, resource_id: 0, rect: Rect::default() },
            GpuEvent::ResourceDestroyed { resource_id: 1 },
        ]
    );
    assert_eq!(g.scanout(0).unwrap().resource_id, 0);
    assert_eq!(e(&mut g, cmd_unref(1)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(g.host_memory_used(), 0);
}

#[test]
fn cursor_update_move_hide() {
    let mem = new_mem();
    let mut g = Gpu::new(GpuConfig { num_scanouts: 2, ..GpuConfig::default() });
    // A 2x2 B8G8R8A8 cursor: bytes B, G, R, A.
    ok(&mut g, &mem, &cmd_create(5, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 2, 2));
    let px: Vec<u8> = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    mem.write_slice(&px, GuestAddress(DATA_START)).unwrap();
    ok(&mut g, &mem, &cmd_attach(5, &[(DATA_START, 16)]));
    ok(&mut g, &mem, &cmd_transfer(5, rect(0, 0, 2, 2), 0));
    let t = exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 1, 5, -3, 40, (1, 9)));
    assert_eq!(t, VIRTIO_GPU_RESP_OK_NODATA);
    let image = CursorImage {
        width: 2,
        height: 2,
        hot_x: 1,
        hot_y: 1,
        rgba: vec![3, 2, 1, 4, 7, 6, 5, 8, 11, 10, 9, 12, 15, 14, 13, 16],
    };
    let ev: Vec<_> = g.drain_events().collect();
    assert_eq!(ev, vec![GpuEvent::CursorUpdate { scanout_id: 1, image: Some(image.clone()), x: -3, y: 40 }]);
    assert_eq!(g.scanout(1).unwrap().cursor, Some(image.clone()));
    exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 1, 0, 10, 11, (0, 0)));
    assert_eq!(g.drain_events().collect::<Vec<_>>(), vec![GpuEvent::CursorMove { scanout_id: 1, x: 10, y: 11 }]);
    assert_eq!(g.scanout(1).unwrap().cursor_pos, (10, 11));
    // Hide.
    exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 1, 0, 1, 2, (0, 0)));
    assert_eq!(
        g.drain_events().collect::<Vec<_>>(),
        vec![GpuEvent::CursorUpdate { scanout_id: 1, image: None, x: 1, y: 2 }]
    );
    assert_eq!(g.scanout(1).unwrap().cursor, None);
    // Errors change nothing and emit nothing.
    ok(&mut g, &mem, &cmd_create(6, 1, 65, 64));
    let errs = [
        (cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 6, 0, 0, (0, 0)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER),
        (cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 7, 0, 0, (0, 0)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID),
        (cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 2, 5, 0, 0, (0, 0)), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID),
        (cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, u32::MAX, 0, 0, 0, (0, 0)), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID),
        (
            cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 0, 0, 0, (0, 0))[..50].to_vec(),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER,
        ),
        (cmd_display_info(), VIRTIO_GPU_RESP_ERR_UNSPEC),
        (cmd_create(9, 1, 1, 1), VIRTIO_GPU_RESP_ERR_UNSPEC),
    ];
    for (req, want) in errs {
        assert_eq!(exec_cursor(&mut g, &mem, &req), want);
    }
    assert!(g.resource(9).is_none());
    // Cursor commands on the control queue are rejected.
    assert_eq!(
        exec(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 5, 0, 0, (0, 0))),
        VIRTIO_GPU_RESP_ERR_UNSPEC
    );
    assert_eq!(g.drain_events().count(), 0);
    // A 64x64 cursor is fine.
    ok(&mut g, &mem, &cmd_create(8, 1, 64, 64));
    exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 8, 0, 0, (63, 63)));
    let ev: Vec<_> = g.drain_events().collect();
    let GpuEvent::CursorUpdate { image: Some(img), .. } = &ev[0] else { panic!("{ev:?}") };
    assert_eq!((img.width, img.height, img.hot_x, img.hot_y, img.rgba.len()), (64, 64, 63, 63, 64 * 64 * 4));
    // The cursor image is a copy: unref of the resource does not touch it.
    ok(&mut g, &mem, &cmd_unref(8));
    assert!(g.scanout(0).unwrap().cursor.is_some());
}

#[test]
fn cursor_events_coalesce() {
    let mem = new_mem();
    let mut g = Gpu::new(GpuConfig { num_scanouts: 2, ..GpuConfig::default() });
    ok(&mut g, &mem, &cmd_create(1, 1, 4, 4));
    g.drain_events().for_each(drop);
    for i in 0..1000 {
        exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, i % 2, 1, 0, 0, (0, 0)));
        exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, i % 2, 0, i as i32, 1, (0, 0)));
    }
    let ev: Vec<_> = g.drain_events().collect();
    assert_eq!(ev.len(), 2, "{ev:?}");
    for e in &ev {
        match e {
            GpuEvent::CursorUpdate { scanout_id, image: Some(_), x, y: 1 } => {
                assert_eq!(*x, 998 + *scanout_id as i32)
            }
            other => panic!("{other:?}"),
        }
    }
    // A non-cursor event ends coalescing.
    exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 0, 1, 1, (0, 0)));
    ok(&mut g, &mem, &cmd_set_scanout(0, 1, rect(0, 0, 4, 4)));
    exec_cursor(&mut g, &mem, &cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 0, 2, 2, (0, 0)));
    assert_eq!(g.drain_events().count(), 3);
}
