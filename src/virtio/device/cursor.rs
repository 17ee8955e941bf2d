//! The cursor queue: UPDATE_CURSOR and MOVE_CURSOR (5.7.6.10).

#[allow(clippy::wildcard_imports)]
use super::*;

/// A cursor image, converted to RGBA8 when UPDATE_CURSOR was executed.
#[derive(Clone, PartialEq, Eq)]
pub struct CursorImage {
    /// Width, pixels (1..=64).
    pub width: u32,
    /// Height, pixels (1..=64).
    pub height: u32,
    /// Hot spot, pixels from the left edge (clamped to `width - 1`).
    pub hot_x: u32,
    /// Hot spot, pixels from the top edge (clamped to `height - 1`).
    pub hot_y: u32,
    /// `width * height * 4` bytes, rows top to bottom, bytes R, G, B, A.
    pub rgba: Vec<u8>,
}

/// Debug output elides the pixels (`rgba` shows its length only).
impl std::fmt::Debug for CursorImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("hot_x", &self.hot_x)
            .field("hot_y", &self.hot_y)
            .field("rgba_len", &self.rgba.len())
            .finish()
    }
}

impl Gpu {
    /// UPDATE_CURSOR / MOVE_CURSOR (5.7.6.10). The image is copied out of the
    /// resource's host copy now (the driver transfers it first); resource 0
    /// hides the cursor. Unlike QEMU, which silently keeps the old image, an
    /// unknown or larger-than-64x64 resource is rejected and changes nothing.
    pub(super) fn update_cursor(&mut self, request: &[u8], is_move: bool) -> Result<Reply, CommandError> {
        let cmd: UpdateCursor = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let scanout_id = cmd.pos.scanout_id.to_native();
        let x = cmd.pos.x.to_native().cast_signed();
        let y = cmd.pos.y.to_native().cast_signed();
        let resource_id = cmd.resource_id.to_native();
        debug!(scanout_id, x, y, resource_id, is_move, "cursor");
        if scanout_id >= self.num_scanouts() {
            return Err(GuestError::InvalidScanoutId.into());
        }
        if is_move {
            if let Some(s) = self.scanouts.get_mut(scanout_id as usize) {
                s.cursor_pos = (x, y);
            }
            self.push_cursor_event(GpuEvent::CursorMove { scanout_id, x, y });
            return Ok(Reply::NoData);
        }
        let image = if resource_id == 0 {
            None
        } else {
            let res = self.resources.get(&resource_id).ok_or(GuestError::UnknownResource)?;
            if res.is_3d() {
                // Cursors come from dumb (2D) buffers; a virgl cursor is not read back.
                return Err(GuestError::Invalid3d.into());
            }
            if res.width > MAX_CURSOR_DIMENSION || res.height > MAX_CURSOR_DIMENSION {
                return Err(GuestError::CursorTooLarge.into());
            }
            // The cursor plane reads its buffer as ARGB (premultiplied), whatever format the
            // resource was created with (Linux: B8G8R8X8 for every dumb buffer).
            let rgba = res
                .read_rgba8_as(Rect::new(0, 0, res.width, res.height), res.format.with_alpha())
                .ok_or(GuestError::AllocationFailed)?;
            Some(CursorImage {
                width: res.width,
                height: res.height,
                hot_x: cmd.hot_x.to_native().min(res.width - 1),
                hot_y: cmd.hot_y.to_native().min(res.height - 1),
                rgba,
            })
        };
        if let Some(s) = self.scanouts.get_mut(scanout_id as usize) {
            s.cursor = image.clone();
            s.cursor_pos = (x, y);
        }
        self.push_cursor_event(GpuEvent::CursorUpdate { scanout_id, image, x, y });
        Ok(Reply::NoData)
    }

    /// Pushes a cursor event, coalescing with a pending one of the same
    /// scanout in the trailing run of cursor events (see `drain_events`).
    pub(super) fn push_cursor_event(&mut self, event: GpuEvent) {
        let (GpuEvent::CursorUpdate { scanout_id: sid, .. } | GpuEvent::CursorMove { scanout_id: sid, .. }) = event
        else {
            self.events.push(event);
            return;
        };
        for pending in self.events.iter_mut().rev() {
            match pending {
                GpuEvent::CursorUpdate { scanout_id, x, y, .. } if *scanout_id == sid => {
                    if let GpuEvent::CursorMove { x: nx, y: ny, .. } = event {
                        *x = nx;
                        *y = ny;
                    } else {
                        *pending = event;
                    }
                    return;
                }
                GpuEvent::CursorMove { scanout_id, .. } if *scanout_id == sid => {
                    *pending = event;
                    return;
                }
                GpuEvent::CursorUpdate { .. } | GpuEvent::CursorMove { .. } => {}
                _ => break,
            }
        }
        self.events.push(event);
    }
}
