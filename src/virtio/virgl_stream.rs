//! Resource handles inside virgl command streams (`VIRTIO_GPU_CMD_SUBMIT_3D` payloads).
//!
//! A stream is a sequence of commands, each a header dword `len << 16 | obj_type << 8 | opcode`
//! followed by `len` payload dwords (Gallium virgl protocol, virglrenderer's
//! `src/virgl_protocol.h`). Some payload dwords name *resources* (virtio-gpu resource ids); the
//! rest are constants or ids of objects that live inside the guest's own context (surfaces,
//! sampler views, queries, shaders), which virglrenderer already keeps per context.
//! [`rewrite_resource_handles`] maps every resource handle from the guest's id space to the
//! host's, and refuses any command it does not know, so no handle reaches virglrenderer
//! untranslated.
//!
//! Resource handles by opcode (payload dword index, 1 = the first dword after the header):
//!
//! | opcode | command | resource handles |
//! | --- | --- | --- |
//! | 1 | CREATE_OBJECT | SAMPLER_VIEW, SURFACE, MSAA_SURFACE, STREAMOUT_TARGET: 2; QUERY: 4; other objects: none |
//! | 6 | SET_VERTEX_BUFFERS | `3k + 3` for each (stride, offset, handle) triple |
//! | 8 | DRAW_VBO | 15 (indirect buffer) and 20 (indirect draw count), when the command is that long |
//! | 9 | RESOURCE_INLINE_WRITE | 1 |
//! | 11 | SET_INDEX_BUFFER | 1 |
//! | 16 | BLIT | 4 (destination), 13 (source) |
//! | 17 | RESOURCE_COPY_REGION | 1 (destination), 6 (source) |
//! | 27 | SET_UNIFORM_BUFFER | 5 |
//! | 34 | SET_SHADER_BUFFERS | `3k + 5` |
//! | 35 | SET_SHADER_IMAGES | `5k + 7` |
//! | 37 | LAUNCH_GRID | 7 (indirect buffer) |
//! | 40 | SET_ATOMIC_BUFFERS | `3k + 4` |
//! | 42 | GET_QUERY_RESULT_QBO | 2 |
//! | 43 | TRANSFER3D | 1 |
//! | 45 | COPY_TRANSFER3D | 1 (destination), 12 (source) |
//! | 47 | CLEAR_TEXTURE | 1 |
//! | 50 | GET_MEMORY_INFO | 1 |
//!
//! Every other opcode up to LINK_SHADER (52, the last one virglrenderer 0.10.4 knows; Mesa 22
//! sends it to link a program) carries no resource handle and passes
//! unchanged, except PIPE_RESOURCE_CREATE (48) and PIPE_RESOURCE_SET_TYPE (49): they create or
//! retype blob resources, which scanway does not offer (no `VIRTIO_GPU_F_RESOURCE_BLOB`), so they
//! are refused. Handle 0 means "no resource" and stays 0. Object ids (surfaces, views, queries)
//! are not rewritten: they are per virglrenderer context, and each guest context is its own
//! virglrenderer context.

/// Why a stream was refused. Offsets are dword indices into the stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// A command's payload runs past the end of the stream.
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
    /// A resource handle the guest does not own.
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

const SEND_STRING_MARKER: u32 = 51;
/// LINK_SHADER (virglrenderer 0.10.x): the shader objects of a program; no resources.
const LINK_SHADER: u32 = 52;
const PIPE_RESOURCE_CREATE: u32 = 48;
const PIPE_RESOURCE_SET_TYPE: u32 = 49;
/// Object types 1..=11 (BLEND .. MSAA_SURFACE).
const MAX_OBJECT_TYPE: u32 = 11;

