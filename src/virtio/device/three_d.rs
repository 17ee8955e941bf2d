//! 3D (virgl) dispatch: capsets, contexts, 3D resources, transfers and SUBMIT_3D
//! (5.7.6.9), executed and fenced by the guest's [`Renderer3d`].

#[allow(clippy::wildcard_imports)]
use super::*;

impl Gpu {
    /// Turn on 3D: offer `VIRTIO_GPU_F_VIRGL` and `VIRTIO_GPU_F_CONTEXT_INIT`
    /// and execute the 3D commands through `renderer` (scanway's runs virglrenderer; the
    /// tests' is a fake). Call before a driver negotiates features.
    pub fn enable_3d(&mut self, renderer: Box<dyn Renderer3d>) {
        self.renderer = Some(renderer);
    }

    /// Offer no 3D from now on (for a device with no VMM attached: its 3D resources and
    /// contexts, if any, go with the renderer).
    pub fn disable_3d(&mut self) {
        self.renderer = None;
    }

    /// Whether 3D is on.
    pub fn has_3d(&self) -> bool {
        self.renderer.is_some()
    }

    /// The GL texture of 3D resource `resource_id` (zero-copy scanout).
    pub fn virgl_texture(&self, resource_id: u32) -> Option<ResourceInfo> {
        self.renderer.as_ref()?.resource_info(resource_id)
    }

    /// Tell the renderer the guest's memory after a `SET_MEM_TABLE` (an isolated worker maps
    /// the regions itself; see [`Renderer3d::set_guest_memory`]). Regions without a file
    /// descriptor are left out.
    pub fn set_guest_memory(&mut self, mem: &vm_memory::GuestMemoryMmap) {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        let Some(renderer) = self.renderer.as_mut() else { return };
        let regions: Vec<HostRegion<'_>> = mem
            .iter()
            .filter_map(|r| {
                let file = r.file_offset()?;
                Some(HostRegion {
                    host: r.as_ptr() as usize,
                    len: r.len(),
                    fd: std::os::fd::AsFd::as_fd(file.file()),
                    fd_offset: file.start(),
                })
            })
            .collect();
        renderer.set_guest_memory(&regions);
    }

    /// The fences retired by a renderer with a channel of its own ([`Renderer3d::own_fences`]);
    /// `None` without one (or without 3D).
    pub fn own_fences(&mut self) -> Option<Vec<Fence>> {
        self.renderer.as_mut()?.own_fences()
    }

    /// The renderer's descriptor to poll ([`Renderer3d::wake_fd`]).
    pub fn renderer_wake_fd(&self) -> Option<std::os::fd::RawFd> {
        self.renderer.as_ref()?.wake_fd()
    }

    /// What runs this guest's 3D; `None` without 3D.
    pub fn renderer_status(&self) -> Option<Renderer3dStatus> {
        Some(self.renderer.as_ref()?.status())
    }

    /// 3D resource `resource_id`'s texture as a dmabuf from the renderer's process
    /// ([`Renderer3d::export_scanout`]); `None` for a 2D or unknown resource or a renderer that
    /// cannot.
    pub fn export_scanout(&mut self, resource_id: u32) -> Option<super::super::renderer3d::ExportedScanout> {
        self.resources.get(&resource_id).filter(|r| r.is_3d())?;
        self.renderer.as_mut()?.export_scanout(resource_id)
    }

    /// The pixels of `rect` of 3D resource `resource_id` for a renderer whose textures the
    /// compositor cannot sample ([`Renderer3d::read_back`]): a buffer laid out as the whole
    /// resource (width * 4 bytes a row). `None` for a 2D or unknown resource, a rectangle
    /// outside it, or a renderer that cannot.
    pub fn read_back(&mut self, resource_id: u32, rect: Rect) -> Option<&[u8]> {
        let r = self.resources.get(&resource_id).filter(|r| r.is_3d())?;
        let (right, bottom) = (rect.checked_right()?, rect.checked_bottom()?);
        if right > r.width || bottom > r.height || rect.width == 0 || rect.height == 0 {
            return None;
        }
        let rb = ReadBack {
            x: rect.x,
            y: rect.y,
            width: rect.width,
            height: rect.height,
            stride: r.width.checked_mul(4)?,
            rows: r.height,
        };
        self.renderer.as_mut()?.read_back(resource_id, rb)
    }

    pub(super) fn renderer_mut(&mut self) -> Result<&mut dyn Renderer3d, GuestError> {
        match self.renderer.as_mut() {
            Some(r) => Ok(r.as_mut()),
            None => Err(GuestError::UnsupportedCommand),
        }
    }

