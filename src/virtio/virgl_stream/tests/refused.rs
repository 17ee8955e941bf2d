//! Streams that are refused, one test per [`StreamError`] variant.

use super::*;

#[test]
fn unknown_commands() {
    for opcode in [62, 63, 64, 0x80, 0xff] {
        let mut s = cmd(opcode, 0, &[1]);
        assert_eq!(
            rewrite_resource_handles(&mut s, owned_plus(1)),
            Err(StreamError::UnknownCommand { opcode, offset: 0 })
        );
    }
    // The offset is the refused command's header; the commands before it were fine.
    let mut s = cmd(0, 0, &[0, 0]);
    s.extend(cmd(99, 0, &[]));
    assert_eq!(
        rewrite_resource_handles(&mut s, owned_plus(1)),
        Err(StreamError::UnknownCommand { opcode: 99, offset: 3 })
    );
    // An unknown opcode is reported even when its length also runs past the end.
    let mut s = vec![0xffff_0040];
    assert_eq!(
        rewrite_resource_handles(&mut s, owned_plus(1)),
        Err(StreamError::UnknownCommand { opcode: 0x40, offset: 0 })
    );
}

#[test]
fn refused_commands() {
    // PIPE_RESOURCE_CREATE (blob id 1) and PIPE_RESOURCE_SET_TYPE (resource 3, one plane).
    let mut s = cmd(48, 0, &[2, 67, 2, 64, 64, 1, 1, 0, 0, 0, 1]);
    assert_eq!(
        rewrite_resource_handles(&mut s, owned_plus(1)),
        Err(StreamError::RefusedCommand { opcode: 48, offset: 0 })
    );
    let mut s = cmd(49, 0, &[3, 67, 2, 64, 64, 0, 0, 0, 256, 0]);
    assert_eq!(
        rewrite_resource_handles(&mut s, owned_plus(1)),
        Err(StreamError::RefusedCommand { opcode: 49, offset: 0 })
    );
    // CREATE_VIDEO_BUFFER carrying resources 3, 4 (VIRGL_FORMAT_NV12): refused, not passed
    // untranslated.
    let mut s = cmd(55, 0, &[1, 166, 64, 64, 3, 4]);
    let original = s.clone();
    assert_eq!(
        rewrite_resource_handles(&mut s, owned_plus(1)),
        Err(StreamError::RefusedCommand { opcode: 55, offset: 0 })
    );
    assert_eq!(s, original);
    for opcode in 53..=61 {
        let mut s = cmd(opcode, 0, &[1, 2, 3, 4, 5]);
        assert_eq!(
            rewrite_resource_handles(&mut s, owned_plus(1)),
            Err(StreamError::RefusedCommand { opcode, offset: 0 })
        );
    }
}

#[test]
fn unknown_object_types() {
    for (opcode, obj_type) in [(1, 0), (1, 12), (1, 0xff), (2, 0), (2, 12), (3, 0), (3, 0x80)] {
        let mut s = cmd(opcode, obj_type, &[1, 2, 3, 4, 5]);
        assert_eq!(
            rewrite_resource_handles(&mut s, owned_plus(1)),
            Err(StreamError::UnknownObject { obj_type, offset: 0 })
        );
    }
}

#[test]
fn truncated() {
    // CLEAR claims 8 dwords, 2 follow.
    let mut s = vec![7 | (8 << 16), 0, 0];
    assert_eq!(rewrite_resource_handles(&mut s, owned_plus(1)), Err(StreamError::Truncated { offset: 0 }));
    // A good command, then a RESOURCE_COPY_REGION header alone.
    let mut s = cmd(11, 0, &[5]);
    s.push(17 | (13 << 16));
    assert_eq!(rewrite_resource_handles(&mut s, owned_plus(1)), Err(StreamError::Truncated { offset: 2 }));
    // The largest length, on a NOP, in a 1-dword stream.
    let mut s = vec![0xffff_0000];
    assert_eq!(rewrite_resource_handles(&mut s, owned_plus(1)), Err(StreamError::Truncated { offset: 0 }));
    // END_TRANSFERS one dword short.
    let mut s = cmd(44, 0, &[0; 1023]);
    s.pop();
    assert_eq!(rewrite_resource_handles(&mut s, owned_plus(1)), Err(StreamError::Truncated { offset: 0 }));
}

