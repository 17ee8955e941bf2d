//! One guest's view of the process-wide virglrenderer: its own resource, context and fence id
//! spaces.
//!
//! virglrenderer keeps one process-global resource table and one context table, and every Linux
//! guest numbers both from 1. [`Virgl3d`] gives each guest its own id space: guest resource and
//! context ids are translated to host ids allocated from [`VirglShared`], the resource handles
//! inside `SUBMIT_3D` streams are rewritten ([`super::virgl_stream`]), and a stream that names a
//! resource this guest does not own is rejected before virglrenderer sees it. Fence ids are
//! host-allocated too; the device model maps retired host fences back to guest responses.
//!
//! [`Virgl3d`] is scanway's [`Renderer3d`]: the device model sees it only through that trait.

use std::{
    cell::Cell,
    collections::{HashMap, HashSet},
    rc::Rc,
};

use super::{
    renderer3d::{CapsetInfo, Error3d, HostFence, Renderer3d, Transfer3d},
    virgl_stream,
};
use crate::renderer::virgl::{ResourceCreate3d, ResourceInfo, Transfer, Virgl};

/// The virglrenderer instance and the host id allocators, shared by every guest's [`Virgl3d`].
pub struct VirglShared {
    /// The renderer (process-global; one per process).
    pub virgl: Virgl,
    /// The compositor's EGL display, kept alive (not terminated) until virglrenderer, declared
    /// above, has been cleaned up: whichever of the compositor and the guests goes last.
    _display: Option<smithay::backend::egl::EGLDisplay>,
    next_resource: Cell<u32>,
    next_context: Cell<u32>,
    next_fence: Cell<u32>,
}

impl VirglShared {
    /// Share `virgl` among guests. `display` is the EGL display virglrenderer's contexts live
    /// on; it stays initialised as long as virglrenderer does.
    pub fn new(virgl: Virgl, display: Option<smithay::backend::egl::EGLDisplay>) -> Rc<Self> {
        Rc::new(VirglShared {
            virgl,
            _display: display,
            next_resource: Cell::new(1),
            next_context: Cell::new(1),
            next_fence: Cell::new(1),
        })
    }

    fn alloc(counter: &Cell<u32>) -> u32 {
        let id = counter.get();
        // 0 means "none" to virglrenderer; a process would need 4 billion objects to wrap.
        counter.set(id.checked_add(1).unwrap_or(1));
        id
    }
}

/// A 3D resource of this guest.
#[derive(Debug)]
struct Resource3d {
    host: u32,
    /// Whether guest memory is attached (virglrenderer holds pointers into it).
    backed: bool,
}

/// One guest's 3D state.
#[derive(Debug)]
pub struct Virgl3d {
    shared: Rc<VirglShared>,
    resources: HashMap<u32, Resource3d>,
    contexts: HashMap<u32, u32>,
    /// Guest (context, resource) attachments, so a destroyed resource is detached everywhere.
    attached: HashSet<(u32, u32)>,
}

impl Virgl3d {
    /// A guest's empty id space over `shared`.
    pub fn new(shared: Rc<VirglShared>) -> Self {
        Virgl3d { shared, resources: HashMap::new(), contexts: HashMap::new(), attached: HashSet::new() }
    }

    fn virgl(&self) -> &Virgl {
        &self.shared.virgl
    }

    /// Host id of guest context `ctx`.
    pub fn host_context(&self, ctx: u32) -> Option<u32> {
        self.contexts.get(&ctx).copied()
    }

    /// Host id of guest 3D resource `res`.
    pub fn host_resource(&self, res: u32) -> Option<u32> {
        self.resources.get(&res).map(|r| r.host)
    }