    /// With 3D on, a fenced command's response waits for a renderer
    /// fence created now, after the command (5.7.6.7: the fence completes when
    /// the command and everything before it on its ring is done), whether the
    /// command succeeded or not: a guest takes a response's fence id to mean
    /// that every earlier fence of its timeline is done too (Linux's
    /// `virtio_gpu_fence_event_process`), so no fenced response may overtake a
    /// held one. Without a fence it waits for every response held before it.
    /// 2D-only devices answer fenced commands at once: their work is already done.
    pub(super) fn fence_3d(&mut self, hdr: &CtrlHdr) {
        let flags = hdr.flags.to_native();
        if flags & VIRTIO_GPU_FLAG_FENCE == 0 {
            return;
        }
        let Some(renderer) = self.renderer.as_mut() else { return };
        let ctx = hdr.ctx_id.to_native();
        let ring = (flags & VIRTIO_GPU_FLAG_INFO_RING_IDX != 0).then(|| u32::from(hdr.ring_idx));
        let timeline = ring.map(|r| (ctx, r));
        match renderer.create_fence(ctx, ring) {
            Ok(fence) => self.deferred = Some((Wait::Fence { fence, ctx }, timeline)),
            Err(e) => {
                self.deferred = (!self.pending.is_empty()).then_some((Wait::Earlier, timeline));
                self.guest_error(hdr.type_.to_native(), e);
            }
        }
    }

    /// CTX_DESTROY. The renderer drops the unretired fences of the context's
    /// rings (virglrenderer frees them), so the responses held for them wait
    /// for a global fence created now instead (or, failing that, for the
    /// responses before them).
    pub(super) fn ctx_destroy(&mut self, ctx: u32) -> Result<Reply, CommandError> {
        let renderer = self.renderer.as_mut().ok_or(GuestError::UnsupportedCommand)?;
        renderer.context_destroy(ctx)?;
        let orphaned = |w: &Wait| matches!(*w, Wait::Fence { fence: HostFence::Context { .. }, ctx: c } if c == ctx);
        if self.pending.iter().any(|p| orphaned(&p.wait)) {
            let wait = match renderer.create_fence(0, None) {
                Ok(fence) => Wait::Fence { fence, ctx: 0 },
                Err(e) => {
                    self.guest_error(VIRTIO_GPU_CMD_CTX_DESTROY, e);
                    Wait::Earlier
                }
            };
            for p in self.pending.iter_mut().filter(|p| orphaned(&p.wait)) {
                p.wait = wait;
            }
        }
        Ok(Reply::NoData)
    }

    pub(super) fn get_capset_info(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: GetCapsetInfo = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let renderer = self.renderer.as_ref().ok_or(GuestError::UnsupportedCommand)?;
        let info = renderer.capset_info(cmd.capset_index.to_native()).ok_or(GuestError::Invalid3d)?;
        Ok(Reply::CapsetInfo(RespCapsetInfo {
            capset_id: info.id.into(),
            capset_max_version: info.max_version.into(),
            capset_max_size: info.max_size.into(),
            ..RespCapsetInfo::default()
        }))
    }

    pub(super) fn get_capset(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: GetCapset = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let renderer = self.renderer_mut()?;
        let caps =
            renderer.capset(cmd.capset_id.to_native(), cmd.capset_version.to_native()).ok_or(GuestError::Invalid3d)?;
        Ok(Reply::Capset(caps))
    }

    pub(super) fn ctx_create(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: CtxCreate = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let nlen = (cmd.nlen.to_native() as usize).min(cmd.debug_name.len());
        let name = String::from_utf8_lossy(cmd.debug_name.get(..nlen).unwrap_or_default()).into_owned();
        // context_init: the capset id in the low 8 bits (VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK).
        let capset = cmd.context_init.to_native() & 0xff;
        debug!(ctx = cmd.hdr.ctx_id.to_native(), capset, name, "CTX_CREATE");
        self.renderer_mut()?.context_create(cmd.hdr.ctx_id.to_native(), capset, &name)?;
        Ok(Reply::NoData)
    }

    pub(super) fn ctx_attach_resource(&mut self, request: &[u8], attach: bool) -> Result<Reply, CommandError> {
        let cmd: CtxResource = read_struct(request).ok_or(GuestError::ShortRequest)?;
        if self.renderer.is_none() {
            return Err(GuestError::UnsupportedCommand.into());
        }
        let id = cmd.resource_id.to_native();
        let res = self.resources.get(&id).ok_or(GuestError::UnknownResource)?;
        if !res.is_3d() {
            // A 2D resource lives in scanway's memory, not virglrenderer's: nothing to attach.
            return Ok(Reply::NoData);
        }
        self.renderer_mut()?.context_attach(cmd.hdr.ctx_id.to_native(), id, attach)?;
        Ok(Reply::NoData)
    }

