//! Resource handles inside virgl command streams (`VIRTIO_GPU_CMD_SUBMIT_3D` payloads).
//!
//! A stream is a sequence of commands, each a header dword `len << 16 | obj_type << 8 | opcode`
//! followed by `len` payload dwords (Gallium virgl protocol, virglrenderer 0.10.4's
//! `src/virgl_protocol.h`, decoded by `src/vrend_decode.c`). Some payload dwords name *resources*
//! (virtio-gpu resource ids, looked up by virglrenderer in its process-global resource table);
//! the rest are constants or ids of objects that live inside the guest's own context (surfaces,
//! sampler views, queries, shaders, streamout targets), which virglrenderer already keeps per
//! context. [`rewrite_resource_handles`] maps every resource handle from the guest's id space to
//! the host's, and refuses any command it does not know, so no handle reaches virglrenderer
//! untranslated.
//!
//! Resource handles by opcode (payload dword index, 1 = the first dword after the header; `k` =
//! slot number, 0-based):
//!
//! | opcode | command | resource handles |
//! | --- | --- | --- |
//! | 1 | CREATE_OBJECT | SAMPLER_VIEW (6), SURFACE (8), STREAMOUT_TARGET (10), MSAA_SURFACE (11): 2; QUERY (9): 4 (result buffer); other types: none; type outside 1..=11 refused |
//! | 6 | SET_VERTEX_BUFFERS | `3k + 3` for each (stride, offset, handle) triple; `len % 3 == 0` |
//! | 8 | DRAW_VBO | len 12 or 14: none; len 20 (indirect): 15 (indirect buffer) and 20 (indirect draw count); other lengths refused |
//! | 9 | RESOURCE_INLINE_WRITE | 1 |
//! | 11 | SET_INDEX_BUFFER | 1 (len 1 or 3) |
//! | 16 | BLIT | 4 (destination), 13 (source) |
//! | 17 | RESOURCE_COPY_REGION | 1 (destination), 6 (source) |
//! | 27 | SET_UNIFORM_BUFFER | 5 (SET_CONSTANT_BUFFER, 12, carries inline data, no handle) |
//! | 34 | SET_SHADER_BUFFERS | (shader, start slot), then (offset, length, handle) slots: `3k + 5` |
//! | 35 | SET_SHADER_IMAGES | (shader, start slot), then (format, access, layer offset, level size, handle) slots: `5k + 7` |
//! | 37 | LAUNCH_GRID | 7 (indirect buffer); len 8 |
//! | 40 | SET_ATOMIC_BUFFERS | (start slot), then (offset, length, handle) slots: `3k + 4` |
//! | 42 | GET_QUERY_RESULT_QBO | 2 (the query buffer; 1 is the query object) |
//! | 43 | TRANSFER3D | 1 |
//! | 45 | COPY_TRANSFER3D | 1 (destination), 12 (source) |
//! | 47 | CLEAR_TEXTURE | 1 |
//! | 50 | GET_MEMORY_INFO | 1 (virglrenderer writes the answer into that resource) |
//!
//! Slot lists must fill the payload exactly (virglrenderer would ignore a partial trailing slot;
//! Mesa never sends one). No-handle opcodes pass unchanged: NOP (0), BIND_OBJECT (2) and
//! DESTROY_OBJECT (3) of a known type, SET_VIEWPORT_STATE (4), SET_FRAMEBUFFER_STATE (5, surface
//! objects), CLEAR (7), SET_SAMPLER_VIEWS (10, view objects), SET_CONSTANT_BUFFER (12),
//! SET_STENCIL_REF (13), SET_BLEND_COLOR (14), SET_SCISSOR_STATE (15), BIND_SAMPLER_STATES (18),
//! BEGIN/END_QUERY and GET_QUERY_RESULT (19-21, query objects), SET_POLYGON_STIPPLE (22),
//! SET_CLIP_STATE (23), SET_SAMPLE_MASK (24), SET_STREAMOUT_TARGETS (25, target objects),
//! SET_RENDER_CONDITION (26, query object), SET_SUB_CTX / CREATE_SUB_CTX / DESTROY_SUB_CTX
//! (28-30), BIND_SHADER (31), SET_TESS_STATE (32), SET_MIN_SAMPLES (33), MEMORY_BARRIER (36),
//! SET_FRAMEBUFFER_STATE_NO_ATTACH (38), TEXTURE_BARRIER (39), SET_DEBUG_FLAGS (41),
//! END_TRANSFERS (44), SET_TWEAKS (46), SEND_STRING_MARKER (51) and LINK_SHADER (52, shader
//! objects; the last opcode virglrenderer 0.10.4 knows, sent by recent Mesa). The virgl protocol
//! has no GENERATE_MIPMAP command (Gallium's `generate_mipmap` does not reach the host as one),
//! so there is nothing to rewrite for it.
//!
//! PIPE_RESOURCE_CREATE (48) and PIPE_RESOURCE_SET_TYPE (49) are refused: they create or retype
//! blob resources, which scanway does not offer (no `VIRTIO_GPU_F_RESOURCE_BLOB`). Opcodes from
//! 53 on (virglrenderer 1.x video commands, CLEAR_SURFACE) are unknown to 0.10.4 and refused.
//! Handle 0 means "no resource" and stays 0 without asking the map. Object ids are not rewritten:
//! they are per virglrenderer context, and each guest context is its own virglrenderer context.

