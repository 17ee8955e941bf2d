//! Property tests: random command sequences and chains against the device's invariants.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) const PROP_MAX_MEM: u64 = 64 << 10;

#[derive(Clone, Debug)]
pub(super) enum Op {
    DisplayInfo,
    Edid(u32),
    Create { id: u32, format: u32, w: u32, h: u32 },
    Unref(u32),
    Attach { id: u32, entries: Vec<(u64, u32)>, nr: Option<u32> },
    Detach(u32),
    Transfer { id: u32, r: Rect, offset: u64 },
    SetScanout { sid: u32, id: u32, r: Rect },
    Flush { id: u32, r: Rect },
    Cursor { sid: u32, id: u32, x: i32, y: i32, hot: (u32, u32), is_move: bool },
    Raw { ty: u32, body: Vec<u8> },
    Truncated(Box<Op>, usize),
    Reset,
}

impl Op {
    pub(super) fn queue(&self) -> QueueKind {
        match self {
            Op::Cursor { .. } => QueueKind::Cursor,
            Op::Truncated(op, _) => op.queue(),
            _ => QueueKind::Control,
        }
    }

    pub(super) fn request(&self) -> Vec<u8> {
        match self {
            Op::DisplayInfo | Op::Reset => cmd_display_info(),
            Op::Edid(s) => cmd_edid(*s),
            Op::Create { id, format, w, h } => cmd_create(*id, *format, *w, *h),
            Op::Unref(id) => cmd_unref(*id),
            Op::Attach { id, entries, nr } => {
                let mut v = attach_header(*id, nr.unwrap_or(entries.len() as u32));
                v.extend(mem_entries(entries));
                v
            }
            Op::Detach(id) => cmd_detach(*id),
            Op::Transfer { id, r, offset } => cmd_transfer(*id, (*r).into(), *offset),
            Op::SetScanout { sid, id, r } => cmd_set_scanout(*sid, *id, (*r).into()),
            Op::Flush { id, r } => cmd_flush(*id, (*r).into()),
            Op::Cursor { sid, id, x, y, hot, is_move } => {
                let ty = if *is_move { VIRTIO_GPU_CMD_MOVE_CURSOR } else { VIRTIO_GPU_CMD_UPDATE_CURSOR };
                cmd_cursor(ty, *sid, *id, *x, *y, *hot)
            }
            Op::Raw { ty, body } => {
                let mut v = bytes(&hdr(*ty));
                v.extend(body);
                v
            }
            Op::Truncated(op, cut) => {
                let mut v = op.request();
                v.truncate(*cut);
                v
            }
        }
    }
}

pub(super) fn id() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0..5u32, 1 => Just(u32::MAX)]
}

fn dim() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0..40u32, 1 => Just(64u32), 1 => Just(16385u32), 1 => Just(u32::MAX)]
}

fn coord() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0..48u32, 1 => Just(u32::MAX), 1 => Just(u32::MAX - 1), 1 => Just(1u32 << 31)]
}

fn any_rect() -> impl Strategy<Value = Rect> {
    (coord(), coord(), coord(), coord()).prop_map(|(x, y, w, h)| Rect::new(x, y, w, h))
}

pub(super) fn entry() -> impl Strategy<Value = (u64, u32)> {
    let addr = prop_oneof![
        8 => DATA_START..DATA_START + 0x4000,
        1 => Just(MEM_SIZE - 8),
        1 => Just(MEM_SIZE),
        1 => Just(u64::MAX - 4),
    ];
    let len = prop_oneof![8 => 0..8192u32, 1 => Just(u32::MAX)];
    (addr, len)
}

pub(super) fn leaf_op() -> impl Strategy<Value = Op> {
    let format = prop_oneof![
        8 => proptest::sample::select(vec![1u32, 2, 3, 4, 67, 68, 121, 134]),
        1 => any::<u32>(),
    ];
    prop_oneof![
        1 => Just(Op::DisplayInfo),
        1 => (0..4u32).prop_map(Op::Edid),
        6 => (id(), format, dim(), dim()).prop_map(|(id, format, w, h)| Op::Create { id, format, w, h }),
        2 => id().prop_map(Op::Unref),
        4 => (id(), proptest::collection::vec(entry(), 0..4), proptest::option::weighted(0.2, prop_oneof![Just(0u32), Just(16385), Just(u32::MAX), 0..6u32]))
            .prop_map(|(id, entries, nr)| Op::Attach { id, entries, nr }),
        2 => id().prop_map(Op::Detach),
        6 => (id(), any_rect(), prop_oneof![8 => 0..8192u64, 1 => Just(u64::MAX)])
            .prop_map(|(id, r, offset)| Op::Transfer { id, r, offset }),
        4 => (0..4u32, id(), any_rect()).prop_map(|(sid, id, r)| Op::SetScanout { sid, id, r }),
        3 => (id(), any_rect()).prop_map(|(id, r)| Op::Flush { id, r }),
        3 => (0..4u32, id(), any::<i32>(), any::<i32>(), (0..80u32, 0..80u32), any::<bool>())
            .prop_map(|(sid, id, x, y, hot, is_move)| Op::Cursor { sid, id, x, y, hot, is_move }),
        1 => (prop_oneof![0x100..0x10eu32, 0x200..0x20au32, 0x300..0x302u32, any::<u32>()], proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(ty, body)| Op::Raw { ty, body }),
        1 => Just(Op::Reset),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => leaf_op(),
        1 => (leaf_op(), 0..64usize).prop_map(|(op, cut)| Op::Truncated(Box::new(op), cut)),
    ]
}