/// Where a command's resource handles are.
enum Handles {
    None,
    /// Fixed payload indices, all required.
    At(&'static [u32]),
    /// Fixed indices present only when the command is long enough.
    Optional(&'static [u32]),
    /// `first + stride * k` for every element; `len - header` must be a multiple of `stride`.
    Every {
        header: u32,
        stride: u32,
        first: u32,
    },
}

fn handles_of(opcode: u32, obj_type: u32, len: u32, offset: usize) -> Result<Handles, StreamError> {
    let object = |t: u32| {
        if (1..=MAX_OBJECT_TYPE).contains(&t) {
            Ok(())
        } else {
            Err(StreamError::UnknownObject { obj_type: t, offset })
        }
    };
    Ok(match opcode {
        1 => {
            object(obj_type)?;
            match obj_type {
                6 | 8 | 10 | 11 => Handles::At(&[2]),
                9 => Handles::At(&[4]),
                _ => Handles::None,
            }
        }
        2 | 3 => {
            object(obj_type)?;
            Handles::None
        }
        6 => Handles::Every { header: 0, stride: 3, first: 3 },
        8 => Handles::Optional(&[15, 20]),
        9 | 11 | 43 | 47 | 50 => Handles::At(&[1]),
        16 => Handles::At(&[4, 13]),
        17 => Handles::At(&[1, 6]),
        27 => Handles::At(&[5]),
        34 => Handles::Every { header: 2, stride: 3, first: 5 },
        35 => Handles::Every { header: 2, stride: 5, first: 7 },
        37 => Handles::Optional(&[7]),
        40 => Handles::Every { header: 1, stride: 3, first: 4 },
        42 => Handles::At(&[2]),
        45 => Handles::At(&[1, 12]),
        PIPE_RESOURCE_CREATE | PIPE_RESOURCE_SET_TYPE => return Err(StreamError::UnknownCommand { opcode, offset }),
        0
        | 4
        | 5
        | 7
        | 10
        | 12..=15
        | 18..=26
        | 28..=33
        | 36
        | 38
        | 39
        | 41
        | 44
        | 46
        | SEND_STRING_MARKER
        | LINK_SHADER => {
            let _ = len;
            Handles::None
        }
        _ => return Err(StreamError::UnknownCommand { opcode, offset }),
    })
}

/// Rewrite, in place, every resource handle of `stream` (the SUBMIT_3D payload as
/// little-endian-decoded dwords) through `map` (guest resource id -> host resource id; `None`:
/// the guest does not own it). Handle 0 stays 0.
///
/// Errors: a truncated command, an unknown opcode or object type, an impossible length, or a
/// handle `map` refuses ([`StreamError`]). On error the stream may be partly rewritten; the
/// caller discards it. Never panics; allocates nothing.
pub fn rewrite_resource_handles(
    stream: &mut [u32],
    mut map: impl FnMut(u32) -> Option<u32>,
) -> Result<RewriteStats, StreamError> {
    let mut stats = RewriteStats::default();
    let mut pos = 0usize;
    while pos < stream.len() {
        let header = stream.get(pos).copied().unwrap_or(0);
        let (opcode, obj_type, len) = (header & 0xff, (header >> 8) & 0xff, header >> 16);
        let end = pos.checked_add(1 + len as usize).filter(|&e| e <= stream.len());
        let Some(end) = end else {
            return Err(StreamError::Truncated { offset: pos });
        };
        let payload = stream.get_mut(pos + 1..end).unwrap_or_default();
        let mut rewrite = |index: u32| -> Result<(), StreamError> {
            // `index` is 1-based from the header.
            let slot =
                payload.get_mut(index as usize - 1).ok_or(StreamError::BadLength { opcode, len, offset: pos })?;
            if *slot != 0 {
                *slot =
                    map(*slot).ok_or(StreamError::UnknownResource { handle: *slot, offset: pos + index as usize })?;
                stats.handles += 1;
            }
            Ok(())
        };
        match handles_of(opcode, obj_type, len, pos)? {
            Handles::None => {}
            Handles::At(indices) => {
                for &i in indices {
                    rewrite(i)?;
                }
            }
            Handles::Optional(indices) => {
                for &i in indices.iter().filter(|&&i| i <= len) {
                    rewrite(i)?;
                }
            }
            Handles::Every { header, stride, first } => {
                let body = len.checked_sub(header).filter(|b| b % stride == 0);
                let Some(body) = body else {
                    return Err(StreamError::BadLength { opcode, len, offset: pos });
                };
                for k in 0..body / stride {
                    rewrite(first + stride * k)?;
                }
            }
        }
        stats.commands += 1;
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

    fn plus(n: u32) -> impl FnMut(u32) -> Option<u32> {
        move |h| Some(h + n)
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
        let changed: Vec<usize> = (0..s.len()).filter(|&i| s[i] != original[i]).collect();
        assert_eq!(changed, vec![2], "only the surface's resource handle changes");
    }

    #[test]
    fn every_handle_carrying_command() {
        let cases: Vec<(Vec<u32>, Vec<usize>)> = vec![
            (cmd(1, 6, &[1, 5, 0, 0, 0, 0]), vec![2]),
            (cmd(1, 9, &[1, 0, 0, 5]), vec![4]),
            (cmd(1, 10, &[1, 5, 0, 16]), vec![2]),
            (cmd(1, 11, &[1, 5, 0, 0, 0, 4]), vec![2]),
            (cmd(6, 0, &[16, 0, 5, 16, 0, 6]), vec![3, 6]),
            (cmd(8, 0, &[0; 12]), vec![]),
            (cmd(8, 0, &[5; 20]), vec![15, 20]),
            (cmd(9, 0, &[5, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]), vec![1]),
            (cmd(11, 0, &[5, 2, 0]), vec![1]),
            (cmd(16, 0, &[0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]), vec![4, 13]),
            (cmd(17, 0, &[5, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]), vec![1, 6]),
            (cmd(27, 0, &[0, 0, 0, 64, 5]), vec![5]),
            (cmd(34, 0, &[0, 0, 0, 64, 5, 0, 64, 6]), vec![5, 8]),
            (cmd(35, 0, &[0, 0, 1, 0, 0, 0, 5]), vec![7]),
            (cmd(37, 0, &[1, 1, 1, 1, 1, 1, 5, 0]), vec![7]),
            (cmd(40, 0, &[0, 0, 4, 5]), vec![4]),
            (cmd(42, 0, &[1, 5, 0, 0, 0, 0]), vec![2]),
            (cmd(43, 0, &[5, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1]), vec![1]),
            (cmd(45, 0, &[5, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 6, 0, 0]), vec![1, 12]),
            (cmd(47, 0, &[5, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0]), vec![1]),
            (cmd(50, 0, &[5]), vec![1]),
        ];
        for (stream, expect) in cases {
            let mut s = stream.clone();
            rewrite_resource_handles(&mut s, plus(1000)).unwrap_or_else(|e| panic!("{stream:?}: {e}"));
            let changed: Vec<usize> = (0..s.len()).filter(|&i| s[i] != stream[i]).collect();
            assert_eq!(changed, expect, "{stream:?}");
        }
    }

    #[test]
    fn refusals() {
        let mut s = cmd(52, 0, &[1, 2, 0, 0, 0, 0]);
        assert_eq!(rewrite_resource_handles(&mut s, plus(1)).unwrap().handles, 0);
        let mut s = cmd(53, 0, &[0]);
        assert!(matches!(rewrite_resource_handles(&mut s, plus(1)), Err(StreamError::UnknownCommand { .. })));
        let mut s = cmd(0xfe, 0, &[0]);
        assert_eq!(
            rewrite_resource_handles(&mut s, plus(1)),
            Err(StreamError::UnknownCommand { opcode: 0xfe, offset: 0 })
        );
        let mut s = cmd(48, 0, &[0; 11]);
        assert!(matches!(rewrite_resource_handles(&mut s, plus(1)), Err(StreamError::UnknownCommand { .. })));
        let mut s = cmd(1, 12, &[1]);
        assert!(matches!(rewrite_resource_handles(&mut s, plus(1)), Err(StreamError::UnknownObject { .. })));
        let mut s = vec![7 | (8 << 16), 0, 0];
        assert_eq!(rewrite_resource_handles(&mut s, plus(1)), Err(StreamError::Truncated { offset: 0 }));
        let mut s = cmd(6, 0, &[0, 0]);
        assert!(matches!(rewrite_resource_handles(&mut s, plus(1)), Err(StreamError::BadLength { .. })));
        let mut s = cmd(9, 0, &[]);
        assert!(matches!(rewrite_resource_handles(&mut s, plus(1)), Err(StreamError::BadLength { .. })));
        let mut s = cmd(1, 8, &[1, 9, 0, 0, 0]);
        let owned = |h| (h == 3).then_some(33);
        assert_eq!(rewrite_resource_handles(&mut s, owned), Err(StreamError::UnknownResource { handle: 9, offset: 2 }));
        // Handle 0 is "none" and needs no mapping.
        let mut s = cmd(11, 0, &[0]);
        assert_eq!(rewrite_resource_handles(&mut s, |_| None).unwrap().handles, 0);
        assert_eq!(rewrite_resource_handles(&mut [], |_| None).unwrap(), RewriteStats::default());
    }

    fn valid_command() -> impl Strategy<Value = Vec<u32>> {
        prop_oneof![
            (1u32..100).prop_map(|r| cmd(1, 8, &[1, r, 1, 0, 0])),
            proptest::collection::vec(1u32..100, 0..5)
                .prop_map(|rs| { cmd(6, 0, &rs.iter().flat_map(|&r| [16, 0, r]).collect::<Vec<_>>()) }),
            (1u32..100, 1u32..100).prop_map(|(a, b)| cmd(17, 0, &[a, 0, 0, 0, 0, b, 0, 0, 0, 0, 0, 0, 0])),
            (1u32..100).prop_map(|r| cmd(43, 0, &[r, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1])),
            Just(cmd(7, 0, &[4, 0, 0, 0, 0, 0, 0, 0])),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_streams_never_panic(mut s in proptest::collection::vec(any::<u32>(), 0..64)) {
            let _ = rewrite_resource_handles(&mut s, |h| h.checked_add(1));
        }

        #[test]
        fn valid_streams_round_trip(cmds in proptest::collection::vec(valid_command(), 0..16)) {
            let original: Vec<u32> = cmds.concat();
            let mut s = original.clone();
            let there = rewrite_resource_handles(&mut s, |h| Some(h + 1000)).unwrap();
            prop_assert_eq!(there.commands as usize, cmds.len());
            let back = rewrite_resource_handles(&mut s, |h| h.checked_sub(1000)).unwrap();
            prop_assert_eq!(there, back);
            prop_assert_eq!(s, original);
        }
    }
}
