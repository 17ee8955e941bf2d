//! Resource handles inside virgl command streams (`VIRTIO_GPU_CMD_SUBMIT_3D` payloads).
//!
//! virglrenderer keeps one process-global resource table keyed by resource id, and every Linux
//! guest numbers its resources from 1, so scanway gives each guest its own id space and must
//! rewrite the resource ids the guest wrote *inside* its 3D command streams before handing them
//! to `virgl_renderer_submit_cmd`. [`rewrite_resource_handles`] does that, in place, and refuses
//! any command it does not understand, so no guest id reaches virglrenderer untranslated.
//!
//! # Stream format
//! A stream is a sequence of little-endian dwords. Each command is a header dword
//! `len << 16 | obj_type << 8 | opcode` followed by exactly `len` payload dwords (`len` < 2^16;
//! `obj_type` only means something to CREATE/BIND/DESTROY_OBJECT). This is the Gallium virgl
//! protocol as virglrenderer 0.10.4 decodes it (`src/virgl_protocol.h`, `src/vrend_decode.c`)
//! and as Mesa's virgl driver (22.x and 25.x, `src/gallium/drivers/virgl/virgl_encode.c`)
//! writes it. Payload dwords are either constants, ids of objects that live inside the
//! virglrenderer context (surfaces, sampler views, sampler states, queries, shaders, streamout
//! targets, sub-contexts; those are per context, and each guest context is its own virglrenderer
//! context, so they are left alone), or *resource handles*: virtio-gpu resource ids, which
//! virglrenderer looks up (`vrend_renderer_ctx_res_lookup`) by the global id. Only those are
//! rewritten. Handle 0 means "no resource" and stays 0 without asking the map.
//!
//! # Resource handles by opcode
//! Positions are payload dword indices, 1 = the first dword after the header (the numbering of
//! `virgl_protocol.h`); `k` = 0-based slot number. "len" is what virglrenderer 0.10.4 accepts
//! and what this module requires; any other length is [`StreamError::BadLength`].
//!
//! | opcode | command | len | resource handles |
//! | --- | --- | --- | --- |
//! | 1 | CREATE_OBJECT, SAMPLER_VIEW (6) | 6 | 2 |
//! | 1 | CREATE_OBJECT, SURFACE (8) | 5 | 2 |
//! | 1 | CREATE_OBJECT, QUERY (9) | 4 | 4 (the result buffer; 1 is the query object) |
//! | 1 | CREATE_OBJECT, STREAMOUT_TARGET (10) | 4 | 2 |
//! | 1 | CREATE_OBJECT, MSAA_SURFACE (11) | 6 | 2 |
//! | 6 | SET_VERTEX_BUFFERS | `3n` | `3k + 3` (slots of stride, offset, handle) |
//! | 8 | DRAW_VBO | 12, 14, 20 | none at 12 and 14; 15 (indirect buffer) and 20 (indirect draw count) at 20 |
//! | 9 | RESOURCE_INLINE_WRITE | >= 12 | 1 |
//! | 11 | SET_INDEX_BUFFER | 1, 3 | 1 |
//! | 16 | BLIT | 21 | 4 (destination), 13 (source) |
//! | 17 | RESOURCE_COPY_REGION | 13 | 1 (destination), 6 (source) |
//! | 27 | SET_UNIFORM_BUFFER | 5 | 5 |
//! | 34 | SET_SHADER_BUFFERS | `2 + 3n` | `3k + 5` (shader, start slot, then slots of offset, size, handle) |
//! | 35 | SET_SHADER_IMAGES | `2 + 5n` | `5k + 7` (shader, start slot, then slots of format, access, offset, size, handle) |
//! | 37 | LAUNCH_GRID | 8 | 7 (indirect buffer) |
//! | 40 | SET_ATOMIC_BUFFERS | `1 + 3n` | `3k + 4` (start slot, then slots of offset, size, handle) |
//! | 42 | GET_QUERY_RESULT_QBO | 6 | 2 (the buffer; 1 is the query object) |
//! | 43 | TRANSFER3D | >= 13 | 1 |
//! | 45 | COPY_TRANSFER3D | 14 | 1 and 12 (which is source and which destination depends on flag bit 1 of dword 14; both are resources) |
//! | 47 | CLEAR_TEXTURE | 12 | 1 |
//! | 50 | GET_MEMORY_INFO | 1 | 1 (virglrenderer writes the answer into that resource) |
//!
//! Known opcodes without resource handles pass unchanged, whatever their length (virglrenderer
//! checks those lengths itself): NOP (0); BIND_OBJECT (2) and DESTROY_OBJECT (3) of a known
//! object type; CREATE_OBJECT of BLEND, RASTERIZER, DSA, SHADER, VERTEX_ELEMENTS,
//! SAMPLER_STATE (1-5, 7); SET_VIEWPORT_STATE (4); SET_FRAMEBUFFER_STATE (5, surface objects);
//! CLEAR (7); SET_SAMPLER_VIEWS (10, view objects); SET_CONSTANT_BUFFER (12, inline data);
//! SET_STENCIL_REF (13); SET_BLEND_COLOR (14); SET_SCISSOR_STATE (15); BIND_SAMPLER_STATES
//! (18); BEGIN_QUERY, END_QUERY, GET_QUERY_RESULT (19-21, query objects);
//! SET_POLYGON_STIPPLE (22); SET_CLIP_STATE (23); SET_SAMPLE_MASK (24); SET_STREAMOUT_TARGETS
//! (25, target objects); SET_RENDER_CONDITION (26, a query object); SET_SUB_CTX,
//! CREATE_SUB_CTX, DESTROY_SUB_CTX (28-30); BIND_SHADER (31); SET_TESS_STATE (32);
//! SET_MIN_SAMPLES (33); MEMORY_BARRIER (36); SET_FRAMEBUFFER_STATE_NO_ATTACH (38);
//! TEXTURE_BARRIER (39); SET_DEBUG_FLAGS (41, a string); END_TRANSFERS (44); SET_TWEAKS (46);
//! SEND_STRING_MARKER (51, a string); LINK_SHADER (52, shader objects). DRAW_VBO's dword 12
//! (`count_from_stream_output`) is a vertex count, not a handle.
//!
//! END_TRANSFERS deserves a note: Mesa's DRM winsys reserves the first 1024 dwords of every
//! command buffer for queued TRANSFER3D commands and closes that area with one END_TRANSFERS
//! whose `len` covers the rest of it. That payload is stale memory from earlier submits (it
//! often contains old commands); it is skipped uninterpreted, exactly as virglrenderer skips it.
//!
//! # Refused
//! - Opcodes 62 and up: not in 0.10.4's `enum virgl_context_cmd` (1.x added CLEAR_SURFACE = 62
//!   and GET_PIPE_RESOURCE_LAYOUT = 63): [`StreamError::UnknownCommand`]. Mesa 25 sends
//!   CLEAR_SURFACE only to hosts whose capset reports `host_feature_check_version` >= 21;
//!   0.10.4 reports 15.
//! - CREATE/BIND/DESTROY_OBJECT with an object type outside 1..=11: [`StreamError::UnknownObject`].
//! - PIPE_RESOURCE_CREATE (48) and PIPE_RESOURCE_SET_TYPE (49): [`StreamError::RefusedCommand`].
//!   They create and retype *blob* resources, and scanway does not offer
//!   `VIRTIO_GPU_F_RESOURCE_BLOB`, so Mesa never sends them. (If blobs are ever offered:
//!   PIPE_RESOURCE_CREATE carries a per-context blob id at 11, not a resource id;
//!   PIPE_RESOURCE_SET_TYPE carries a resource id at 1.)
//! - The video commands 53-61 (CREATE/DESTROY_VIDEO_CODEC, CREATE/DESTROY_VIDEO_BUFFER,
//!   BEGIN_FRAME, DECODE_MACROBLOCK, DECODE_BITSTREAM, ENCODE_BITSTREAM, END_FRAME):
//!   [`StreamError::RefusedCommand`]. 0.10.4 knows them, and Debian's build has `ENABLE_VIDEO`,
//!   but scanway initialises virglrenderer without `VIRGL_RENDERER_USE_VIDEO`, so the capset
//!   reports no video and Mesa never sends them. (If video is ever enabled: CREATE_VIDEO_BUFFER
//!   carries resources from 5 on, of which 0.10.4 reads at most 3; DECODE_BITSTREAM at 3 and 4;
//!   ENCODE_BITSTREAM at 3, 4 and 5; the other handles are codec and video-buffer objects.)
//!
//! The virgl protocol has no GENERATE_MIPMAP command (Mesa's virgl driver does not implement
//! `generate_mipmap`; the state tracker falls back to blits), so there is nothing to rewrite
//! for it.
//!
//! # What was uncertain
//! - Slot lists (SET_VERTEX_BUFFERS, SET_SHADER_BUFFERS, SET_SHADER_IMAGES,
//!   SET_ATOMIC_BUFFERS) must fill the payload exactly. virglrenderer 0.10.4 rounds the slot
//!   count down and ignores a partial trailing slot (except for SET_VERTEX_BUFFERS, which it
//!   rejects); Mesa never sends one, so refusing it only makes this module stricter. Empty slot
//!   lists pass (virglrenderer rejects SET_ATOMIC_BUFFERS of length 1; that is its business).
//! - The object type is checked for BIND_OBJECT and DESTROY_OBJECT too, although
//!   virglrenderer ignores it for DESTROY_OBJECT; Mesa always writes the real type there.
//! - Exactness was chosen over leniency wherever 0.10.4 itself is exact (every handle-carrying
//!   command but RESOURCE_INLINE_WRITE and TRANSFER3D, which it accepts from a minimum length),
//!   so a longer variant from a newer protocol, which could carry more handles, is refused
//!   rather than passed half-translated.
//! - Handles are not checked against the resource *kind* (buffer vs texture) nor against the
//!   context's attachments; virglrenderer does that after translation.
//! - Checked only against the sources, not against traffic captured from every Mesa version;
//!   the commands Mesa 22.3 and 25.x encode all appear in the tables above with the lengths
//!   Mesa writes.