/// Why a stream was refused. Offsets are dword indices into the stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// A command's payload runs past the end of the stream (`offset`: its header).
    #[error("command at dword {offset} runs past the end of the stream")]
    Truncated { offset: usize },
    /// An opcode scanway does not know (or refuses, see the module docs).
    #[error("unknown or refused virgl command {opcode} at dword {offset}")]
    UnknownCommand { opcode: u32, offset: usize },
    /// CREATE/BIND/DESTROY_OBJECT of an unknown object type.
    #[error("unknown virgl object type {obj_type} at dword {offset}")]
    UnknownObject { obj_type: u32, offset: usize },
    /// A payload length the command cannot have.
    #[error("virgl command {opcode} at dword {offset} has a bad length {len}")]
    BadLength { opcode: u32, len: u32, offset: usize },
    /// A resource handle the guest does not own (`offset`: the handle's own dword).
    #[error("resource {handle} at dword {offset} is not this guest's")]
    UnknownResource { handle: u32, offset: usize },
}

/// What a rewrite did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteStats {
    /// Commands in the stream.
    pub commands: u32,
    /// Resource handles rewritten (non-zero ones).
    pub handles: u32,
}

/// Opcodes (`enum virgl_context_cmd`, virglrenderer 0.10.4).
mod op {
    pub const NOP: u32 = 0;
    pub const CREATE_OBJECT: u32 = 1;
    pub const BIND_OBJECT: u32 = 2;
    pub const DESTROY_OBJECT: u32 = 3;
    pub const SET_VIEWPORT_STATE: u32 = 4;
    pub const SET_FRAMEBUFFER_STATE: u32 = 5;
    pub const SET_VERTEX_BUFFERS: u32 = 6;
    pub const CLEAR: u32 = 7;
    pub const DRAW_VBO: u32 = 8;
    pub const RESOURCE_INLINE_WRITE: u32 = 9;
    pub const SET_SAMPLER_VIEWS: u32 = 10;
    pub const SET_INDEX_BUFFER: u32 = 11;
    pub const SET_CONSTANT_BUFFER: u32 = 12;
    pub const SET_STENCIL_REF: u32 = 13;
    pub const SET_BLEND_COLOR: u32 = 14;
    pub const SET_SCISSOR_STATE: u32 = 15;
    pub const BLIT: u32 = 16;
    pub const RESOURCE_COPY_REGION: u32 = 17;
    pub const BIND_SAMPLER_STATES: u32 = 18;
    pub const BEGIN_QUERY: u32 = 19;
    pub const END_QUERY: u32 = 20;
    pub const GET_QUERY_RESULT: u32 = 21;
    pub const SET_POLYGON_STIPPLE: u32 = 22;
    pub const SET_CLIP_STATE: u32 = 23;
    pub const SET_SAMPLE_MASK: u32 = 24;
    pub const SET_STREAMOUT_TARGETS: u32 = 25;
    pub const SET_RENDER_CONDITION: u32 = 26;
    pub const SET_UNIFORM_BUFFER: u32 = 27;
    pub const SET_SUB_CTX: u32 = 28;
    pub const CREATE_SUB_CTX: u32 = 29;
    pub const DESTROY_SUB_CTX: u32 = 30;
    pub const BIND_SHADER: u32 = 31;
    pub const SET_TESS_STATE: u32 = 32;
    pub const SET_MIN_SAMPLES: u32 = 33;
    pub const SET_SHADER_BUFFERS: u32 = 34;
    pub const SET_SHADER_IMAGES: u32 = 35;
    pub const MEMORY_BARRIER: u32 = 36;
    pub const LAUNCH_GRID: u32 = 37;
    pub const SET_FRAMEBUFFER_STATE_NO_ATTACH: u32 = 38;
    pub const TEXTURE_BARRIER: u32 = 39;
    pub const SET_ATOMIC_BUFFERS: u32 = 40;
    pub const SET_DEBUG_FLAGS: u32 = 41;
    pub const GET_QUERY_RESULT_QBO: u32 = 42;
    pub const TRANSFER3D: u32 = 43;
    pub const END_TRANSFERS: u32 = 44;
    pub const COPY_TRANSFER3D: u32 = 45;
    pub const SET_TWEAKS: u32 = 46;
    pub const CLEAR_TEXTURE: u32 = 47;
    pub const PIPE_RESOURCE_CREATE: u32 = 48;
    pub const PIPE_RESOURCE_SET_TYPE: u32 = 49;
    pub const GET_MEMORY_INFO: u32 = 50;
    pub const SEND_STRING_MARKER: u32 = 51;
    pub const LINK_SHADER: u32 = 52;
}

