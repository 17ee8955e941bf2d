//! 2D resources and their host copies: RESOURCE_CREATE_2D, RESOURCE_UNREF,
//! RESOURCE_ATTACH_BACKING / DETACH_BACKING and TRANSFER_TO_HOST_2D (5.7.6.8), each charged
//! against the guest's host memory cap.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The host copy of a 2D resource (RESOURCE_CREATE_2D).
///
/// `data` is `height` rows of `stride()` = `width * 4` bytes, tightly packed,
/// in the resource's `format` (bytes exactly as the guest wrote them).
#[derive(Clone, PartialEq, Eq)]
pub struct Resource {
    /// Width, pixels (1..=16384).
    pub width: u32,
    /// Height, pixels (1..=16384).
    pub height: u32,
    /// Pixel format.
    pub format: Format,
    /// Pixels: `height * stride()` bytes, zero-initialised at creation.
    pub data: Vec<u8>,
    /// Guest backing, if attached.
    pub backing: Option<Backing>,
    /// What the resource is: a 2D host copy or a virgl (3D) resource.
    pub kind: ResourceKind,
}

/// What a resource is, and where its pixels live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// RESOURCE_CREATE_2D: the pixels are [`Resource::data`], uploaded to the compositor.
    TwoD,
    /// RESOURCE_CREATE_3D: the pixels live in a GL texture of virglrenderer
    /// ([`Gpu::virgl_texture`]), `data` is empty.
    ThreeD {
        /// Bytes charged against the host memory cap for its GL storage.
        charge: u64,
    },
}

impl Resource {
    /// Whether this is a virgl (3D) resource.
    pub fn is_3d(&self) -> bool {
        matches!(self.kind, ResourceKind::ThreeD { .. })
    }

    /// Bytes per row of `data`: `width * 4`.
    pub fn stride(&self) -> u32 {
        self.width.saturating_mul(self.format.bytes_per_pixel())
    }

    /// Bytes charged against [`GpuConfig::max_host_memory`] for this
    /// resource: `data.len()` + [`RESOURCE_OVERHEAD_BYTES`] +
    /// [`BACKING_ENTRY_BYTES`] per stored backing entry.
    pub fn host_memory(&self) -> u64 {
        let entries = self.backing.as_ref().map_or(0, |b| b.entries().len() as u64);
        let storage = match self.kind {
            ResourceKind::ThreeD { charge } => charge,
            ResourceKind::TwoD => (self.data.len() as u64).saturating_add(RESOURCE_OVERHEAD_BYTES),
        };
        storage.saturating_add(entries.saturating_mul(BACKING_ENTRY_BYTES))
    }

    /// Row `y` of `data` (`stride()` bytes), `None` if out of range.
    pub fn row(&self, y: u32) -> Option<&[u8]> {
        let stride = self.stride() as usize;
        let start = (y as usize).checked_mul(stride)?;
        self.data.get(start..start.checked_add(stride)?)
    }

    /// Copies `rect` (which must be non-empty and inside the resource) out as
    /// RGBA8 (bytes R, G, B, A; `rect.width * 4` bytes per row, rows top to
    /// bottom). `None` if the rect is invalid or memory cannot be allocated.
    pub fn read_rgba8(&self, rect: Rect) -> Option<Vec<u8>> {
        self.read_rgba8_as(rect, self.format)
    }

    /// [`Resource::read_rgba8`], reading the bytes as `format` instead of the resource's own
    /// (same size per pixel): e.g. a cursor's B8G8R8X8 bytes as B8G8R8A8.
    pub fn read_rgba8_as(&self, rect: Rect, format: Format) -> Option<Vec<u8>> {
        if rect.is_empty() || !rect.fits_in(self.width, self.height) {
            return None;
        }
        let row_bytes = (rect.width as usize).checked_mul(BPP as usize)?;
        let total = row_bytes.checked_mul(rect.height as usize)?;
        let mut out = Vec::new();
        out.try_reserve_exact(total).ok()?;
        out.resize(total, 0);
        let x0 = (rect.x as usize).checked_mul(BPP as usize)?;
        for (i, dst) in out.chunks_exact_mut(row_bytes).enumerate() {
            let row = self.row(rect.y.checked_add(u32::try_from(i).ok()?)?)?;
            let src = row.get(x0..x0.checked_add(row_bytes)?)?;
            format.to_rgba8(src, dst);
        }
        Some(out)
    }
}

/// Debug output elides the pixels (`data` shows its length only).
impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("format", &self.format)
            .field("data_len", &self.data.len())
            .field("backing", &self.backing)
            .finish()
    }
}

