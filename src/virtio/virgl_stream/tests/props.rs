//! Property tests: random streams never panic; valid streams round-trip and cut cleanly.

use super::*;

/// A random valid command and the stream indices (within it) of its non-zero handles.
fn valid_command() -> impl Strategy<Value = (Vec<u32>, Vec<usize>)> {
    let with_handles =
        (0..HANDLE_SHAPES.len(), any::<u32>(), proptest::collection::vec(0u32..100, 6)).prop_map(|(i, fill, ids)| {
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
        });
    let plain = (0..PLAIN_SHAPES.len(), any::<u32>()).prop_map(|(i, fill)| {
        let (opcode, obj, len) = PLAIN_SHAPES[i];
        (cmd(opcode, obj, &vec![fill; len]), Vec::new())
    });
    let vertex_buffers = proptest::collection::vec((any::<u32>(), any::<u32>(), 0u32..100), 0..17).prop_map(|vbs| {
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
