//! Streams and commands that are accepted: exactly the resource handles change.

use std::cell::RefCell;

use super::*;

/// What Mesa's DRM winsys submits for a clear of a colour buffer: the 1024-dword transfer
/// area (no transfers queued: one END_TRANSFERS over stale bytes), SET_SUB_CTX, then the
/// surface over resource 7, the framebuffer state naming it, and CLEAR.
#[test]
fn clear_of_a_surface() {
    let (surface, resource) = (42, 7);
    // Stale bytes from an earlier submit: they even look like commands with handles.
    let mut stale = cmd(1, 8, &[9, 3, 1, 0, 0]);
    stale.extend(cmd(16, 0, &[5; 21]));
    stale.resize(1023, 0xa5a5_a5a5);
    let mut s = cmd(44, 0, &stale);
    assert_eq!(s.len(), 1024);
    s.extend(cmd(28, 0, &[1])); // SET_SUB_CTX 1
    // CREATE_OBJECT SURFACE: handle, resource, VIRGL_FORMAT_B8G8R8X8_UNORM, level 0, layers 0..0.
    s.extend(cmd(1, 8, &[surface, resource, 2, 0, 0]));
    // SET_FRAMEBUFFER_STATE: 1 colour buffer, no depth surface, colour buffer 0 = the surface.
    s.extend(cmd(5, 0, &[1, 0, surface]));
    // SET_FRAMEBUFFER_STATE_NO_ATTACH: 1280x800, 1 layer, 0 samples.
    s.extend(cmd(38, 0, &[1280 | (800 << 16), 1]));
    // CLEAR: PIPE_CLEAR_COLOR0, colour (0.2, 0.3, 0.4, 1.0), depth 1.0 (a double), stencil 0.
    let depth = 1.0f64.to_bits();
    s.extend(cmd(7, 0, &[4, fui(0.2), fui(0.3), fui(0.4), fui(1.0), depth as u32, (depth >> 32) as u32, 0]));
    let original = s.clone();
    let asked = RefCell::new(Vec::new());
    let stats = rewrite_resource_handles(&mut s, |h| {
        asked.borrow_mut().push(h);
        (h == resource).then_some(1007)
    })
    .unwrap();
    assert_eq!(stats, RewriteStats { commands: 6, handles: 1 });
    let handle_at = 1024 + 2 + 2;
    assert_eq!(changed(&s, &original), vec![handle_at], "only the surface's resource changes");
    assert_eq!(s[handle_at], 1007);
    assert_eq!(asked.into_inner(), vec![resource], "nothing in the stale area is looked at");
}

/// Queued transfers in Mesa's transfer area, then END_TRANSFERS over the rest of the area.
#[test]
fn transfer_area() {
    // TRANSFER3D of resource 3, level 0, usage, stride 0, layer stride 0, box 0,0,0 64x1x1,
    // offset 0, VIRGL_TRANSFER_TO_HOST.
    let mut s = cmd(43, 0, &[3, 0, 2, 0, 0, 0, 0, 0, 64, 1, 1, 0, 1]);
    s.extend(cmd(43, 0, &[4, 0, 2, 0, 0, 0, 0, 0, 64, 1, 1, 256, 2]));
    let padding = 1024 - s.len() - 1;
    s.extend(cmd(44, 0, &vec![0x2b00_0d2b; padding]));
    s.extend(cmd(28, 0, &[1]));
    let original = s.clone();
    let stats = rewrite_resource_handles(&mut s, owned_plus(1000)).unwrap();
    assert_eq!(stats, RewriteStats { commands: 4, handles: 2 });
    assert_eq!(changed(&s, &original), vec![1, 15]);
    assert_eq!((s[1], s[15]), (1003, 1004));
}