/// Object types (`enum virgl_object_type`), for CREATE/BIND/DESTROY_OBJECT.
mod obj {
    pub const BLEND: u32 = 1;
    pub const SAMPLER_VIEW: u32 = 6;
    pub const SURFACE: u32 = 8;
    pub const QUERY: u32 = 9;
    pub const STREAMOUT_TARGET: u32 = 10;
    pub const MSAA_SURFACE: u32 = 11;
}

/// Where a command's resource handles are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handles {
    None,
    /// Fixed payload indices (1-based), all required.
    At(&'static [u32]),
    /// Slots after a fixed part: the handle of slot `k` is at `header + stride * k + last`;
    /// `len - header` must be a multiple of `stride`.
    Slots {
        header: u32,
        stride: u32,
        last: u32,
    },
}

/// The resource handles of one command, or why it is refused.
fn handles_of(opcode: u32, obj_type: u32, len: u32, offset: usize) -> Result<Handles, StreamError> {
    let known_object = || {
        if (obj::BLEND..=obj::MSAA_SURFACE).contains(&obj_type) {
            Ok(())
        } else {
            Err(StreamError::UnknownObject { obj_type, offset })
        }
    };
    let bad_length = StreamError::BadLength { opcode, len, offset };
    Ok(match opcode {
        op::CREATE_OBJECT => {
            known_object()?;
            match obj_type {
                obj::SAMPLER_VIEW | obj::SURFACE | obj::STREAMOUT_TARGET | obj::MSAA_SURFACE => Handles::At(&[2]),
                obj::QUERY => Handles::At(&[4]),
                _ => Handles::None,
            }
        }
        op::BIND_OBJECT | op::DESTROY_OBJECT => {
            known_object()?;
            Handles::None
        }
        op::SET_VERTEX_BUFFERS => Handles::Slots { header: 0, stride: 3, last: 3 },
        op::DRAW_VBO => match len {
            12 | 14 => Handles::None,
            20 => Handles::At(&[15, 20]),
            _ => return Err(bad_length),
        },
        op::RESOURCE_INLINE_WRITE | op::TRANSFER3D | op::CLEAR_TEXTURE | op::GET_MEMORY_INFO => Handles::At(&[1]),
        op::SET_INDEX_BUFFER => match len {
            1 | 3 => Handles::At(&[1]),
            _ => return Err(bad_length),
        },
        op::BLIT => Handles::At(&[4, 13]),
        op::RESOURCE_COPY_REGION => Handles::At(&[1, 6]),
        op::SET_UNIFORM_BUFFER => Handles::At(&[5]),
        op::SET_SHADER_BUFFERS => Handles::Slots { header: 2, stride: 3, last: 3 },
        op::SET_SHADER_IMAGES => Handles::Slots { header: 2, stride: 5, last: 5 },
        op::SET_ATOMIC_BUFFERS => Handles::Slots { header: 1, stride: 3, last: 3 },
        op::LAUNCH_GRID => match len {
            8 => Handles::At(&[7]),
            _ => return Err(bad_length),
        },
        op::GET_QUERY_RESULT_QBO => Handles::At(&[2]),
        op::COPY_TRANSFER3D => Handles::At(&[1, 12]),
        op::NOP
        | op::SET_VIEWPORT_STATE
        | op::SET_FRAMEBUFFER_STATE
        | op::CLEAR
        | op::SET_SAMPLER_VIEWS
        | op::SET_CONSTANT_BUFFER
        | op::SET_STENCIL_REF
        | op::SET_BLEND_COLOR
        | op::SET_SCISSOR_STATE
        | op::BIND_SAMPLER_STATES
        | op::BEGIN_QUERY
        | op::END_QUERY
        | op::GET_QUERY_RESULT
        | op::SET_POLYGON_STIPPLE
        | op::SET_CLIP_STATE
        | op::SET_SAMPLE_MASK
        | op::SET_STREAMOUT_TARGETS
        | op::SET_RENDER_CONDITION
        | op::SET_SUB_CTX
        | op::CREATE_SUB_CTX
        | op::DESTROY_SUB_CTX
        | op::BIND_SHADER
        | op::SET_TESS_STATE
        | op::SET_MIN_SAMPLES
        | op::MEMORY_BARRIER
        | op::SET_FRAMEBUFFER_STATE_NO_ATTACH
        | op::TEXTURE_BARRIER
        | op::SET_DEBUG_FLAGS
        | op::END_TRANSFERS
        | op::SET_TWEAKS
        | op::SEND_STRING_MARKER
        | op::LINK_SHADER => Handles::None,
        // Blob resources are not offered (see the module docs).
        op::PIPE_RESOURCE_CREATE | op::PIPE_RESOURCE_SET_TYPE => {
            return Err(StreamError::UnknownCommand { opcode, offset });
        }
        _ => return Err(StreamError::UnknownCommand { opcode, offset }),
    })
}