pub(super) fn prop_gpu() -> Gpu {
    Gpu::new(GpuConfig {
        num_scanouts: 3,
        preferred_size: (640, 480),
        max_host_memory: PROP_MAX_MEM,
        name: "prop".into(),
    })
}

pub(super) fn fill_guest_memory(mem: &Mem) {
    mem.write_slice(&pattern(0x6000, 3), GuestAddress(DATA_START)).unwrap();
}

pub(super) const RESPONSE_TYPES: [u32; 8] = [
    VIRTIO_GPU_RESP_OK_NODATA,
    VIRTIO_GPU_RESP_OK_DISPLAY_INFO,
    VIRTIO_GPU_RESP_OK_EDID,
    VIRTIO_GPU_RESP_ERR_UNSPEC,
    VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY,
    VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID,
    VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID,
    VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER,
];

fn check_invariants(g: &mut Gpu, check_events: bool) -> Result<(), TestCaseError> {
    let sum: u64 = g.resources().map(|(_, r)| r.host_memory()).sum();
    prop_assert_eq!(g.host_memory_used(), sum);
    prop_assert!(g.host_memory_used() <= PROP_MAX_MEM);
    for (id, r) in g.resources() {
        prop_assert!(id != 0);
        prop_assert_eq!(r.data.len() as u64, u64::from(r.width) * u64::from(r.height) * 4);
        if let Some(b) = &r.backing {
            let mut off = 0;
            for e in b.entries() {
                prop_assert_eq!(e.offset, off);
                prop_assert!(e.len > 0);
                off += e.len;
            }
            prop_assert_eq!(off, b.len());
        }
    }
    for i in 0..g.num_scanouts() {
        let s = g.scanout(i).unwrap();
        if s.resource_id == 0 {
            prop_assert_eq!(s.rect, Rect::default());
        } else {
            let r = g.resource(s.resource_id);
            prop_assert!(r.is_some(), "scanout {} shows missing resource {}", i, s.resource_id);
            let r = r.unwrap();
            prop_assert!(!s.rect.is_empty() && s.rect.fits_in(r.width, r.height));
        }
        if let Some(c) = &s.cursor {
            prop_assert!(c.hot_x < c.width && c.hot_y < c.height && c.width <= 64 && c.height <= 64);
            prop_assert_eq!(c.rgba.len() as u64, u64::from(c.width) * u64::from(c.height) * 4);
        }
    }
    let events: Vec<GpuEvent> = g.drain_events().collect();
    if !check_events {
        return Ok(());
    }
    for e in events {
        match e {
            GpuEvent::ResourceFlush { resource_id, rect } => {
                let r = g.resource(resource_id);
                prop_assert!(r.is_some());
                let r = r.unwrap();
                prop_assert!(!rect.is_empty() && rect.fits_in(r.width, r.height));
            }
            GpuEvent::ScanoutSet { scanout_id, resource_id, rect } => {
                prop_assert!(scanout_id < g.num_scanouts());
                prop_assert_eq!(resource_id == 0, rect.is_empty());
            }
            GpuEvent::CursorUpdate { scanout_id, image, .. } => {
                prop_assert!(scanout_id < g.num_scanouts());
                if let Some(c) = image {
                    prop_assert_eq!(c.rgba.len() as u64, u64::from(c.width) * u64::from(c.height) * 4);
                }
            }
            GpuEvent::CursorMove { scanout_id, .. } => {
                prop_assert!(scanout_id < g.num_scanouts())
            }
            GpuEvent::ResourceDestroyed { resource_id } => {
                prop_assert!(g.resource(resource_id).is_none())
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_random_commands(ops in proptest::collection::vec(op(), 1..60)) {
        let mem = new_mem();
        fill_guest_memory(&mem);
        let mut g = prop_gpu();
        for op in &ops {
            if let Op::Reset = op {
                g.reset();
                prop_assert_eq!(g.host_memory_used(), 0);
                check_invariants(&mut g, true)?;
                continue;
            }
            let req = op.request();
            let resp = g.handle_request(op.queue(), &req, &mem);
            prop_assert!(resp.len() >= 24);
            let ty = resp_type(&resp);
            prop_assert!(RESPONSE_TYPES.contains(&ty), "bad response {:#x}", ty);
            let want_len = match ty {
                VIRTIO_GPU_RESP_OK_DISPLAY_INFO => size_of::<RespDisplayInfo>(),
                VIRTIO_GPU_RESP_OK_EDID => size_of::<RespEdid>(),
                _ => 24,
            };
            prop_assert_eq!(resp.len(), want_len);
            check_invariants(&mut g, true)?;
        }
    }

    /// TRANSFER_TO_HOST_2D matches QEMU's formula on a scattered backing.
    #[test]
    fn prop_transfer_matches_reference(
        w in 1..24u32, h in 1..12u32,
        x in 0..26u32, y in 0..14u32, rw in 0..26u32, rh in 0..14u32,
        offset in 0..3000u64,
        cuts in proptest::collection::vec(1..200usize, 0..6),
        extra in 0..64usize,
    ) {
        let mem = new_mem();
        let mut g = gpu();
        ok(&mut g, &mem, &cmd_create(1, 67, w, h));
        let backing = pattern((w * h * 4) as usize + extra, 5);
        // Cut the backing into pieces placed at scattered addresses.
        let mut entries = Vec::new();
        let mut pos = 0usize;
        let mut addr = DATA_START;
        for c in cuts.iter().chain(std::iter::once(&usize::MAX)) {
            let end = pos.saturating_add(*c).min(backing.len());
            if end > pos {
                mem.write_slice(&backing[pos..end], GuestAddress(addr)).unwrap();
                entries.push((addr, (end - pos) as u32));
                addr += (end - pos) as u64 + 13;
            }
            pos = end;
        }
        ok(&mut g, &mem, &cmd_attach(1, &entries));
        let r = Rect::new(x, y, rw, rh);
        let t = exec(&mut g, &mem, &cmd_transfer(1, r.into(), offset));
        let mut expect = vec![0u8; (w * h * 4) as usize];
        if !r.fits_in(w, h) {
            prop_assert_eq!(t, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        } else if reference_transfer(&mut expect, w, &backing, r, offset).is_some() {
            prop_assert_eq!(t, VIRTIO_GPU_RESP_OK_NODATA);
        } else {
            prop_assert_eq!(t, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
            expect = vec![0u8; (w * h * 4) as usize];
        }
        prop_assert_eq!(&g.resource(1).unwrap().data, &expect);
    }

    /// Random chains through a real queue: every chain is used exactly once.
    #[test]
    fn prop_queue_chains(chains in proptest::collection::vec(
        (op(), 0..4usize, proptest::collection::vec(
            prop_oneof![
                4 => proptest::sample::select(vec![0u32, 8, 24, 408, 1056, 2000]).prop_map(Desc::Write),
                1 => Just(Desc::Raw { addr: MEM_SIZE - 4, len: 24, write: true }),
            ], 0..3),
         any::<u8>()),
        1..40)) {
        let mem = new_mem();
        fill_guest_memory(&mem);
        let mut d = Driver::new(&mem);
        d.next_addr = DATA_START + 0x10000;
        let mut g = prop_gpu();
        let mut cursor_chains = 0u16;
        let mut ctrl: Vec<Vec<Desc>> = Vec::new();
        let mut writable_sizes = Vec::new();
        for (op, split, writes, garbage) in &chains {
            let req = op.request();
            let mut descs = Vec::new();
            match garbage % 8 {
                0 => descs.push(Desc::Raw { addr: MEM_SIZE + u64::from(*garbage), len: 64, write: false }),
                1 => {}
                _ => {
                    let at = (*split * 13).min(req.len());
                    if at > 0 { descs.push(Desc::Read(req[..at].to_vec())); }
                    descs.push(Desc::Read(req[at..].to_vec()));
                }
            }
            descs.extend(writes.iter().cloned());
            if descs.is_empty() {
                descs.push(Desc::Write(24));
            }
            if op.queue() == QueueKind::Cursor {
                cursor_chains += 1;
            }
            writable_sizes.push(descs.iter().map(|d| match d {
                Desc::Write(n) => u64::from(*n),
                Desc::Raw { len, write: true, .. } => u64::from(*len),
                _ => 0,
            }).sum::<u64>());
            ctrl.push(descs);
        }
        for descs in &ctrl {
            d.add(descs);
        }
        // Everything goes through the control queue (cursor commands get ERR_UNSPEC there).
        let added = g.process_ctrl_queue(&mut d.queue, &mem);
        prop_assert!(added);
        let used = d.used();
        prop_assert_eq!(used.len(), chains.len());
        prop_assert_eq!(used.len() as u16, d.chains);
        let _ = cursor_chains;
        for (i, (_, len)) in used.iter().enumerate() {
            prop_assert!(u64::from(*len) <= writable_sizes[i]);
            prop_assert!([0u32, 24, 408, 1056].contains(len), "used len {}", len);
        }
        prop_assert!(!g.process_ctrl_queue(&mut d.queue, &mem));
        // Events of many chains at once may refer to ids reused later.
        check_invariants(&mut g, false)?;
    }
}