/// Why a stream was refused. Every `offset` is a dword index into the stream.
///
/// Errors come from the first command that fails; within one command the checks run in the
/// order opcode, object type, length, end of stream, resource handles.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// The command whose header is at `offset` has a payload running past the end of the stream.
    #[error("virgl command at dword {offset} runs past the end of the stream")]
    Truncated {
        /// The command's header.
        offset: usize,
    },
    /// An opcode virglrenderer 0.10.4 does not know (62 and up).
    #[error("unknown virgl command {opcode} at dword {offset}")]
    UnknownCommand {
        /// The header's low byte.
        opcode: u32,
        /// The command's header.
        offset: usize,
    },
    /// A known opcode that scanway does not allow (blob and video commands, see the module docs).
    #[error("virgl command {opcode} at dword {offset} is not allowed")]
    RefusedCommand {
        /// The header's low byte.
        opcode: u32,
        /// The command's header.
        offset: usize,
    },
    /// CREATE/BIND/DESTROY_OBJECT of an object type outside 1..=11.
    #[error("unknown virgl object type {obj_type} at dword {offset}")]
    UnknownObject {
        /// The header's second byte.
        obj_type: u32,
        /// The command's header.
        offset: usize,
    },
    /// A payload length (in dwords) that this command cannot have.
    #[error("virgl command {opcode} at dword {offset} has a bad length {len}")]
    BadLength {
        /// The header's low byte.
        opcode: u32,
        /// The header's payload length, in dwords.
        len: u32,
        /// The command's header.
        offset: usize,
    },
    /// A resource handle the guest does not own: `map` returned `None` for it.
    #[error("resource {guest_id} at dword {offset} is not this guest's")]
    UnknownResource {
        /// The handle as the guest wrote it.
        guest_id: u32,
        /// The handle's own dword (not its command's header).
        offset: usize,
    },
}