    /// Copy the box `(x, y, width, height)` (pixels) of level 0 of guest resource `res` into
    /// `iov` at byte `offset`, rows `stride` bytes apart (a `TRANSFER_FROM_HOST` into memory
    /// that is not the guest's: an isolated worker's read-back buffer). Errors: an unknown
    /// resource, a box virglrenderer refuses.
    ///
    /// # Safety
    /// Every iovec must describe writable memory not aliased by Rust references.
    pub unsafe fn read_into(
        &mut self,
        res: u32,
        (x, y, width, height): (u32, u32, u32, u32),
        stride: u32,
        offset: u64,
        iov: &mut [libc::iovec],
    ) -> Result<(), Error3d> {
        let host = self.host_resource(res).ok_or(Error3d::Resource(res))?;
        let t = Transfer {
            resource_id: host,
            ctx_id: 0,
            level: 0,
            stride,
            layer_stride: 0,
            bbox: crate::renderer::virgl::Box3d { x, y, z: 0, w: width, h: height, d: 1 },
            offset,
        };
        // SAFETY: forwarded contract.
        unsafe { self.virgl().transfer_read_into(&t, iov) }.map_err(Error3d::Refused)
    }
}

/// The trait's docs say what each command does; notes here are virglrenderer's part.
impl Renderer3d for Virgl3d {
    /// VIRGL and VIRGL2.
    fn num_capsets(&self) -> u32 {
        2
    }

    /// Index 0: VIRGL, 1: VIRGL2, as virglrenderer reports them.
    fn capset_info(&self, index: u32) -> Option<CapsetInfo> {
        let id = match index {
            0 => crate::renderer::virgl::CAPSET_VIRGL,
            1 => crate::renderer::virgl::CAPSET_VIRGL2,
            _ => return None,
        };
        let (max_version, max_size) = self.virgl().capset_info(id);
        Some(CapsetInfo { id, max_version, max_size })
    }

    /// Zero-filled to the capset's size; at most 64 KiB.
    fn capset(&mut self, id: u32, version: u32) -> Option<Vec<u8>> {
        let (max_version, size) = match id {
            crate::renderer::virgl::CAPSET_VIRGL | crate::renderer::virgl::CAPSET_VIRGL2 => {
                self.virgl().capset_info(id)
            }
            _ => return None,
        };
        if version > max_version || size == 0 || size > 64 * 1024 {
            return None;
        }
        let mut out = vec![0u8; size as usize];
        self.virgl().fill_capset(id, version, &mut out);
        Some(out)
    }

    /// Capset 0 is VIRGL2 to virglrenderer.
    fn context_create(&mut self, ctx: u32, capset: u32, name: &str) -> Result<(), Error3d> {
        if ctx == 0 || self.contexts.contains_key(&ctx) {
            return Err(Error3d::Context(ctx));
        }
        if !matches!(capset, 0 | crate::renderer::virgl::CAPSET_VIRGL | crate::renderer::virgl::CAPSET_VIRGL2) {
            return Err(Error3d::Capset(capset));
        }
        let host = VirglShared::alloc(&self.shared.next_context);
        self.virgl().context_create(host, capset, name).map_err(Error3d::Renderer)?;
        self.contexts.insert(ctx, host);
        Ok(())
    }

    fn context_destroy(&mut self, ctx: u32) -> Result<(), Error3d> {
        let host = self.contexts.remove(&ctx).ok_or(Error3d::Context(ctx))?;
        self.attached.retain(|&(c, _)| c != ctx);
        self.virgl().context_destroy(host);
        Ok(())
    }

    fn context_attach(&mut self, ctx: u32, res: u32, attach: bool) -> Result<(), Error3d> {
        let host_ctx = self.host_context(ctx).ok_or(Error3d::Context(ctx))?;
        let host_res = self.host_resource(res).ok_or(Error3d::Resource(res))?;
        if attach {
            if self.attached.insert((ctx, res)) {
                self.virgl().ctx_attach_resource(host_ctx, host_res);
            }
        } else if self.attached.remove(&(ctx, res)) {
            self.virgl().ctx_detach_resource(host_ctx, host_res);
        }
        Ok(())
    }

    /// The host id comes from [`VirglShared`].
    fn resource_create(&mut self, res: u32, mut args: ResourceCreate3d) -> Result<(), Error3d> {
        if res == 0 || self.resources.contains_key(&res) {
            return Err(Error3d::Resource(res));
        }
        let host = VirglShared::alloc(&self.shared.next_resource);
        args.handle = host;
        self.virgl().resource_create(&args).map_err(Error3d::Refused)?;
        self.resources.insert(res, Resource3d { host, backed: false });
        Ok(())
    }

