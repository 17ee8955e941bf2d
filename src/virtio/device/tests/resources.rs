//! Tests of resources, backing and transfers.

#[allow(clippy::wildcard_imports)]
use super::*;

#[test]
fn rect_helpers() {
    let a = Rect::new(0, 0, 10, 10);
    let b = Rect::new(5, 5, 10, 10);
    assert_eq!(a.intersect(&b), Some(Rect::new(5, 5, 5, 5)));
    assert_eq!(a.union(&b), Some(Rect::new(0, 0, 15, 15)));
    assert_eq!(a.intersect(&Rect::new(10, 0, 5, 5)), None);
    assert!(a.contains(&Rect::new(2, 2, 8, 8)));
    assert!(!a.contains(&b));
    assert!(Rect::new(3, 3, 0, 5).is_empty());
    assert_eq!(a.union(&Rect::default()), Some(a));
    assert_eq!(Rect::default().union(&b), Some(b));
    let huge = Rect::new(u32::MAX, u32::MAX, u32::MAX, u32::MAX);
    assert_eq!(huge.checked_right(), None);
    assert_eq!(huge.checked_bottom(), None);
    assert!(!huge.fits_in(u32::MAX, u32::MAX));
    assert_eq!(huge.clip(100, 100), None);
    assert_eq!(Rect::new(0, 0, 1, 1).union(&huge), None);
    assert_eq!(Rect::new(90, 90, u32::MAX, 20).clip(100, 100), Some(Rect::new(90, 90, 10, 10)));
    assert!(Rect::new(0, 0, 100, 100).fits_in(100, 100));
    assert!(!Rect::new(1, 0, 100, 100).fits_in(100, 100));
    let g: GpuRect = b.into();
    assert_eq!(Rect::from(g), b);
}

// ------------------------------------------------------ simple commands