#[test]
fn every_handle_carrying_command() {
    for &(opcode, obj, len, handles) in HANDLE_SHAPES {
        // Other dwords hold a value the map refuses, so touching one would fail.
        let stream = cmd(opcode, obj, &with_handles(len, 0xdead_beef, handles, 5));
        let mut s = stream.clone();
        let stats = rewrite_resource_handles(&mut s, owned_plus(1000)).unwrap_or_else(|e| panic!("{stream:?}: {e}"));
        let expected = handles.to_vec();
        assert_eq!(stats, RewriteStats { commands: 1, handles: expected.len() as u32 }, "{stream:?}");
        assert_eq!(changed(&s, &stream), expected, "{stream:?}");
        for (n, &i) in expected.iter().enumerate() {
            assert_eq!(s[i], 1005 + n as u32, "{stream:?}");
        }
        // Zero handles mean "no resource": left alone, and the map is never asked.
        let zeros = cmd(opcode, obj, &with_handles(len, 0xdead_beef, &expected, 0));
        let mut z = zeros.clone();
        let stats = rewrite_resource_handles(&mut z, |h| panic!("asked for {h}")).unwrap();
        assert_eq!(stats, RewriteStats { commands: 1, handles: 0 });
        assert_eq!(z, zeros);
    }
}

/// Hand-encoded commands the way Mesa writes them, with real field values.
#[test]
fn mesa_encoded_commands() {
    let cases: Vec<(&str, Vec<u32>, Vec<usize>)> = vec![
        // Two vertex buffers: stride 16 over resource 10, stride 8 at offset 64 over 11.
        ("vertex buffers", cmd(6, 0, &[16, 0, 10, 8, 64, 11]), vec![3, 6]),
        // Index buffer: resource 12, 2-byte indices, offset 128.
        ("index buffer", cmd(11, 0, &[12, 2, 128]), vec![1]),
        // Sampler view 30 of resource 13: format R8G8B8A8_UNORM (67) with target 2D (2 << 24),
        // layers 0..0, levels 0..9, identity swizzle.
        ("sampler view", cmd(1, 6, &[30, 13, 67 | (2 << 24), 0, 9 << 8, 0o3210]), vec![2]),
        // Query 31: occlusion counter, offset 0 into result buffer 14.
        ("query", cmd(1, 9, &[31, 0, 0, 14]), vec![4]),
        // Uniform buffer: fragment shader, index 1, offset 256, 64 bytes of resource 15.
        ("uniform buffer", cmd(27, 0, &[1, 1, 256, 64, 15]), vec![5]),
        // Blit colour (mask 0xf), linear, from resource 17 (64x64) to resource 16 (32x32).
        (
            "blit",
            cmd(16, 0, &[0xf | (1 << 8), 0, 0, 16, 0, 67, 0, 0, 0, 32, 32, 1, 17, 0, 67, 0, 0, 0, 64, 64, 1]),
            vec![4, 13],
        ),
        // Copy 64x64 from resource 19 level 1 to resource 18 level 0 at (8, 8).
        ("copy region", cmd(17, 0, &[18, 0, 8, 8, 0, 19, 1, 0, 0, 0, 64, 64, 1]), vec![1, 6]),
        // Indirect draw: 12 plain dwords, no tessellation, indirect buffer 20 at 16,
        // stride 20, 3 draws, draw count in resource 21 at 4.
        ("draw indirect", cmd(8, 0, &[0, 0, 4, 0, 1, 0, 0, 0, 0, 0, !0, 0, 3, 0, 20, 16, 20, 3, 4, 21]), vec![15, 20]),
        // Compute: 8x8x1 blocks, indirect grid from resource 22 at offset 0.
        ("launch grid", cmd(37, 0, &[8, 8, 1, 0, 0, 0, 22, 0]), vec![7]),
        // Shader buffers for compute (5), slots 0-1: 1 KiB of resource 23, slot 1 unbound.
        ("shader buffers", cmd(34, 0, &[5, 0, 0, 1024, 23, 0, 0, 0]), vec![5]),
        // Shader image for fragment (1), slot 2: resource 24, VIRGL_FORMAT_R32_UINT (193),
        // PIPE_IMAGE_ACCESS_WRITE (2), layer/offset 0, level/size 0.
        ("shader images", cmd(35, 0, &[1, 2, 193, 2, 0, 0, 24]), vec![7]),
        // Atomic buffers from slot 0: 4 bytes of resource 25.
        ("atomic buffers", cmd(40, 0, &[0, 0, 4, 25]), vec![4]),
        // Query result into buffer 26 at offset 8, as 32-bit, waiting.
        ("query result qbo", cmd(42, 0, &[31, 26, 1, 1, 8, 0]), vec![2]),
        // Copy transfer from staging buffer 28 (offset 4096) into texture 27, synchronized.
        ("copy transfer", cmd(45, 0, &[27, 0, 2, 256, 0, 0, 0, 0, 64, 64, 1, 28, 4096, 1]), vec![1, 12]),
        // Read back: the same command with VIRGL_COPY_TRANSFER3D_FLAGS_READ_FROM_HOST.
        ("copy transfer from host", cmd(45, 0, &[27, 0, 1, 256, 0, 0, 0, 0, 64, 64, 1, 28, 4096, 3]), vec![1, 12]),
        // Clear level 0 of resource 29 to one RGBA8 texel.
        ("clear texture", cmd(47, 0, &[29, 0, 0, 0, 0, 16, 16, 1, 0xff00_00ff, 0, 0, 0]), vec![1]),
        // Inline write of 4 bytes into buffer 32 at x = 12.
        ("inline write", cmd(9, 0, &[32, 0, 0, 0, 0, 12, 0, 0, 4, 1, 1, 0xcafe_f00d]), vec![1]),
        // Streamout target 40 over buffer 33, offset 0, 4 KiB.
        ("streamout target", cmd(1, 10, &[40, 33, 0, 4096]), vec![2]),
        // Memory info into resource 34.
        ("memory info", cmd(50, 0, &[34]), vec![1]),
    ];
    for (name, stream, handles) in cases {
        let mut s = stream.clone();
        let stats = rewrite_resource_handles(&mut s, |h| (10..100).contains(&h).then_some(h + 1000))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(stats.handles as usize, handles.len(), "{name}");
        assert_eq!(changed(&s, &stream), handles, "{name}");
        for &i in &handles {
            assert_eq!(s[i], stream[i] + 1000, "{name}");
        }
    }
}

