//! Where each virgl command keeps its resource handles: the opcode and object-type numbers of
//! virglrenderer 0.10.4 and the per-command table of the parent module's docs, in code.
//!
//! [`layout`] maps one command header (opcode, object type, payload length) to a [`Layout`],
//! the payload positions of its resource handles, or to the [`StreamError`] that refuses it.
//! The walker in the parent module applies the layout; this file only classifies. A change
//! here must change the parent's table too (the tests check every row of it).

use super::StreamError;

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
pub(super) enum Layout {
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
pub(super) fn layout(opcode: u32, obj_type: u32, len: usize, offset: usize) -> Result<Layout, StreamError> {
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