    fn resource_unref(&mut self, res: u32) -> Result<(), Error3d> {
        let r = self.resources.remove(&res).ok_or(Error3d::Resource(res))?;
        let contexts: Vec<u32> = self.attached.iter().filter(|&&(_, rr)| rr == res).map(|&(c, _)| c).collect();
        for ctx in contexts {
            self.attached.remove(&(ctx, res));
            if let Some(host_ctx) = self.host_context(ctx) {
                self.virgl().ctx_detach_resource(host_ctx, r.host);
            }
        }
        self.virgl().resource_unref(r.host);
        Ok(())
    }

    unsafe fn attach_backing(&mut self, res: u32, iov: &[libc::iovec]) -> Result<(), Error3d> {
        let host = self.host_resource(res).ok_or(Error3d::Resource(res))?;
        // SAFETY: the caller promises what `attach_iov` asks (the trait's contract); the backing
        // goes with `detach_backing`, `resource_unref` and `reset` (also run on drop).
        unsafe { self.virgl().attach_iov(host, iov) }.map_err(Error3d::Renderer)?;
        if let Some(r) = self.resources.get_mut(&res) {
            r.backed = true;
        }
        Ok(())
    }

    fn detach_backing(&mut self, res: u32) -> Result<(), Error3d> {
        let r = self.resources.get_mut(&res).ok_or(Error3d::Resource(res))?;
        if r.backed {
            r.backed = false;
            let host = r.host;
            self.virgl().detach_iov(host);
        }
        Ok(())
    }

    /// An unknown context transfers through virglrenderer's context 0.
    fn transfer(&mut self, t: &Transfer3d) -> Result<(), Error3d> {
        let r = self.resources.get(&t.resource).ok_or(Error3d::Resource(t.resource))?;
        if !r.backed {
            return Err(Error3d::NoBacking);
        }
        let ctx_id = if t.ctx == 0 { 0 } else { self.host_context(t.ctx).unwrap_or(0) };
        let vt = Transfer {
            resource_id: r.host,
            ctx_id,
            level: t.level,
            stride: t.stride,
            layer_stride: t.layer_stride,
            bbox: t.bbox,
            offset: t.offset,
        };
        let result = if t.to_host { self.virgl().transfer_write(&vt) } else { self.virgl().transfer_read(&vt) };
        result.map_err(Error3d::Refused)
    }

    /// The stream's resource handles are rewritten to host ids first ([`virgl_stream`]): unknown
    /// opcodes and resources this guest does not own are refused before virglrenderer sees them.
    fn submit(&mut self, ctx: u32, stream: &mut [u32]) -> Result<(), Error3d> {
        let host_ctx = self.host_context(ctx).ok_or(Error3d::Context(ctx))?;
        virgl_stream::rewrite_resource_handles(stream, |guest| self.host_resource(guest)).map_err(Error3d::Stream)?;
        self.virgl().submit_cmd(host_ctx, stream).map_err(Error3d::Renderer)
    }

    /// Fence ids come from [`VirglShared`] (one timeline shared by every guest).
    fn create_fence(&mut self, ctx: u32, ring: Option<u32>) -> Result<HostFence, Error3d> {
        let id = VirglShared::alloc(&self.shared.next_fence);
        match ring {
            Some(ring) => {
                let host_ctx = self.host_context(ctx).ok_or(Error3d::Context(ctx))?;
                self.virgl().context_create_fence(host_ctx, 0, ring, u64::from(id)).map_err(Error3d::Refused)?;
                Ok(HostFence::Context { ctx: host_ctx, ring, id: u64::from(id) })
            }
            None => {
                self.virgl().create_fence(id).map_err(Error3d::Renderer)?;
                Ok(HostFence::Global(id))
            }
        }
    }

    fn resource_info(&self, res: u32) -> Option<ResourceInfo> {
        self.virgl().resource_info(self.host_resource(res)?)
    }

    fn reset(&mut self) {
        for (_, host) in self.contexts.drain() {
            self.shared.virgl.context_destroy(host);
        }
        for (_, r) in self.resources.drain() {
            self.shared.virgl.resource_unref(r.host);
        }
        self.attached.clear();
    }
}

impl Drop for Virgl3d {
    fn drop(&mut self) {
        self.reset();
    }
}

impl std::fmt::Debug for VirglShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirglShared").field("next_resource", &self.next_resource.get()).finish_non_exhaustive()
    }
}