    pub(super) fn resource_create_3d(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: ResourceCreate3d = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let (width, height) = (cmd.width.to_native(), cmd.height.to_native());
        let (depth, array_size) = (cmd.depth.to_native(), cmd.array_size.to_native());
        debug!(id, width, height, depth, format = cmd.format.to_native(), "RESOURCE_CREATE_3D");
        if self.renderer.is_none() {
            return Err(GuestError::UnsupportedCommand.into());
        }
        if id == 0 {
            return Err(GuestError::ZeroResourceId.into());
        }
        if self.resources.contains_key(&id) {
            return Err(GuestError::DuplicateResourceId.into());
        }
        // A buffer (PIPE_BUFFER) is `width` bytes long; textures are at most 16384 texels a side.
        let is_buffer = cmd.target.to_native() == PIPE_BUFFER;
        let max_width = if is_buffer { MAX_BUFFER_BYTES } else { MAX_RESOURCE_DIMENSION };
        if width > max_width || height > MAX_RESOURCE_DIMENSION || depth > MAX_RESOURCE_DIMENSION {
            return Err(GuestError::InvalidSize.into());
        }
        // GL memory is charged as its bytes (buffers) or 4 bytes per texel of the base level
        // (textures; an estimate: mipmaps and multisampling vary), so a guest cannot allocate
        // without bound.
        let texel_bytes = if is_buffer { 1 } else { BPP };
        let charge = u64::from(width.max(1))
            .saturating_mul(u64::from(height.max(1)))
            .saturating_mul(u64::from(depth.max(1)))
            .saturating_mul(u64::from(array_size.max(1)))
            .saturating_mul(texel_bytes)
            .saturating_add(RESOURCE_OVERHEAD_BYTES);
        self.charge(charge)?;
        let args = VirglCreate3d {
            handle: 0,
            target: cmd.target.to_native(),
            format: cmd.format.to_native(),
            bind: cmd.bind.to_native(),
            width,
            height,
            depth,
            array_size,
            last_level: cmd.last_level.to_native(),
            nr_samples: cmd.nr_samples.to_native(),
            flags: cmd.flags.to_native(),
        };
        let created = match self.renderer_mut() {
            Ok(renderer) => renderer.resource_create(id, args).map_err(CommandError::from),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = created {
            self.uncharge(charge);
            return Err(e);
        }
        let format = Format::from_virtio(args.format).unwrap_or(Format::B8G8R8A8);
        self.resources.insert(
            id,
            Resource { width, height, format, data: Vec::new(), backing: None, kind: ResourceKind::ThreeD { charge } },
        );
        Ok(Reply::NoData)
    }

    pub(super) fn transfer_3d(&mut self, request: &[u8], to_host: bool) -> Result<Reply, CommandError> {
        let cmd: TransferHost3d = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let id = cmd.resource_id.to_native();
        let b = cmd.box_;
        let bbox = Box3d {
            x: b.x.to_native(),
            y: b.y.to_native(),
            z: b.z.to_native(),
            w: b.w.to_native(),
            h: b.h.to_native(),
            d: b.d.to_native(),
        };
        let renderer = self.renderer.as_mut().ok_or(GuestError::UnsupportedCommand)?;
        let res = self.resources.get(&id).ok_or(GuestError::UnknownResource)?;
        if !res.is_3d() {
            return Err(GuestError::Invalid3d.into());
        }
        renderer.transfer(&Transfer3d {
            resource: id,
            ctx: cmd.hdr.ctx_id.to_native(),
            level: cmd.level.to_native(),
            stride: cmd.stride.to_native(),
            layer_stride: cmd.layer_stride.to_native(),
            bbox,
            offset: cmd.offset.to_native(),
            to_host,
        })?;
        Ok(Reply::NoData)
    }

    pub(super) fn submit_3d(&mut self, request: &[u8]) -> Result<Reply, CommandError> {
        let cmd: CmdSubmit = read_struct(request).ok_or(GuestError::ShortRequest)?;
        let size = cmd.size.to_native() as usize;
        let start = size_of::<CmdSubmit>();
        if !size.is_multiple_of(4) || size > MAX_SUBMIT_BYTES {
            return Err(GuestError::Invalid3d.into());
        }
        let bytes = request.get(start..start.saturating_add(size)).ok_or(GuestError::ShortRequest)?;
        let mut dwords: Vec<u32> = Vec::new();
        dwords.try_reserve_exact(size / 4).map_err(|_| GuestError::AllocationFailed)?;
        dwords.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        let renderer = self.renderer_mut()?;
        renderer.submit(cmd.hdr.ctx_id.to_native(), &mut dwords)?;
        Ok(Reply::NoData)
    }
}
