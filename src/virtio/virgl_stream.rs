//! TEMPORARY STUB (being written by a helper): virgl command stream rewriting.

/// Why a stream was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// Not implemented yet.
    #[error("stream rewriting not available")]
    Unavailable,
}

/// Counts of a rewrite.
pub struct RewriteStats {
    pub commands: u32,
    pub handles: u32,
}

/// Rewrite resource handles (stub: rejects everything).
pub fn rewrite_resource_handles(
    _stream: &mut [u32],
    _map: impl FnMut(u32) -> Option<u32>,
) -> Result<RewriteStats, StreamError> {
    Err(StreamError::Unavailable)
}