impl Gpu {
    pub(super) fn resource_create_2d(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: ResourceCreate2d = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let (width, height) = (cmd.width.to_native(), cmd.height.to_native());
        debug!(id, width, height, format = cmd.format.to_native(), "RESOURCE_CREATE_2D");
        if id == 0 {
            return Err(GuestError::ZeroResourceId.into());
        }
        if self.resources.contains_key(&id) {
            return Err(GuestError::DuplicateResourceId.into());
        }
        let format = Format::from_virtio(cmd.format.to_native()).ok_or(GuestError::UnknownFormat)?;
        if !(1..=MAX_RESOURCE_DIMENSION).contains(&width) || !(1..=MAX_RESOURCE_DIMENSION).contains(&height) {
            return Err(GuestError::InvalidSize.into());
        }
        let size = u64::from(width)
            .checked_mul(u64::from(height))
            .and_then(|p| p.checked_mul(BPP))
            .ok_or(GuestError::InvalidSize)?;
        self.charge(size.saturating_add(RESOURCE_OVERHEAD_BYTES))?;
        let data = usize::try_from(size).ok().and_then(zeroed).ok_or(GuestError::AllocationFailed);
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                self.uncharge(size.saturating_add(RESOURCE_OVERHEAD_BYTES));
                return Err(e.into());
            }
        };
        self.resources.insert(id, Resource { width, height, format, data, backing: None, kind: ResourceKind::TwoD });
        Ok(Reply::NoData)
    }

    /// Reserves `bytes` of the host memory budget.
    pub(super) fn charge(&mut self, bytes: u64) -> Result<(), GuestError> {
        let total = self.host_memory_used.checked_add(bytes).ok_or(GuestError::HostMemoryLimit)?;
        if total > self.config.max_host_memory {
            return Err(GuestError::HostMemoryLimit);
        }
        self.host_memory_used = total;
        Ok(())
    }

    pub(super) fn uncharge(&mut self, bytes: u64) {
        self.host_memory_used = self.host_memory_used.saturating_sub(bytes);
    }

    pub(super) fn resource_unref(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: ResourceUnref = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let resource = self.resources.remove(&id).ok_or(GuestError::UnknownResource)?;
        self.uncharge(resource.host_memory());
        if resource.is_3d()
            && let Some(r) = self.renderer.as_mut()
            && let Err(e) = r.resource_unref(id)
        {
            // the resource is gone from the guest's table either way; logged once per kind
            self.guest_error(VIRTIO_GPU_CMD_RESOURCE_UNREF, e);
        }
        for (i, s) in self.scanouts.iter_mut().enumerate() {
            if s.resource_id == id {
                s.resource_id = 0;
                s.rect = Rect::default();
                s.flush_count = 0;
                self.events.push(GpuEvent::ScanoutSet { scanout_id: i as u32, resource_id: 0, rect: Rect::default() });
            }
        }
        self.events.push(GpuEvent::ResourceDestroyed { resource_id: id });
        Ok(Reply::NoData)
    }

    pub(super) fn resource_attach_backing<M: GuestMemory>(
        &mut self,
        request: &[u8],
        mem: &M,
    ) -> Result<Reply, CommandError> {
        let cmd: ResourceAttachBacking = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let nr = cmd.nr_entries.to_native();
        debug!(id, nr_entries = nr, "RESOURCE_ATTACH_BACKING");
        let resource = self.resources.get(&id).ok_or(GuestError::UnknownResource)?;
        if resource.backing.is_some() {
            return Err(GuestError::BackingAlreadyAttached.into());
        }
        let is_3d = resource.is_3d();
        if !(1..=MAX_BACKING_ENTRIES).contains(&nr) {
            return Err(GuestError::BadEntryCount.into());
        }
        let start = size_of::<ResourceAttachBacking>();
        let end = (nr as usize)
            .checked_mul(size_of::<MemEntry>())
            .and_then(|n| n.checked_add(start))
            .ok_or(GuestError::ShortRequest)?;
        let raw = request.get(start..end).ok_or(GuestError::ShortRequest)?;

        let mut entries: Vec<BackingEntry> = Vec::new();
        entries.try_reserve_exact(nr as usize).map_err(|_| GuestError::AllocationFailed)?;
        let mut total: u64 = 0;
        for chunk in raw.chunks_exact(size_of::<MemEntry>()) {
            let e: MemEntry = read_struct(chunk).ok_or(GuestError::ShortRequest)?;
            let addr = e.addr.to_native();
            let len = e.length.to_native();
            if len == 0 {
                continue;
            }
            if addr.checked_add(u64::from(len)).is_none()
                || !mem.check_range(GuestAddress(addr), len as usize, Permissions::Read)
            {
                return Err(GuestError::BackingOutsideMemory.into());
            }
            match entries.last_mut() {
                Some(prev) if prev.addr.checked_add(prev.len) == Some(addr) => {
                    prev.len = prev.len.checked_add(u64::from(len)).ok_or(GuestError::BackingOutsideMemory)?;
                }
                _ => entries.push(BackingEntry { addr, len: u64::from(len), offset: total }),
            }
            total = total.checked_add(u64::from(len)).ok_or(GuestError::BackingOutsideMemory)?;
        }
        entries.shrink_to_fit();
        let charge = (entries.len() as u64).saturating_mul(BACKING_ENTRY_BYTES);
        self.charge(charge)?;
        let backing = Backing::new(entries, total);
        if is_3d && let Some(renderer) = self.renderer.as_mut() {
            let attached = match backing.host_iovecs(mem) {
                // SAFETY: the iovecs point into guest memory, which stays mapped until the device
                // resets (the vhost backend keeps replaced memory tables until then); the device
                // detaches them (DETACH_BACKING, UNREF, reset) before then, and never makes Rust
                // references into backing memory (it reads it by copying).
                Some(iov) => unsafe { renderer.attach_backing(id, &iov) }.map_err(CommandError::from),
                None => Err(GuestError::BackingOutsideMemory.into()),
            };
            if let Err(e) = attached {
                self.uncharge(charge);
                return Err(e);
            }
        }
        if let Some(resource) = self.resources.get_mut(&id) {
            resource.backing = Some(backing);
        }
        Ok(Reply::NoData)
    }

    pub(super) fn resource_detach_backing(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: ResourceDetachBacking = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let resource = self.resources.get_mut(&id).ok_or(GuestError::UnknownResource)?;
        if resource.backing.is_none() {
            return Err(GuestError::NoBacking.into());
        }
        // The renderer first: if it fails it still holds the backing, so the device keeps it
        // (and its charge) too.
        if resource.is_3d()
            && let Some(r) = self.renderer.as_mut()
        {
            r.detach_backing(id)?;
        }
        let backing = resource.backing.take().ok_or(GuestError::NoBacking)?;
        self.uncharge((backing.entries().len() as u64).saturating_mul(BACKING_ENTRY_BYTES));
        Ok(Reply::NoData)
    }

    /// TRANSFER_TO_HOST_2D, with QEMU's offset semantics
    /// (`hw/display/virtio-gpu.c`): row `h` of the rectangle (0-based) is read
    /// from backing offset `offset + stride * h` (the guest's `offset` already
    /// includes `r.y * stride + r.x * 4`) and written at
    /// `(r.y + h) * stride + r.x * 4` of the host copy; `stride = width * 4`.
    pub(super) fn transfer_to_host_2d<M: GuestMemory>(
        &mut self,
        request: &[u8],
        mem: &M,
    ) -> Result<Reply, CommandError> {
        let cmd: TransferToHost2d = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let r = Rect::from(cmd.r);
        let offset = cmd.offset.to_native();
        debug!(id, ?r, offset, "TRANSFER_TO_HOST_2D");
        let resource = self.resources.get_mut(&id).ok_or(GuestError::UnknownResource)?;
        let backing = resource.backing.as_ref().ok_or(GuestError::NoBacking)?;
        if !r.fits_in(resource.width, resource.height) {
            return Err(GuestError::RectOutOfBounds.into());
        }
        if resource.is_3d() {
            // A 2D transfer into a virgl resource: virglrenderer copies from the backing.
            let bbox = Box3d { x: r.x, y: r.y, z: 0, w: r.width, h: r.height, d: 1 };
            let renderer = self.renderer.as_mut().ok_or(GuestError::UnsupportedCommand)?;
            renderer.transfer(&Transfer3d { resource: id, bbox, offset, to_host: true, ..Transfer3d::default() })?;
            return Ok(Reply::NoData);
        }
        if r.is_empty() {
            return Ok(Reply::NoData);
        }
        let stride = u64::from(resource.width) * BPP;
        let row_bytes = u64::from(r.width) * BPP;
        // Last byte read + 1; must lie inside the backing.
        let needed = stride
            .checked_mul(u64::from(r.height - 1))
            .and_then(|v| v.checked_add(row_bytes))
            .and_then(|v| v.checked_add(offset))
            .ok_or(GuestError::BackingTooSmall)?;
        if needed > backing.len() {
            return Err(GuestError::BackingTooSmall.into());
        }
        let to_usize = |v: u64| usize::try_from(v).map_err(|_| GuestError::RectOutOfBounds);
        let dst_start = to_usize(u64::from(r.y) * stride + u64::from(r.x) * BPP)?;
        if r.x == 0 && r.width == resource.width {
            // Whole rows: source and destination are both contiguous.
            let len = to_usize(stride * u64::from(r.height))?;
            let dst =
                resource.data.get_mut(dst_start..dst_start.saturating_add(len)).ok_or(GuestError::RectOutOfBounds)?;
            backing.read(mem, offset, dst)?;
        } else {
            let row_len = to_usize(row_bytes)?;
            let stride_usize = to_usize(stride)?;
            for h in 0..r.height {
                // inside `needed`, checked above; checked again rather than trusted
                let src = stride
                    .checked_mul(u64::from(h))
                    .and_then(|v| v.checked_add(offset))
                    .ok_or(GuestError::BackingTooSmall)?;
                let dst_off = dst_start.saturating_add(stride_usize.saturating_mul(h as usize));
                let dst = resource
                    .data
                    .get_mut(dst_off..dst_off.saturating_add(row_len))
                    .ok_or(GuestError::RectOutOfBounds)?;
                backing.read(mem, src, dst)?;
            }
        }
        Ok(Reply::NoData)
    }
}
