//! Tests of queue processing with descriptor chains built in guest memory.

#[allow(clippy::wildcard_imports)]
use super::*;
use vm_memory::Address;

#[test]
fn queue_pipeline() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mem = new_mem();
    let mut d = Driver::new(&mem);
    let mut g = gpu();
    let (w, h) = (64u32, 48u32);
    let frame = pattern((w * h * 4) as usize, 1);
    let fb = d.alloc(frame.len() as u64 + 8192);
    // Two entries, discontiguous, the second not page aligned.
    let split = 5000usize;
    mem.write_slice(&frame[..split], GuestAddress(fb)).unwrap();
    mem.write_slice(&frame[split..], GuestAddress(fb + split as u64 + 4096 + 12)).unwrap();
    let entries = [(fb, split as u32), (fb + split as u64 + 4096 + 12, (frame.len() - split) as u32)];

    let r0 = d.request(&cmd_create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, h), 24);
    // Entries in a separate readable descriptor, as Linux does.
    let r1 = d.add(&[Desc::Read(attach_header(1, 2)), Desc::Read(mem_entries(&entries)), Desc::Write(24)])[0];
    let r2 = d.request(&cmd_transfer(1, rect(0, 0, w, h), 0), 24);
    let r3 = d.request(&cmd_set_scanout(0, 1, rect(0, 0, w, h)), 24);
    let r4 = d.request(&cmd_flush(1, rect(1, 2, 3, 4)), 24);
    // Response split across two writable descriptors.
    let r5 = d.add(&[Desc::Read(cmd_display_info()), Desc::Write(100), Desc::Write(400)]);

    assert!(g.process_ctrl_queue(&mut d.queue, &mem));
    assert!(!g.process_ctrl_queue(&mut d.queue, &mem), "nothing left");
    let used = d.used();
    assert_eq!(used.len(), 6);
    assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), vec![24, 24, 24, 24, 24, 408]);
    for (addr, _) in [r0, r1, r2, r3, r4] {
        assert_eq!(resp_type(&d.read(addr, 24)), VIRTIO_GPU_RESP_OK_NODATA);
    }
    let mut info = d.read(r5[0].0, 100);
    info.extend(d.read(r5[1].0, 308));
    let info: RespDisplayInfo = read_struct(&info).unwrap();
    assert_eq!(info.hdr.type_.to_native(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
    assert_eq!(Rect::from(info.pmodes[0].r), Rect::new(0, 0, 1280, 800));
    // Bytes past the response are untouched.
    assert_eq!(d.read(r5[1].0 + 308, 92), vec![0xee; 92]);

    let res = g.resource(1).unwrap();
    assert!(res.data == frame, "resource content differs from the guest frame");
    assert_eq!(res.format.drm_fourcc(), crate::virtio::format::DRM_FORMAT_XRGB8888);
    let rgba = res.read_rgba8(Rect::new(0, 0, 1, 1)).unwrap();
    assert_eq!(rgba, vec![frame[2], frame[1], frame[0], 255]);
    assert_eq!(
        g.drain_events().collect::<Vec<_>>(),
        vec![
            GpuEvent::ScanoutSet { scanout_id: 0, resource_id: 1, rect: Rect::new(0, 0, w, h) },
            GpuEvent::ResourceFlush { resource_id: 1, rect: Rect::new(1, 2, 3, 4) },
        ]
    );
    assert_eq!(g.scanout(0).unwrap().flush_count, 1);
}

#[test]
fn queue_malformed_chains() {
    let mem = new_mem();
    let mut d = Driver::new(&mem);
    let mut g = gpu();
    // 0: no writable descriptor.
    d.add(&[Desc::Read(cmd_create(1, 1, 4, 4))]);
    // 1: writable part too small for DISPLAY_INFO.
    let small = d.add(&[Desc::Read(cmd_display_info()), Desc::Write(24)]);
    // 2: write-only chain (no request at all).
    let wo = d.add(&[Desc::Write(24)]);
    // 3: readable descriptor outside guest memory.
    let oob = d.add(&[Desc::Raw { addr: MEM_SIZE + 4096, len: 64, write: false }, Desc::Write(24)]);
    // 4: readable descriptor with an overflowing range.
    let ovf = d.add(&[Desc::Raw { addr: u64::MAX - 8, len: 64, write: false }, Desc::Write(24)]);
    // 5: writable descriptor outside memory.
    d.add(&[Desc::Read(cmd_create(2, 1, 4, 4)), Desc::Raw { addr: MEM_SIZE, len: 24, write: true }]);
    // 6: request split over many tiny descriptors.
    let req = cmd_create(3, 1, 4, 4);
    let mut descs: Vec<Desc> = req.chunks(3).map(|c| Desc::Read(c.to_vec())).collect();
    descs.push(Desc::Write(24));
    let split = d.add(&descs);
    // 7: huge nr_entries in a chain that carries few entries.
    let mut huge = attach_header(3, 0x7fff_ffff);
    huge.extend(mem_entries(&[(DATA_START, 64)]));
    let huge_resp = d.request(&huge, 24);
    // 8: zero-length descriptors.
    let zero = d.add(&[Desc::Read(Vec::new()), Desc::Write(0), Desc::Write(24)]);
    // 9: writable descriptor before the readable one (tolerated).
    let rev = d.add(&[Desc::Write(24), Desc::Read(cmd_unref(3))]);

    assert!(g.process_ctrl_queue(&mut d.queue, &mem));
    let used = d.used();
    let lens: Vec<u32> = used.iter().map(|u| u.1).collect();
    assert_eq!(lens, vec![0, 0, 24, 24, 24, 0, 24, 24, 24, 24]);
    // The chain without a response buffer was still executed.
    assert!(g.resource(1).is_some());
    assert_eq!(d.read(small[0].0, 24), vec![0xee; 24]);
    assert_eq!(resp_type(&d.read(wo[0].0, 24)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_eq!(resp_type(&d.read(oob[0].0, 24)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_eq!(resp_type(&d.read(ovf[0].0, 24)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert!(g.resource(2).is_some(), "executed even though the response could not be written");
    assert_eq!(resp_type(&d.read(split[0].0, 24)), VIRTIO_GPU_RESP_OK_NODATA);
    assert!(g.resource(3).is_none(), "unref'd by chain 9");
    assert_eq!(resp_type(&d.read(huge_resp.0, 24)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(resp_type(&d.read(zero[1].0, 24)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_eq!(resp_type(&d.read(rev[0].0, 24)), VIRTIO_GPU_RESP_OK_NODATA);
}

#[test]
fn queue_bad_head_index_and_cursor_queue() {
    let mem = new_mem();
    let mut d = Driver::new(&mem);
    let mut g = gpu();
    ok(&mut g, &mem, &cmd_create(1, 1, 4, 4));
    // Cursor queue: no response buffer, as the Linux driver does.
    d.add(&[Desc::Read(cmd_cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 1, 1, 1, (0, 0)))]);
    let resp = d.add(&[Desc::Read(cmd_cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 0, 2, 3, (0, 0))), Desc::Write(24)]);
    assert!(g.process_cursor_queue(&mut d.queue, &mem));
    assert_eq!(d.used().iter().map(|u| u.1).collect::<Vec<_>>(), vec![0, 24]);
    assert_eq!(resp_type(&d.read(resp[0].0, 24)), VIRTIO_GPU_RESP_OK_NODATA);
    assert_eq!(g.drain_events().count(), 1, "update + move coalesced");
    // An avail ring entry pointing past the descriptor table.
    let avail = d.vq.avail_addr();
    let idx: u16 = mem.read_obj(avail.unchecked_add(2)).unwrap();
    mem.write_obj(QUEUE_SIZE + 7, avail.unchecked_add(4 + 2 * u64::from(idx))).unwrap();
    mem.write_obj(idx + 1, avail.unchecked_add(2)).unwrap();
    assert!(!g.process_ctrl_queue(&mut d.queue, &mem));
    assert_eq!(d.used().len(), 2);
}

// ------------------------------------------------------------ proptest
