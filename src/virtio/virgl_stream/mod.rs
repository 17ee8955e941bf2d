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
//!
//! # Files
//! This file has the public API: [`rewrite_resource_handles`], the stream walker, with its
//! [`StreamError`] and [`RewriteStats`]. `layout` holds the opcode and object-type numbers and
//! the table above in code: where each command's resource handles are, and which commands and
//! lengths are refused. `tests` checks both against the table, by example and by property.

mod layout;
#[cfg(test)]
mod tests;

use layout::{Layout, layout};

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
