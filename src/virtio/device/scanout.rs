//! Scanouts: GET_DISPLAY_INFO, GET_EDID, SET_SCANOUT and RESOURCE_FLUSH (5.7.6.8), and
//! the display size scanway offers each scanout.

#[allow(clippy::wildcard_imports)]
use super::*;

/// State of one scanout (display output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanout {
    /// Resource shown, 0 = disabled.
    pub resource_id: u32,
    /// Source rectangle within the resource, pixels (`Rect::default()` when disabled).
    pub rect: Rect,
    /// Width of the display mode offered to the guest, pixels.
    pub width: u32,
    /// Height of the display mode offered to the guest, pixels.
    pub height: u32,
    /// Number of RESOURCE_FLUSHes of the shown resource (those whose rect,
    /// clipped to the resource, is non-empty, i.e. that emitted
    /// [`GpuEvent::ResourceFlush`]) since SET_SCANOUT (wrapping; reset by
    /// SET_SCANOUT, by destroying the resource and by [`Gpu::reset`]).
    pub flush_count: u64,
    /// Current cursor image, `None` when hidden.
    pub cursor: Option<CursorImage>,
    /// Cursor position in scanout coordinates, pixels (the hot spot's position).
    pub cursor_pos: (i32, i32),
}

impl Scanout {
    pub(super) fn new(width: u32, height: u32) -> Scanout {
        Scanout {
            resource_id: 0,
            rect: Rect::default(),
            width,
            height,
            flush_count: 0,
            cursor: None,
            cursor_pos: (0, 0),
        }
    }
}

impl Gpu {
    /// Changes the display mode offered for `scanout_id` by later
    /// GET_DISPLAY_INFO / GET_EDID (e.g. after a window resize); sides are
    /// clamped to 1..=16384. Returns false if the scanout does not exist. The
    /// caller should then raise `VIRTIO_GPU_EVENT_DISPLAY` in the config space
    /// and send a configuration change notification.
    pub fn set_display_size(&mut self, scanout_id: u32, width: u32, height: u32) -> bool {
        match self.scanouts.get_mut(scanout_id as usize) {
            Some(s) => {
                s.width = width.clamp(1, MAX_RESOURCE_DIMENSION);
                s.height = height.clamp(1, MAX_RESOURCE_DIMENSION);
                true
            }
            None => false,
        }
    }

    pub(super) fn get_display_info(&mut self) -> Result<Reply, CommandError> {
        let mut info = Box::new(RespDisplayInfo::default());
        let mut x: u32 = 0;
        for (mode, s) in info.pmodes.iter_mut().zip(&self.scanouts) {
            mode.r = Rect::new(x, 0, s.width, s.height).into();
            mode.enabled = 1.into();
            x = x.saturating_add(s.width);
        }
        Ok(Reply::DisplayInfo(info))
    }

    pub(super) fn get_edid(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: GetEdid = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let s = self.scanouts.get(cmd.scanout.to_native() as usize).ok_or(GuestError::InvalidScanoutId)?;
        let blob = edid::generate(s.width, s.height, &self.config.name);
        let mut resp = Box::new(RespEdid::default());
        resp.edid.get_mut(..blob.len()).ok_or(GuestError::UnsupportedCommand)?.copy_from_slice(&blob);
        resp.size = Le32::from(blob.len() as u32);
        Ok(Reply::Edid(resp))
    }

    pub(super) fn set_scanout(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: SetScanout = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let scanout_id = cmd.scanout_id.to_native();
        let resource_id = cmd.resource_id.to_native();
        let r = Rect::from(cmd.r);
        debug!(scanout_id, resource_id, ?r, "SET_SCANOUT");
        if scanout_id >= self.num_scanouts() {
            return Err(GuestError::InvalidScanoutId.into());
        }
        let rect = if resource_id == 0 {
            Rect::default()
        } else {
            let res = self.resources.get(&resource_id).ok_or(GuestError::UnknownResource)?;
            if r.is_empty() {
                return Err(GuestError::EmptyRect.into());
            }
            if !r.fits_in(res.width, res.height) {
                return Err(GuestError::RectOutOfBounds.into());
            }
            r
        };
        let s = self.scanouts.get_mut(scanout_id as usize).ok_or(GuestError::InvalidScanoutId)?;
        s.resource_id = resource_id;
        s.rect = rect;
        self.events.push(GpuEvent::ScanoutSet { scanout_id, resource_id, rect });
        Ok(Reply::NoData)
    }

    pub(super) fn resource_flush(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: ResourceFlush = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let resource_id = cmd.resource_id.to_native();
        let r = Rect::from(cmd.r);
        debug!(resource_id, ?r, "RESOURCE_FLUSH");
        let res = self.resources.get(&resource_id).ok_or(GuestError::UnknownResource)?;
        // As QEMU's virtio-gpu (virtio_gpu_resource_flush): a rectangle reaching outside the
        // resource, or whose right or bottom edge overflows, is an invalid parameter.
        if !r.fits_in(res.width, res.height) {
            return Err(GuestError::RectOutOfBounds.into());
        }
        if r.is_empty() {
            return Ok(Reply::NoData);
        }
        let rect = r;
        for s in self.scanouts.iter_mut().filter(|s| s.resource_id == resource_id) {
            s.flush_count = s.flush_count.wrapping_add(1);
        }
        self.events.push(GpuEvent::ResourceFlush { resource_id, rect });
        Ok(Reply::NoData)
    }
}
