//! Recording a guest's requests as fuzz seeds (`scanway run --record-commands DIR`).
//!
//! The format is the input of the `ctrl_commands` fuzz target (fuzz/fuzz_targets/): 8 bytes of
//! device configuration (scanout count; preferred width and height, u16 LE each; 3 zero bytes),
//! then one record per request, `[flags u8][len u16 LE][len bytes]`, flags bit 0 set for the
//! cursor queue. Requests longer than 65535 bytes are cut there; a recording stops at
//! [`MAX_RECORDING`] bytes so that a long-running guest cannot fill the disk.

use std::io::Write;

use super::{GpuConfig, QueueKind};

/// Most bytes one recording writes.
pub const MAX_RECORDING: u64 = 4 << 20;

/// Where a device writes its requests (see the module documentation).
pub struct Recorder {
    out: Box<dyn Write>,
    written: u64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("written", &self.written).finish_non_exhaustive()
    }
}

impl Recorder {
    /// Start a recording on `out` for a device configured as `config`. Errors: writing the
    /// header failed.
    pub fn new(mut out: Box<dyn Write>, config: &GpuConfig) -> std::io::Result<Recorder> {
        let side = |v: u32| u16::try_from(v).unwrap_or(u16::MAX).to_le_bytes();
        let (w, h) = (side(config.preferred_size.0), side(config.preferred_size.1));
        let scanouts = u8::try_from(config.num_scanouts).unwrap_or(u8::MAX);
        out.write_all(&[scanouts, w[0], w[1], h[0], h[1], 0, 0, 0])?;
        Ok(Recorder { out, written: 8 })
    }

    /// Append one request; stops (silently) at [`MAX_RECORDING`] or on the first write error.
    pub(super) fn record(&mut self, kind: QueueKind, request: &[u8]) {
        let len = u16::try_from(request.len()).unwrap_or(u16::MAX);
        let record = 3 + u64::from(len);
        if self.written.saturating_add(record) > MAX_RECORDING {
            return;
        }
        let flags = u8::from(matches!(kind, QueueKind::Cursor));
        let [lo, hi] = len.to_le_bytes();
        let body = request.get(..usize::from(len)).unwrap_or(request);
        if self.out.write_all(&[flags, lo, hi]).and_then(|()| self.out.write_all(body)).is_err() {
            self.written = MAX_RECORDING;
            return;
        }
        self.written += record;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{cell::RefCell, rc::Rc};

    #[derive(Clone, Default)]
    struct Shared(Rc<RefCell<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn records_in_the_fuzz_targets_format() {
        let sink = Shared::default();
        let config = GpuConfig { num_scanouts: 2, preferred_size: (1280, 800), ..GpuConfig::default() };
        let mut r = Recorder::new(Box::new(sink.clone()), &config).unwrap();
        r.record(QueueKind::Control, &[1, 2, 3]);
        r.record(QueueKind::Cursor, &[9]);
        let bytes = sink.0.borrow().clone();
        assert_eq!(bytes, [2, 0x00, 0x05, 0x20, 0x03, 0, 0, 0, 0, 3, 0, 1, 2, 3, 1, 1, 0, 9]);
    }

    #[test]
    fn stops_at_the_cap() {
        let sink = Shared::default();
        let mut r = Recorder::new(Box::new(sink.clone()), &GpuConfig::default()).unwrap();
        let big = vec![0u8; 60_000];
        for _ in 0..100 {
            r.record(QueueKind::Control, &big);
        }
        assert!(sink.0.borrow().len() as u64 <= MAX_RECORDING);
    }
}