#[test]
fn bad_lengths() {
    let cases: &[(u32, u32, usize)] = &[
        (6, 0, 2),   // SET_VERTEX_BUFFERS: a partial triple
        (6, 0, 4),   // SET_VERTEX_BUFFERS
        (8, 0, 0),   // DRAW_VBO: 12, 14 or 20 only
        (8, 0, 13),  // DRAW_VBO
        (8, 0, 15),  // DRAW_VBO: long enough for the indirect handle, but not a real form
        (8, 0, 21),  // DRAW_VBO
        (9, 0, 0),   // RESOURCE_INLINE_WRITE: at least 12
        (9, 0, 11),  // RESOURCE_INLINE_WRITE
        (11, 0, 0),  // SET_INDEX_BUFFER: 1 or 3
        (11, 0, 2),  // SET_INDEX_BUFFER
        (11, 0, 4),  // SET_INDEX_BUFFER
        (16, 0, 20), // BLIT: 21
        (16, 0, 22), // BLIT
        (17, 0, 12), // RESOURCE_COPY_REGION: 13
        (27, 0, 4),  // SET_UNIFORM_BUFFER: 5
        (27, 0, 6),  // SET_UNIFORM_BUFFER
        (34, 0, 1),  // SET_SHADER_BUFFERS: 2 + 3n
        (34, 0, 4),  // SET_SHADER_BUFFERS
        (35, 0, 6),  // SET_SHADER_IMAGES: 2 + 5n
        (35, 0, 8),  // SET_SHADER_IMAGES
        (37, 0, 7),  // LAUNCH_GRID: 8
        (37, 0, 9),  // LAUNCH_GRID
        (40, 0, 0),  // SET_ATOMIC_BUFFERS: 1 + 3n
        (40, 0, 3),  // SET_ATOMIC_BUFFERS
        (42, 0, 1),  // GET_QUERY_RESULT_QBO: 6
        (43, 0, 12), // TRANSFER3D: at least 13
        (45, 0, 11), // COPY_TRANSFER3D: 14
        (45, 0, 15), // COPY_TRANSFER3D
        (47, 0, 11), // CLEAR_TEXTURE: 12
        (50, 0, 0),  // GET_MEMORY_INFO: 1
        (50, 0, 2),  // GET_MEMORY_INFO
        (1, 6, 5),   // CREATE_OBJECT SAMPLER_VIEW: 6
        (1, 8, 1),   // CREATE_OBJECT SURFACE: 5
        (1, 8, 6),   // CREATE_OBJECT SURFACE
        (1, 9, 3),   // CREATE_OBJECT QUERY: 4
        (1, 10, 5),  // CREATE_OBJECT STREAMOUT_TARGET: 4
        (1, 11, 5),  // CREATE_OBJECT MSAA_SURFACE: 6
    ];
    for &(opcode, obj, len) in cases {
        let mut s = cmd(opcode, obj, &vec![1; len]);
        assert_eq!(
            rewrite_resource_handles(&mut s, owned_plus(1)),
            Err(StreamError::BadLength { opcode, len: len as u32, offset: 0 }),
            "{opcode}/{obj} len {len}"
        );
    }
}

#[test]
fn unknown_resource() {
    let owned = |h| (h == 3).then_some(33);
    // A surface over resource 9, which the guest does not own: the offset is the handle's.
    let mut s = cmd(1, 8, &[1, 9, 0, 0, 0]);
    assert_eq!(rewrite_resource_handles(&mut s, owned), Err(StreamError::UnknownResource { guest_id: 9, offset: 2 }));
    // BLIT's source, in the second command.
    let mut s = cmd(11, 0, &[3]);
    s.extend(cmd(16, 0, &with_handles(21, 0, &[4, 13], 3)));
    assert_eq!(
        rewrite_resource_handles(&mut s, owned),
        Err(StreamError::UnknownResource { guest_id: 4, offset: 2 + 13 })
    );
    // The second vertex buffer.
    let mut s = cmd(6, 0, &[16, 0, 3, 16, 0, 7]);
    assert_eq!(rewrite_resource_handles(&mut s, owned), Err(StreamError::UnknownResource { guest_id: 7, offset: 6 }));
    // The indirect draw count buffer.
    let mut s = cmd(8, 0, &with_handles(20, 0, &[15, 20], 3));
    assert_eq!(rewrite_resource_handles(&mut s, owned), Err(StreamError::UnknownResource { guest_id: 4, offset: 20 }));
}