#[test]
fn create_2d_all_formats_and_errors() {
    let mem = new_mem();
    let mut g = gpu();
    for (i, f) in Format::ALL.iter().enumerate() {
        ok(&mut g, &mem, &cmd_create(i as u32 + 1, f.to_virtio(), 3, 2));
        let r = g.resource(i as u32 + 1).unwrap();
        assert_eq!((r.width, r.height, r.format, r.stride()), (3, 2, *f, 12));
        assert_eq!(r.data, vec![0; 24]);
        assert!(r.backing.is_none());
    }
    assert_eq!(g.host_memory_used(), 8 * (24 + RESOURCE_OVERHEAD_BYTES));
    let e = |g: &mut Gpu, req: Vec<u8>| exec(g, &mem, &req);
    assert_eq!(e(&mut g, cmd_create(0, 1, 4, 4)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(e(&mut g, cmd_create(1, 1, 4, 4)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(e(&mut g, cmd_create(20, 5, 4, 4)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_create(20, 0, 4, 4)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_create(20, 1, 0, 4)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_create(20, 1, 4, 0)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_create(20, 1, 16385, 1)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_create(20, 1, u32::MAX, u32::MAX)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    // 16384x16384x4 = 1 GiB > 512 MiB default.
    assert_eq!(e(&mut g, cmd_create(20, 1, 16384, 16384)), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
    assert_eq!(e(&mut g, cmd_create(20, 1, 4, 4)[..39].to_vec()), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert!(g.resource(20).is_none());
    assert_eq!(g.resources().count(), 8);
    assert_eq!(g.host_memory_used(), 8 * (24 + RESOURCE_OVERHEAD_BYTES));
}

#[test]
fn host_memory_limit() {
    let mem = new_mem();
    let mut g =
        Gpu::new(GpuConfig { max_host_memory: 2 * (64 * 64 * 4 + RESOURCE_OVERHEAD_BYTES), ..GpuConfig::default() });
    ok(&mut g, &mem, &cmd_create(1, 1, 64, 64));
    ok(&mut g, &mem, &cmd_create(2, 1, 64, 64));
    assert_eq!(exec(&mut g, &mem, &cmd_create(3, 1, 1, 1)), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
    // Backing bookkeeping is charged too.
    assert_eq!(exec(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 4096)])), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
    assert!(g.resource(1).unwrap().backing.is_none());
    ok(&mut g, &mem, &cmd_unref(2));
    ok(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 4096)]));
    assert_eq!(g.host_memory_used(), 64 * 64 * 4 + RESOURCE_OVERHEAD_BYTES + BACKING_ENTRY_BYTES);
    ok(&mut g, &mem, &cmd_detach(1));
    ok(&mut g, &mem, &cmd_unref(1));
    assert_eq!(g.host_memory_used(), 0);
}

#[test]
fn attach_backing_validation() {
    let mem = new_mem();
    let mut g = gpu();
    ok(&mut g, &mem, &cmd_create(1, 2, 8, 8));
    let e = |g: &mut Gpu, req: Vec<u8>| exec(g, &mem, &req);
    assert_eq!(e(&mut g, cmd_attach(2, &[(DATA_START, 256)])), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(e(&mut g, cmd_attach(1, &[])), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, attach_header(1, 16385)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, attach_header(1, u32::MAX)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    // nr_entries larger than the entries present.
    let mut short = attach_header(1, 3);
    short.extend(mem_entries(&[(DATA_START, 16), (DATA_START + 64, 16)]));
    assert_eq!(e(&mut g, short), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, attach_header(1, 16384)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    // Outside guest memory, straddling its end, overflowing.
    assert_eq!(e(&mut g, cmd_attach(1, &[(MEM_SIZE, 16)])), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_attach(1, &[(MEM_SIZE - 8, 16)])), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(
        e(&mut g, cmd_attach(1, &[(DATA_START, 16), (u64::MAX - 4, 16)])),
        VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
    );
    assert!(g.resource(1).unwrap().backing.is_none());
    assert_eq!(g.host_memory_used(), 256 + RESOURCE_OVERHEAD_BYTES);
    // Valid: zero-length entries are dropped, contiguous ones merged.
    ok(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 100), (DATA_START + 100, 28), (0, 0), (DATA_START + 4096, 128)]));
    let b = g.resource(1).unwrap().backing.clone().unwrap();
    assert_eq!(b.len(), 256);
    assert_eq!(
        b.entries(),
        &[
            BackingEntry { addr: DATA_START, len: 128, offset: 0 },
            BackingEntry { addr: DATA_START + 4096, len: 128, offset: 128 },
        ]
    );
    assert_eq!(e(&mut g, cmd_attach(1, &[(DATA_START, 256)])), VIRTIO_GPU_RESP_ERR_UNSPEC);
    ok(&mut g, &mem, &cmd_detach(1));
    assert_eq!(e(&mut g, cmd_detach(1)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_eq!(e(&mut g, cmd_detach(9)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    ok(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 256)]));
    // The maximum entry count is accepted.
    ok(&mut g, &mem, &cmd_create(2, 2, 8, 8));
    let many: Vec<(u64, u32)> = (0..16384u64).map(|i| (DATA_START + i * 8, 4)).collect();
    ok(&mut g, &mem, &cmd_attach(2, &many));
    assert_eq!(g.resource(2).unwrap().backing.as_ref().unwrap().entries().len(), 16384);
    assert_eq!(g.resource(2).unwrap().backing.as_ref().unwrap().len(), 65536);
}

#[test]
fn transfer_full_and_partial() {
    let mem = new_mem();
    let mut g = gpu();
    let (w, h) = (16u32, 8u32);
    let stride = w * 4;
    ok(&mut g, &mem, &cmd_create(1, 1, w, h));
    let backing = pattern((stride * h) as usize, 7);
    // Scatter the backing over 3 non-contiguous entries; the splits fall mid-row.
    let parts = [(0usize, 100usize), (100, 37), (137, backing.len() - 137)];
    let mut entries = Vec::new();
    for (i, (off, len)) in parts.iter().enumerate() {
        let addr = DATA_START + 0x1000 * i as u64 + 3;
        mem.write_slice(&backing[*off..off + len], GuestAddress(addr)).unwrap();
        entries.push((addr, *len as u32));
    }
    ok(&mut g, &mem, &cmd_attach(1, &entries));
    // Partial transfer with the Linux-style offset.
    let r = Rect::new(3, 2, 5, 4);
    let offset = u64::from(r.y * stride + r.x * 4);
    ok(&mut g, &mem, &cmd_transfer(1, r.into(), offset));
    let mut expect = vec![0u8; backing.len()];
    reference_transfer(&mut expect, w, &backing, r, offset).unwrap();
    assert_eq!(g.resource(1).unwrap().data, expect);
    // Non-standard offset: rows still come from offset + stride * row.
    let r2 = Rect::new(10, 1, 6, 3);
    ok(&mut g, &mem, &cmd_transfer(1, r2.into(), 5));
    reference_transfer(&mut expect, w, &backing, r2, 5).unwrap();
    assert_eq!(g.resource(1).unwrap().data, expect);
    // Full rows at an offset (contiguous fast path).
    let r3 = Rect::new(0, 5, w, 3);
    ok(&mut g, &mem, &cmd_transfer(1, r3.into(), 9));
    reference_transfer(&mut expect, w, &backing, r3, 9).unwrap();
    assert_eq!(g.resource(1).unwrap().data, expect);
    // Whole resource.
    ok(&mut g, &mem, &cmd_transfer(1, rect(0, 0, w, h), 0));
    assert_eq!(g.resource(1).unwrap().data, backing);
    // Empty rect is a no-op.
    ok(&mut g, &mem, &cmd_transfer(1, rect(4, 4, 0, 3), 0));
    ok(&mut g, &mem, &cmd_transfer(1, rect(w, h, 0, 0), u64::MAX));
}

#[test]
fn transfer_errors() {
    let mem = new_mem();
    let mut g = gpu();
    let e = |g: &mut Gpu, req: Vec<u8>| exec(g, &mem, &req);
    ok(&mut g, &mem, &cmd_create(1, 1, 16, 8));
    assert_eq!(e(&mut g, cmd_transfer(1, rect(0, 0, 16, 8), 0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_eq!(e(&mut g, cmd_transfer(2, rect(0, 0, 1, 1), 0)), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
    mem.write_slice(&[0xab; 512], GuestAddress(DATA_START)).unwrap();
    // 511 bytes: one short of the full resource.
    ok(&mut g, &mem, &cmd_attach(1, &[(DATA_START, 511)]));
    let bad_rects = [
        rect(u32::MAX, 0, 2, 1),
        rect(0, u32::MAX, 1, 2),
        rect(0, 0, u32::MAX, 1),
        rect(0, 0, 1, u32::MAX),
        rect(15, 0, 2, 1),
        rect(0, 7, 1, 2),
        rect(17, 0, 0, 0),
        rect(u32::MAX, u32::MAX, u32::MAX, u32::MAX),
    ];
    for r in bad_rects {
        assert_eq!(e(&mut g, cmd_transfer(1, r, 0)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "{r:?}");
    }
    assert_eq!(e(&mut g, cmd_transfer(1, rect(0, 0, 16, 8), 0)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_transfer(1, rect(0, 0, 1, 1), u64::MAX)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_transfer(1, rect(0, 0, 1, 1), 508)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_eq!(e(&mut g, cmd_transfer(1, rect(0, 0, 1, 1), 0)[..55].to_vec()), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    // Nothing was copied by the failed transfers.
    assert!(g.resource(1).unwrap().data.iter().all(|b| *b == 0));
    // The last 3 bytes fit though.
    ok(&mut g, &mem, &cmd_transfer(1, rect(0, 0, 1, 1), 507));
    assert_eq!(g.resource(1).unwrap().data[..4], [0xab; 4]);
}