/// Rewrite in place every resource handle of `stream` (the SUBMIT_3D payload as
/// little-endian-decoded dwords) through `map` (guest resource id -> host resource id; `None`:
/// the guest does not own it). Handle 0 stays 0 and is not passed to `map`.
///
/// Errors: a truncated command, an unknown opcode or object type, an impossible length, or a
/// handle `map` refuses ([`StreamError`]). On error the stream may be partly rewritten; the
/// caller must discard it. Never panics; allocates nothing.
pub fn rewrite_resource_handles(
    stream: &mut [u32],
    mut map: impl FnMut(u32) -> Option<u32>,
) -> Result<RewriteStats, StreamError> {
    let mut stats = RewriteStats::default();
    let mut pos = 0usize;
    while let Some(&header) = stream.get(pos) {
        let (opcode, obj_type, len) = (header & 0xff, (header >> 8) & 0xff, header >> 16);
        // `len` < 2^16, so this cannot overflow on any real target; checked anyway.
        let Some(end) = pos.checked_add(1 + len as usize).filter(|&e| e <= stream.len()) else {
            return Err(StreamError::Truncated { offset: pos });
        };
        let handles = handles_of(opcode, obj_type, len, pos)?;
        let payload = stream.get_mut(pos + 1..end).unwrap_or_default();
        let mut rewrite = |index: u32| -> Result<(), StreamError> {
            // `index` is 1-based from the header.
            let slot = (index as usize)
                .checked_sub(1)
                .and_then(|i| payload.get_mut(i))
                .ok_or(StreamError::BadLength { opcode, len, offset: pos })?;
            if *slot != 0 {
                *slot =
                    map(*slot).ok_or(StreamError::UnknownResource { handle: *slot, offset: pos + index as usize })?;
                stats.handles = stats.handles.saturating_add(1);
            }
            Ok(())
        };
        match handles {
            Handles::None => {}
            Handles::At(indices) => {
                for &i in indices {
                    rewrite(i)?;
                }
            }
            Handles::Slots { header, stride, last } => {
                let Some(body) = len.checked_sub(header).filter(|b| b % stride == 0) else {
                    return Err(StreamError::BadLength { opcode, len, offset: pos });
                };
                // At most 2^16 / stride slots; indices stay below 2^16 + 2.
                for k in 0..body / stride {
                    rewrite(header + stride * k + last)?;
                }
            }
        }
        stats.commands = stats.commands.saturating_add(1);
        pos = end;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cmd(opcode: u32, obj: u32, payload: &[u32]) -> Vec<u32> {
        let mut v = vec![opcode | (obj << 8) | ((payload.len() as u32) << 16)];
        v.extend_from_slice(payload);
        v
    }

    /// A payload of `len` dwords, all `fill`, with `handles` (1-based) set to `h, h + 1, ...`
    /// (all 0 when `h` is 0).
    fn with_handles(len: usize, fill: u32, handles: &[usize], h: u32) -> Vec<u32> {
        let mut p = vec![fill; len];
        for (n, &i) in handles.iter().enumerate() {
            p[i - 1] = if h == 0 { 0 } else { h + n as u32 };
        }
        p
    }

    fn plus(n: u32) -> impl FnMut(u32) -> Option<u32> {
        move |h| h.checked_add(n)
    }

    fn changed(a: &[u32], b: &[u32]) -> Vec<usize> {
        (0..a.len()).filter(|&i| a[i] != b[i]).collect()
    }

    #[test]
    fn clear_of_a_surface() {
        // What Mesa's virgl driver sends to clear a render target: a surface over resource 7,
        // bound as colour buffer 0, then CLEAR.
        let mut s = cmd(1, 8, &[1, 7, 1, 0, 0]);
        s.extend(cmd(5, 0, &[1, 0, 1]));
        s.extend(cmd(7, 0, &[4, 0, 0, 0, 0x3f80_0000, 0, 0, 0]));
        let original = s.clone();
        let stats = rewrite_resource_handles(&mut s, plus(100)).unwrap();
        assert_eq!(stats, RewriteStats { commands: 3, handles: 1 });
        assert_eq!(s[2], 107);
        assert_eq!(changed(&s, &original), vec![2], "only the surface's resource handle changes");
    }

    /// (opcode, object type, payload length, 1-based handle indices), one per handle-carrying
    /// command shape, with the lengths virglrenderer 0.10.4 accepts.
    const HANDLE_SHAPES: &[(u32, u32, usize, &[usize])] = &[
        (1, 6, 6, &[2]),       // CREATE_OBJECT SAMPLER_VIEW
        (1, 8, 5, &[2]),       // CREATE_OBJECT SURFACE
        (1, 9, 4, &[4]),       // CREATE_OBJECT QUERY (result buffer)
        (1, 10, 4, &[2]),      // CREATE_OBJECT STREAMOUT_TARGET
        (1, 11, 6, &[2]),      // CREATE_OBJECT MSAA_SURFACE
        (6, 0, 3, &[3]),       // SET_VERTEX_BUFFERS, 1 buffer
        (6, 0, 9, &[3, 6, 9]), // SET_VERTEX_BUFFERS, 3 buffers
        (8, 0, 20, &[15, 20]), // DRAW_VBO indirect
        (9, 0, 12, &[1]),      // RESOURCE_INLINE_WRITE, 1 dword of data
        (11, 0, 1, &[1]),      // SET_INDEX_BUFFER (unbind form)
        (11, 0, 3, &[1]),      // SET_INDEX_BUFFER
        (16, 0, 21, &[4, 13]), // BLIT
        (17, 0, 13, &[1, 6]),  // RESOURCE_COPY_REGION
        (27, 0, 5, &[5]),      // SET_UNIFORM_BUFFER
        (34, 0, 8, &[5, 8]),   // SET_SHADER_BUFFERS, 2 slots
        (35, 0, 12, &[7, 12]), // SET_SHADER_IMAGES, 2 slots
        (37, 0, 8, &[7]),      // LAUNCH_GRID
        (40, 0, 7, &[4, 7]),   // SET_ATOMIC_BUFFERS, 2 slots
        (42, 0, 6, &[2]),      // GET_QUERY_RESULT_QBO
        (43, 0, 13, &[1]),     // TRANSFER3D
        (45, 0, 14, &[1, 12]), // COPY_TRANSFER3D
        (47, 0, 12, &[1]),     // CLEAR_TEXTURE
        (50, 0, 1, &[1]),      // GET_MEMORY_INFO
    ];

    /// Commands without resource handles, with lengths virglrenderer 0.10.4 accepts.
    const PLAIN_SHAPES: &[(u32, u32, usize)] = &[
        (0, 0, 0),   // NOP
        (0, 0, 3),   // NOP with padding
        (1, 1, 11),  // CREATE_OBJECT BLEND
        (1, 2, 9),   // CREATE_OBJECT RASTERIZER
        (1, 3, 5),   // CREATE_OBJECT DSA
        (1, 4, 9),   // CREATE_OBJECT SHADER
        (1, 5, 5),   // CREATE_OBJECT VERTEX_ELEMENTS
        (1, 7, 9),   // CREATE_OBJECT SAMPLER_STATE
        (2, 1, 1),   // BIND_OBJECT BLEND
        (3, 8, 1),   // DESTROY_OBJECT SURFACE
        (4, 0, 7),   // SET_VIEWPORT_STATE
        (5, 0, 3),   // SET_FRAMEBUFFER_STATE
        (7, 0, 8),   // CLEAR
        (8, 0, 12),  // DRAW_VBO
        (8, 0, 14),  // DRAW_VBO with tessellation
        (10, 0, 4),  // SET_SAMPLER_VIEWS
        (12, 0, 6),  // SET_CONSTANT_BUFFER
        (13, 0, 1),  // SET_STENCIL_REF
        (14, 0, 4),  // SET_BLEND_COLOR
        (15, 0, 3),  // SET_SCISSOR_STATE
        (18, 0, 3),  // BIND_SAMPLER_STATES
        (19, 0, 1),  // BEGIN_QUERY
        (20, 0, 1),  // END_QUERY
        (21, 0, 2),  // GET_QUERY_RESULT
        (22, 0, 32), // SET_POLYGON_STIPPLE
        (23, 0, 32), // SET_CLIP_STATE
        (24, 0, 1),  // SET_SAMPLE_MASK
        (25, 0, 3),  // SET_STREAMOUT_TARGETS
        (26, 0, 3),  // SET_RENDER_CONDITION
        (28, 0, 1),  // SET_SUB_CTX
        (29, 0, 1),  // CREATE_SUB_CTX
        (30, 0, 1),  // DESTROY_SUB_CTX
        (31, 0, 2),  // BIND_SHADER
        (32, 0, 6),  // SET_TESS_STATE
        (33, 0, 1),  // SET_MIN_SAMPLES
        (36, 0, 1),  // MEMORY_BARRIER
        (38, 0, 2),  // SET_FRAMEBUFFER_STATE_NO_ATTACH
        (39, 0, 1),  // TEXTURE_BARRIER
        (41, 0, 2),  // SET_DEBUG_FLAGS
        (44, 0, 2),  // END_TRANSFERS
        (46, 0, 2),  // SET_TWEAKS
        (51, 0, 3),  // SEND_STRING_MARKER
        (52, 0, 6),  // LINK_SHADER
        (6, 0, 0),   // SET_VERTEX_BUFFERS, none
        (34, 0, 2),  // SET_SHADER_BUFFERS, no slots
        (35, 0, 2),  // SET_SHADER_IMAGES, no slots
        (40, 0, 1),  // SET_ATOMIC_BUFFERS, no slots
    ];

    #[test]
    fn every_handle_carrying_command() {
        for &(opcode, obj, len, handles) in HANDLE_SHAPES {
            // Non-handle dwords are 0xdead_0000-ish (maps would refuse them), handles 5, 6, ...
            let stream = cmd(opcode, obj, &with_handles(len, 0xdead_0000, handles, 5));
            let mut s = stream.clone();
            let stats = rewrite_resource_handles(&mut s, |h| (h < 100).then_some(h + 1000))
                .unwrap_or_else(|e| panic!("{stream:?}: {e}"));
            assert_eq!(stats, RewriteStats { commands: 1, handles: handles.len() as u32 }, "{stream:?}");
            assert_eq!(changed(&s, &stream), handles.to_vec(), "{stream:?}");
            for (n, &i) in handles.iter().enumerate() {
                assert_eq!(s[i], 1005 + n as u32);
            }
            // Zero handles are "none": left alone, the map is never asked.
            let zeros = cmd(opcode, obj, &with_handles(len, 0xdead_0000, handles, 0));
            let mut z = zeros.clone();
            assert_eq!(rewrite_resource_handles(&mut z, |_| None).unwrap().handles, 0, "{zeros:?}");
            assert_eq!(z, zeros);
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

    #[test]
    fn empty_stream() {
        assert_eq!(rewrite_resource_handles(&mut [], |_| None), Ok(RewriteStats::default()));
    }

    #[test]
    fn unknown_commands() {
        for opcode in [53, 54, 63, 0x80, 0xff] {
            let mut s = cmd(opcode, 0, &[1]);
            assert_eq!(
                rewrite_resource_handles(&mut s, plus(1)),
                Err(StreamError::UnknownCommand { opcode, offset: 0 })
            );
        }
        // Blob resource commands are refused.
        let mut s = cmd(48, 0, &[0; 11]);
        assert_eq!(
            rewrite_resource_handles(&mut s, plus(1)),
            Err(StreamError::UnknownCommand { opcode: 48, offset: 0 })
        );
        let mut s = cmd(49, 0, &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            rewrite_resource_handles(&mut s, plus(1)),
            Err(StreamError::UnknownCommand { opcode: 49, offset: 0 })
        );
        // The offset is that of the refused command's header.
        let mut s = cmd(0, 0, &[0, 0]);
        s.extend(cmd(99, 0, &[]));
        assert_eq!(
            rewrite_resource_handles(&mut s, plus(1)),
            Err(StreamError::UnknownCommand { opcode: 99, offset: 3 })
        );
    }

    #[test]
    fn unknown_object_types() {
        for (opcode, obj_type) in [(1, 0), (1, 12), (1, 0xff), (2, 0), (3, 12)] {
            let mut s = cmd(opcode, obj_type, &[1, 2, 3, 4, 5]);
            assert_eq!(
                rewrite_resource_handles(&mut s, plus(1)),
                Err(StreamError::UnknownObject { obj_type, offset: 0 })
            );
        }
    }

    #[test]
    fn truncated() {
        let mut s = vec![7 | (8 << 16), 0, 0];
        assert_eq!(rewrite_resource_handles(&mut s, plus(1)), Err(StreamError::Truncated { offset: 0 }));
        let mut s = cmd(11, 0, &[5]);
        s.push(17 | (13 << 16));
        assert_eq!(rewrite_resource_handles(&mut s, plus(1)), Err(StreamError::Truncated { offset: 2 }));
        let mut s = vec![u32::MAX];
        assert_eq!(rewrite_resource_handles(&mut s, plus(1)), Err(StreamError::Truncated { offset: 0 }));
    }

    #[test]
    fn bad_lengths() {
        let cases: &[(u32, u32, usize)] = &[
            (6, 0, 2),  // SET_VERTEX_BUFFERS, partial triple
            (8, 0, 15), // DRAW_VBO: 12, 14 or 20 only
            (8, 0, 0),
            (9, 0, 0),  // RESOURCE_INLINE_WRITE without its handle
            (11, 0, 0), // SET_INDEX_BUFFER: 1 or 3
            (11, 0, 2),
            (16, 0, 12), // BLIT too short for its source handle
            (17, 0, 5),
            (27, 0, 4),
            (34, 0, 1),
            (34, 0, 4),
            (35, 0, 6),
            (37, 0, 7), // LAUNCH_GRID: 8 only
            (37, 0, 9),
            (40, 0, 0),
            (40, 0, 3),
            (42, 0, 1),
            (45, 0, 11),
            (1, 8, 1), // SURFACE without its resource
            (1, 9, 3), // QUERY without its buffer
        ];
        for &(opcode, obj, len) in cases {
            let mut s = cmd(opcode, obj, &vec![1; len]);
            assert_eq!(
                rewrite_resource_handles(&mut s, plus(1)),
                Err(StreamError::BadLength { opcode, len: len as u32, offset: 0 }),
                "{opcode} {len}"
            );
        }
    }

    #[test]
    fn unknown_resource() {
        let owned = |h| (h == 3).then_some(33);
        let mut s = cmd(1, 8, &[1, 9, 0, 0, 0]);
        assert_eq!(rewrite_resource_handles(&mut s, owned), Err(StreamError::UnknownResource { handle: 9, offset: 2 }));
        // The second handle of a BLIT, in the second command: offset is the handle's dword.
        let mut s = cmd(11, 0, &[3]);
        s.extend(cmd(16, 0, &with_handles(21, 0, &[4, 13], 3)));
        assert_eq!(
            rewrite_resource_handles(&mut s, owned),
            Err(StreamError::UnknownResource { handle: 4, offset: 2 + 13 })
        );
        // A vertex buffer triple.
        let mut s = cmd(6, 0, &[16, 0, 3, 16, 0, 7]);
        assert_eq!(rewrite_resource_handles(&mut s, owned), Err(StreamError::UnknownResource { handle: 7, offset: 6 }));
    }

    fn valid_command() -> impl Strategy<Value = (Vec<u32>, Vec<usize>)> {
        let handles = (0..HANDLE_SHAPES.len(), any::<u32>(), proptest::collection::vec(0u32..100, 4)).prop_map(
            |(i, fill, rs)| {
                let (opcode, obj, len, at) = HANDLE_SHAPES[i];
                let mut p = vec![fill; len];
                let mut nonzero = Vec::new();
                for (n, &j) in at.iter().enumerate() {
                    p[j - 1] = rs[n % rs.len()];
                    if p[j - 1] != 0 {
                        nonzero.push(j);
                    }
                }
                (cmd(opcode, obj, &p), nonzero)
            },
        );
        let plain = (0..PLAIN_SHAPES.len(), any::<u32>()).prop_map(|(i, fill)| {
            let (opcode, obj, len) = PLAIN_SHAPES[i];
            (cmd(opcode, obj, &vec![fill; len]), Vec::new())
        });
        let vertex_buffers = proptest::collection::vec((any::<u32>(), any::<u32>(), 0u32..100), 0..6).prop_map(|vbs| {
            let p: Vec<u32> = vbs.iter().flat_map(|&(stride, off, r)| [stride, off, r]).collect();
            let nonzero = vbs.iter().enumerate().filter(|(_, v)| v.2 != 0).map(|(k, _)| 3 * k + 3).collect();
            (cmd(6, 0, &p), nonzero)
        });
        prop_oneof![handles, plain, vertex_buffers]
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_streams_never_panic(mut s in proptest::collection::vec(any::<u32>(), 0..64)) {
            let _ = rewrite_resource_handles(&mut s, |h| h.checked_add(1));
        }

        /// Headers with known opcodes and short lengths reach the per-command code paths.
        #[test]
        fn plausible_streams_never_panic(
            words in proptest::collection::vec((0u32..60, 0u32..13, 0u32..24, any::<u32>(), any::<bool>()), 0..64)
        ) {
            let mut s: Vec<u32> = words
                .iter()
                .map(|&(opcode, obj, len, word, header)| if header { opcode | obj << 8 | len << 16 } else { word })
                .collect();
            let original = s.clone();
            if let Ok(stats) = rewrite_resource_handles(&mut s, Some) {
                prop_assert_eq!(&s, &original);
                prop_assert!(stats.commands as usize <= s.len());
            }
        }

        #[test]
        fn valid_streams_round_trip(cmds in proptest::collection::vec(valid_command(), 0..16)) {
            let original: Vec<u32> = cmds.iter().flat_map(|c| c.0.iter().copied()).collect();
            let mut expected_changes = Vec::new();
            let mut base = 0;
            for (c, at) in &cmds {
                expected_changes.extend(at.iter().map(|&i| base + i));
                base += c.len();
            }
            let mut s = original.clone();
            let there = rewrite_resource_handles(&mut s, |h| (h < 100).then_some(h + 1000)).unwrap();
            prop_assert_eq!(there.commands as usize, cmds.len());
            prop_assert_eq!(there.handles as usize, expected_changes.len());
            prop_assert_eq!(changed(&s, &original), expected_changes);
            let back = rewrite_resource_handles(&mut s, |h| h.checked_sub(1000)).unwrap();
            prop_assert_eq!(there, back);
            prop_assert_eq!(s, original);
        }
    }
}