#[test]
fn commands_without_handles_pass_untouched() {
    let mut all = Vec::new();
    for &(opcode, obj, len) in PLAIN_SHAPES {
        let stream = cmd(opcode, obj, &vec![0x1234_5678; len]);
        let mut s = stream.clone();
        let stats = rewrite_resource_handles(&mut s, |_| None).unwrap_or_else(|e| panic!("{stream:?}: {e}"));
        assert_eq!(stats, RewriteStats { commands: 1, handles: 0 });
        assert_eq!(s, stream);
        all.extend(stream);
    }
    let original = all.clone();
    let stats = rewrite_resource_handles(&mut all, |_| None).unwrap();
    assert_eq!(stats.commands as usize, PLAIN_SHAPES.len());
    assert_eq!(all, original);
}

/// Every opcode byte is accepted, refused or unknown exactly as the module docs say.
#[test]
fn every_opcode_is_classified() {
    for opcode in 0u32..=255 {
        let shape = HANDLE_SHAPES
            .iter()
            .map(|&(o, t, l, _)| (o, t, l))
            .chain(PLAIN_SHAPES.iter().copied())
            .find(|&(o, _, _)| o == opcode);
        let (obj, len) = shape.map_or((0, 1), |(_, t, l)| (t, l));
        let mut s = cmd(opcode, obj, &vec![0; len]);
        let result = rewrite_resource_handles(&mut s, Some);
        match opcode {
            48 | 49 | 53..=61 => {
                assert_eq!(result, Err(StreamError::RefusedCommand { opcode, offset: 0 }), "{opcode}")
            }
            62.. => assert_eq!(result, Err(StreamError::UnknownCommand { opcode, offset: 0 }), "{opcode}"),
            _ => {
                assert!(shape.is_some(), "opcode {opcode} has no test shape");
                assert!(result.is_ok(), "{opcode}: {result:?}");
            }
        }
    }
}

#[test]
fn map_is_asked_once_per_handle_in_order() {
    let mut s = cmd(17, 0, &[5, 0, 0, 0, 0, 6, 0, 0, 0, 0, 1, 1, 1]);
    s.extend(cmd(6, 0, &[16, 0, 7, 16, 0, 0, 16, 0, 5]));
    let mut asked = Vec::new();
    let stats = rewrite_resource_handles(&mut s, |h| {
        asked.push(h);
        Some(h + 10)
    })
    .unwrap();
    assert_eq!(asked, vec![5, 6, 7, 5]);
    assert_eq!(stats, RewriteStats { commands: 2, handles: 4 });
}

#[test]
fn empty_stream() {
    assert_eq!(rewrite_resource_handles(&mut [], |_| None), Ok(RewriteStats::default()));
}