/// What [`rewrite_resource_handles`] did to a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteStats {
    /// Commands in the stream (saturating).
    pub commands: u32,
    /// Non-zero resource handles rewritten (saturating); zero handles are not counted.
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
    /// CREATE_VIDEO_CODEC; the video commands run up to END_FRAME (61).
    pub const FIRST_VIDEO: u32 = 53;
    pub const LAST_VIDEO: u32 = 61;
}

/// Object types (`enum virgl_object_type`), the header's second byte for CREATE/BIND/DESTROY_OBJECT.
mod obj {
    pub const BLEND: u32 = 1;
    pub const SAMPLER_VIEW: u32 = 6;
    pub const SURFACE: u32 = 8;
    pub const QUERY: u32 = 9;
    pub const STREAMOUT_TARGET: u32 = 10;
    pub const MSAA_SURFACE: u32 = 11;
}

/// Where one command's resource handles are, for a payload length already checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// No resource handles.
    None,
    /// At these 1-based payload indices, all within the payload.
    At(&'static [usize]),
    /// `fixed` leading dwords, then slots of `stride` dwords whose last dword is a handle; the
    /// slots fill the payload exactly.
    Slots { fixed: usize, stride: usize },
}

/// The layout of one command with payload length `len`, or why it is refused. `offset` is the
/// header's, for the error.
fn layout(opcode: u32, obj_type: u32, len: usize, offset: usize) -> Result<Layout, StreamError> {
    let bad_length = || StreamError::BadLength { opcode, len: len as u32, offset };
    let exact = |want: usize, layout: Layout| if len == want { Ok(layout) } else { Err(bad_length()) };
    let slots = |fixed: usize, stride: usize| match len.checked_sub(fixed) {
        Some(body) if body % stride == 0 => Ok(Layout::Slots { fixed, stride }),
        _ => Err(bad_length()),
    };
    let known_object = || {
        if (obj::BLEND..=obj::MSAA_SURFACE).contains(&obj_type) {
            Ok(Layout::None)
        } else {
            Err(StreamError::UnknownObject { obj_type, offset })
        }
    };
    match opcode {
        op::CREATE_OBJECT => match obj_type {
            obj::SAMPLER_VIEW => exact(6, Layout::At(&[2])),
            obj::SURFACE => exact(5, Layout::At(&[2])),
            obj::QUERY => exact(4, Layout::At(&[4])),
            obj::STREAMOUT_TARGET => exact(4, Layout::At(&[2])),
            obj::MSAA_SURFACE => exact(6, Layout::At(&[2])),
            _ => known_object(),
        },
        op::BIND_OBJECT | op::DESTROY_OBJECT => known_object(),
        op::SET_VERTEX_BUFFERS => slots(0, 3),
        op::DRAW_VBO => match len {
            12 | 14 => Ok(Layout::None),
            20 => Ok(Layout::At(&[15, 20])),
            _ => Err(bad_length()),
        },
        op::RESOURCE_INLINE_WRITE if len >= 12 => Ok(Layout::At(&[1])),
        op::TRANSFER3D if len >= 13 => Ok(Layout::At(&[1])),
        op::RESOURCE_INLINE_WRITE | op::TRANSFER3D => Err(bad_length()),
        op::SET_INDEX_BUFFER => match len {
            1 | 3 => Ok(Layout::At(&[1])),
            _ => Err(bad_length()),
        },
        op::BLIT => exact(21, Layout::At(&[4, 13])),
        op::RESOURCE_COPY_REGION => exact(13, Layout::At(&[1, 6])),
        op::SET_UNIFORM_BUFFER => exact(5, Layout::At(&[5])),
        op::SET_SHADER_BUFFERS => slots(2, 3),
        op::SET_SHADER_IMAGES => slots(2, 5),
        op::LAUNCH_GRID => exact(8, Layout::At(&[7])),
        op::SET_ATOMIC_BUFFERS => slots(1, 3),
        op::GET_QUERY_RESULT_QBO => exact(6, Layout::At(&[2])),
        op::COPY_TRANSFER3D => exact(14, Layout::At(&[1, 12])),
        op::CLEAR_TEXTURE => exact(12, Layout::At(&[1])),
        op::GET_MEMORY_INFO => exact(1, Layout::At(&[1])),
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
        | op::LINK_SHADER => Ok(Layout::None),
        op::PIPE_RESOURCE_CREATE | op::PIPE_RESOURCE_SET_TYPE | op::FIRST_VIDEO..=op::LAST_VIDEO => {
            Err(StreamError::RefusedCommand { opcode, offset })
        }
        _ => Err(StreamError::UnknownCommand { opcode, offset }),
    }
}

