//! Tests of the stream rewriter: helpers and the table of command shapes here, tests by
//! idea beside (`accepted`: streams and commands that pass; `refused`: every error;
//! `props`: property tests over random and valid streams).

mod accepted;
mod props;
mod refused;

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
    (1, 9, 4, &[4]),                                                            // CREATE_OBJECT QUERY (result buffer)
    (1, 10, 4, &[2]),                                                           // CREATE_OBJECT STREAMOUT_TARGET
    (1, 11, 6, &[2]),                                                           // CREATE_OBJECT MSAA_SURFACE
    (6, 0, 3, &[3]),                                                            // SET_VERTEX_BUFFERS, 1 buffer
    (6, 0, 9, &[3, 6, 9]),                                                      // SET_VERTEX_BUFFERS, 3 buffers
    (8, 0, 20, &[15, 20]),                                                      // DRAW_VBO, indirect
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