/// Rewrites, in place, every resource handle in `stream` from the guest's id to the host's.
///
/// `stream` is a `SUBMIT_3D` command buffer as the guest sent it, decoded as little-endian
/// dwords (a whole number of them). `map` takes a guest resource id and returns the host id, or
/// `None` when the guest does not own that id; it is called once per non-zero handle, in stream
/// order, and should never return 0 (that would turn the handle into "no resource"). Handle 0
/// ("no resource") is left as it is without calling `map`. Every dword that is not a resource
/// handle is left untouched.
///
/// Errors ([`StreamError`]): an opcode virglrenderer 0.10.4 does not know or scanway refuses,
/// an unknown object type, a length the command cannot have, a command running past the end of
/// the stream, or a handle `map` refuses. On error the stream may be partly rewritten and must
/// be discarded, not submitted.
///
/// Never panics and allocates nothing, whatever the input: every `len` is bounded by the
/// stream, and the work is linear in the stream's length.
pub fn rewrite_resource_handles(
    stream: &mut [u32],
    mut map: impl FnMut(u32) -> Option<u32>,
) -> Result<RewriteStats, StreamError> {
    let mut stats = RewriteStats::default();
    let mut offset = 0usize;
    while let Some(&header) = stream.get(offset) {
        let opcode = header & 0xff;
        let obj_type = (header >> 8) & 0xff;
        let len = (header >> 16) as usize;
        let layout = layout(opcode, obj_type, len, offset)?;
        // `offset` < `stream.len()` <= isize::MAX and `len` < 2^16: no overflow.
        let end = offset + 1 + len;
        let Some(payload) = stream.get_mut(offset + 1..end) else {
            return Err(StreamError::Truncated { offset });
        };
        let mut rewrite = |index: usize| -> Result<(), StreamError> {
            // `layout` checked the length; `get_mut` keeps a mistake there from panicking.
            let word = index.checked_sub(1).and_then(|i| payload.get_mut(i)).ok_or(StreamError::BadLength {
                opcode,
                len: len as u32,
                offset,
            })?;
            if *word != 0 {
                let guest_id = *word;
                *word = map(guest_id).ok_or(StreamError::UnknownResource { guest_id, offset: offset + index })?;
                stats.handles = stats.handles.saturating_add(1);
            }
            Ok(())
        };
        match layout {
            Layout::None => {}
            Layout::At(indices) => {
                for &index in indices {
                    rewrite(index)?;
                }
            }
            Layout::Slots { fixed, stride } => {
                for slot in 0..(len - fixed) / stride {
                    rewrite(fixed + stride * (slot + 1))?;
                }
            }
        }
        stats.commands = stats.commands.saturating_add(1);
        offset = end;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use proptest::prelude::*;

    use super::*;

    /// One command: header, then `payload`.
    fn cmd(opcode: u32, obj: u32, payload: &[u32]) -> Vec<u32> {
        let mut v = vec![opcode | (obj << 8) | ((payload.len() as u32) << 16)];
        v.extend_from_slice(payload);
        v
    }

    /// `len` dwords of `fill`, with the 1-based `handles` set to `first, first + 1, ...` (all 0
    /// when `first` is 0).
    fn with_handles(len: usize, fill: u32, handles: &[usize], first: u32) -> Vec<u32> {
        let mut p = vec![fill; len];
        for (n, &i) in handles.iter().enumerate() {
            p[i - 1] = if first == 0 { 0 } else { first + n as u32 };
        }
        p
    }

    /// Guest ids below 100 map to id + `n`; everything else is not the guest's.
    fn owned_plus(n: u32) -> impl FnMut(u32) -> Option<u32> {
        move |h| (h < 100).then_some(h + n)
    }

    /// Indices where `a` and `b` differ.
    fn changed(a: &[u32], b: &[u32]) -> Vec<usize> {
        (0..a.len().min(b.len())).filter(|&i| a[i] != b[i]).collect()
    }

    fn fui(f: f32) -> u32 {
        f.to_bits()
    }

    /// (opcode, object type, payload length, 1-based handle indices): every handle-carrying
    /// command shape virglrenderer 0.10.4 accepts.
    const HANDLE_SHAPES: &[(u32, u32, usize, &[usize])] = &[
        (1, 6, 6, &[2]),                                                            // CREATE_OBJECT SAMPLER_VIEW
        (1, 8, 5, &[2]),                                                            // CREATE_OBJECT SURFACE
        (1, 9, 4, &[4]),              // CREATE_OBJECT QUERY (result buffer)
        (1, 10, 4, &[2]),             // CREATE_OBJECT STREAMOUT_TARGET
        (1, 11, 6, &[2]),             // CREATE_OBJECT MSAA_SURFACE
        (6, 0, 3, &[3]),              // SET_VERTEX_BUFFERS, 1 buffer
        (6, 0, 9, &[3, 6, 9]),        // SET_VERTEX_BUFFERS, 3 buffers
        (8, 0, 20, &[15, 20]),        // DRAW_VBO, indirect
        (9, 0, 12, &[1]),             // RESOURCE_INLINE_WRITE, 1 dword of data
        (9, 0, 40, &[1]),             // RESOURCE_INLINE_WRITE, 29 dwords of data
        (11, 0, 1, &[1]),             // SET_INDEX_BUFFER, unbind form
        (11, 0, 3, &[1]),             // SET_INDEX_BUFFER
        (16, 0, 21, &[4, 13]),        // BLIT
        (17, 0, 13, &[1, 6]),         // RESOURCE_COPY_REGION
        (27, 0, 5, &[5]),             // SET_UNIFORM_BUFFER
        (34, 0, 5, &[5]),             // SET_SHADER_BUFFERS, 1 slot
        (34, 0, 11, &[5, 8, 11]),     // SET_SHADER_BUFFERS, 3 slots
        (35, 0, 7, &[7]),             // SET_SHADER_IMAGES, 1 slot
        (35, 0, 17, &[7, 12, 17]),    // SET_SHADER_IMAGES, 3 slots
        (37, 0, 8, &[7]),             // LAUNCH_GRID
        (40, 0, 4, &[4]),             // SET_ATOMIC_BUFFERS, 1 slot
        (40, 0, 13, &[4, 7, 10, 13]), // SET_ATOMIC_BUFFERS, 4 slots
        (42, 0, 6, &[2]),             // GET_QUERY_RESULT_QBO
        (43, 0, 13, &[1]),            // TRANSFER3D
        (45, 0, 14, &[1, 12]),        // COPY_TRANSFER3D
        (47, 0, 12, &[1]),            // CLEAR_TEXTURE
        (50, 0, 1, &[1]),             // GET_MEMORY_INFO
        (6, 0, 48, &[3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45, 48]), // SET_VERTEX_BUFFERS, 16 buffers
    ];

    /// Commands without resource handles, with lengths Mesa sends.
    const PLAIN_SHAPES: &[(u32, u32, usize)] = &[
        (0, 0, 0),    // NOP
        (0, 0, 3),    // NOP with padding
        (1, 1, 11),   // CREATE_OBJECT BLEND
        (1, 2, 9),    // CREATE_OBJECT RASTERIZER
        (1, 3, 5),    // CREATE_OBJECT DSA
        (1, 4, 9),    // CREATE_OBJECT SHADER
        (1, 5, 5),    // CREATE_OBJECT VERTEX_ELEMENTS
        (1, 7, 9),    // CREATE_OBJECT SAMPLER_STATE
        (2, 1, 1),    // BIND_OBJECT BLEND
        (2, 5, 1),    // BIND_OBJECT VERTEX_ELEMENTS
        (3, 8, 1),    // DESTROY_OBJECT SURFACE
        (3, 4, 1),    // DESTROY_OBJECT SHADER
        (4, 0, 7),    // SET_VIEWPORT_STATE
        (5, 0, 3),    // SET_FRAMEBUFFER_STATE
        (7, 0, 8),    // CLEAR
        (8, 0, 12),   // DRAW_VBO
        (8, 0, 14),   // DRAW_VBO with tessellation / draw id
        (10, 0, 4),   // SET_SAMPLER_VIEWS
        (12, 0, 6),   // SET_CONSTANT_BUFFER
        (13, 0, 1),   // SET_STENCIL_REF
        (14, 0, 4),   // SET_BLEND_COLOR
        (15, 0, 3),   // SET_SCISSOR_STATE
        (18, 0, 3),   // BIND_SAMPLER_STATES
        (19, 0, 1),   // BEGIN_QUERY
        (20, 0, 1),   // END_QUERY
        (21, 0, 2),   // GET_QUERY_RESULT
        (22, 0, 32),  // SET_POLYGON_STIPPLE
        (23, 0, 32),  // SET_CLIP_STATE
        (24, 0, 1),   // SET_SAMPLE_MASK
        (25, 0, 3),   // SET_STREAMOUT_TARGETS
        (26, 0, 3),   // SET_RENDER_CONDITION
        (28, 0, 1),   // SET_SUB_CTX
        (29, 0, 1),   // CREATE_SUB_CTX
        (30, 0, 1),   // DESTROY_SUB_CTX
        (31, 0, 2),   // BIND_SHADER
        (32, 0, 6),   // SET_TESS_STATE
        (33, 0, 1),   // SET_MIN_SAMPLES
        (36, 0, 1),   // MEMORY_BARRIER
        (38, 0, 2),   // SET_FRAMEBUFFER_STATE_NO_ATTACH
        (39, 0, 1),   // TEXTURE_BARRIER
        (41, 0, 2),   // SET_DEBUG_FLAGS
        (44, 0, 0),   // END_TRANSFERS, reserved area full
        (44, 0, 100), // END_TRANSFERS, padding
        (46, 0, 2),   // SET_TWEAKS
        (51, 0, 3),   // SEND_STRING_MARKER
        (52, 0, 6),   // LINK_SHADER
        (6, 0, 0),    // SET_VERTEX_BUFFERS, none
        (34, 0, 2),   // SET_SHADER_BUFFERS, no slots
        (35, 0, 2),   // SET_SHADER_IMAGES, no slots
        (40, 0, 1),   // SET_ATOMIC_BUFFERS, no slots
    ];

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
            let stats =
                rewrite_resource_handles(&mut s, owned_plus(1000)).unwrap_or_else(|e| panic!("{stream:?}: {e}"));
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
            (
                "draw indirect",
                cmd(8, 0, &[0, 0, 4, 0, 1, 0, 0, 0, 0, 0, !0, 0, 3, 0, 20, 16, 20, 3, 4, 21]),
                vec![15, 20],
            ),
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
        assert_eq!(
            rewrite_resource_handles(&mut s, owned),
            Err(StreamError::UnknownResource { guest_id: 9, offset: 2 })
        );
        // BLIT's source, in the second command.
        let mut s = cmd(11, 0, &[3]);
        s.extend(cmd(16, 0, &with_handles(21, 0, &[4, 13], 3)));
        assert_eq!(
            rewrite_resource_handles(&mut s, owned),
            Err(StreamError::UnknownResource { guest_id: 4, offset: 2 + 13 })
        );
        // The second vertex buffer.
        let mut s = cmd(6, 0, &[16, 0, 3, 16, 0, 7]);
        assert_eq!(
            rewrite_resource_handles(&mut s, owned),
            Err(StreamError::UnknownResource { guest_id: 7, offset: 6 })
        );
        // The indirect draw count buffer.
        let mut s = cmd(8, 0, &with_handles(20, 0, &[15, 20], 3));
        assert_eq!(
            rewrite_resource_handles(&mut s, owned),
            Err(StreamError::UnknownResource { guest_id: 4, offset: 20 })
        );
    }

    /// A random valid command and the stream indices (within it) of its non-zero handles.
    fn valid_command() -> impl Strategy<Value = (Vec<u32>, Vec<usize>)> {
        let with_handles = (0..HANDLE_SHAPES.len(), any::<u32>(), proptest::collection::vec(0u32..100, 6)).prop_map(
            |(i, fill, ids)| {
                let (opcode, obj, len, at) = HANDLE_SHAPES[i];
                let mut p = vec![fill; len];
                let mut nonzero = Vec::new();
                for (n, &j) in at.iter().enumerate() {
                    p[j - 1] = ids[n % ids.len()];
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
        let vertex_buffers =
            proptest::collection::vec((any::<u32>(), any::<u32>(), 0u32..100), 0..17).prop_map(|vbs| {
                let p: Vec<u32> = vbs.iter().flat_map(|&(stride, off, r)| [stride, off, r]).collect();
                let nonzero = vbs.iter().enumerate().filter(|(_, v)| v.2 != 0).map(|(k, _)| 3 * k + 3).collect();
                (cmd(6, 0, &p), nonzero)
            });
        let garbage = proptest::collection::vec(any::<u32>(), 0..64).prop_map(|p| (cmd(44, 0, &p), Vec::new()));
        prop_oneof![4 => with_handles, 3 => plain, 1 => vertex_buffers, 1 => garbage]
    }

    proptest! {
        /// Any dwords at all: an answer, no panic.
        #[test]
        fn random_streams_never_panic(mut s in proptest::collection::vec(any::<u32>(), 0..256)) {
            let _ = rewrite_resource_handles(&mut s, |h| h.checked_add(1));
            let _ = rewrite_resource_handles(&mut s, |_| None);
        }

        /// Headers with known opcodes and short lengths, mixed with random dwords, reach every
        /// per-command path; with the identity map an accepted stream comes back unchanged.
        #[test]
        fn plausible_streams_never_panic(
            words in proptest::collection::vec((0u32..66, 0u32..13, 0u32..24, any::<u32>(), any::<bool>()), 0..64)
        ) {
            let mut s: Vec<u32> = words
                .iter()
                .map(|&(opcode, obj, len, word, header)| if header { opcode | obj << 8 | len << 16 } else { word })
                .collect();
            let original = s.clone();
            if let Ok(stats) = rewrite_resource_handles(&mut s, Some) {
                prop_assert_eq!(&s, &original);
                prop_assert!(stats.commands as usize <= s.len());
                prop_assert!(stats.handles as usize <= s.len());
            }
        }

        /// Streams of valid commands: exactly the handles change, and mapping back restores them.
        #[test]
        fn valid_streams_round_trip(cmds in proptest::collection::vec(valid_command(), 0..16)) {
            let original: Vec<u32> = cmds.iter().flat_map(|c| c.0.iter().copied()).collect();
            let mut expected = Vec::new();
            let mut base = 0;
            for (c, at) in &cmds {
                expected.extend(at.iter().map(|&i| base + i));
                base += c.len();
            }
            let mut s = original.clone();
            let there = rewrite_resource_handles(&mut s, owned_plus(1000)).unwrap();
            prop_assert_eq!(there, RewriteStats { commands: cmds.len() as u32, handles: expected.len() as u32 });
            prop_assert_eq!(changed(&s, &original), expected);
            let back = rewrite_resource_handles(&mut s, |h| h.checked_sub(1000).filter(|&g| g < 100)).unwrap();
            prop_assert_eq!(there, back);
            prop_assert_eq!(s, original);
        }

        /// Cutting a valid stream anywhere inside a command is refused as truncated, at that
        /// command; cutting between commands leaves a valid stream.
        #[test]
        fn cut_streams(cmds in proptest::collection::vec(valid_command(), 1..8), cut in any::<prop::sample::Index>()) {
            let full: Vec<u32> = cmds.iter().flat_map(|c| c.0.iter().copied()).collect();
            let cut = cut.index(full.len() + 1);
            let mut starts = vec![0];
            for (c, _) in &cmds {
                starts.push(starts.last().unwrap() + c.len());
            }
            let mut s = full[..cut].to_vec();
            let result = rewrite_resource_handles(&mut s, owned_plus(1000));
            if let Some(n) = starts.iter().position(|&b| b == cut) {
                prop_assert_eq!(result.map(|st| st.commands as usize), Ok(n));
            } else {
                let cmd_start = *starts.iter().filter(|&&b| b < cut).max().unwrap();
                prop_assert_eq!(result, Err(StreamError::Truncated { offset: cmd_start }));
            }
        }
    }
}
