//! One guest's view of the process-wide virglrenderer: its own resource, context and fence id
//! spaces.
//!
//! virglrenderer keeps one process-global resource table and one context table, and every Linux
//! guest numbers both from 1. [`Virgl3d`] gives each guest its own id space: guest resource and
//! context ids are translated to host ids allocated from [`VirglShared`], the resource handles
//! inside `SUBMIT_3D` streams are rewritten ([`super::virgl_stream`]), and a stream that names a
//! resource this guest does not own is rejected before virglrenderer sees it. Fence ids are
//! host-allocated too; the device model maps retired host fences back to guest responses.

use std::{
    cell::Cell,
    collections::{HashMap, HashSet},
    rc::Rc,
};

use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::{
    backing::BackingEntry,
    virgl_stream::{self, StreamError},
};
use crate::renderer::virgl::{Box3d, ResourceCreate3d, ResourceInfo, Transfer, Virgl, VirglError};

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

/// Why a 3D command failed, with the renderer's or the stream parser's error it came from; the
/// device model turns it into a `VIRTIO_GPU_RESP_ERR_*` (`GuestError`) and logs it with its
/// cause.
#[derive(Debug, thiserror::Error)]
pub enum Error3d {
    /// Unknown or duplicate guest resource id (`ERR_INVALID_RESOURCE_ID`).
    #[error("unknown or duplicate 3D resource id {0}")]
    Resource(u32),
    /// Unknown or duplicate guest context id, or context 0 (`ERR_INVALID_CONTEXT_ID`).
    #[error("unknown or duplicate context id {0}")]
    Context(u32),
    /// `CTX_CREATE` with a capset that is not virgl's (`ERR_INVALID_PARAMETER`).
    #[error("capset {0} is not VIRGL or VIRGL2")]
    Capset(u32),
    /// A backing entry outside guest memory (`ERR_INVALID_PARAMETER`).
    #[error("backing outside guest memory")]
    Backing,
    /// A transfer to or from a resource without backing (`ERR_INVALID_PARAMETER`).
    #[error("transfer with a resource that has no backing")]
    NoBacking,
    /// The `SUBMIT_3D` stream did not parse (`ERR_INVALID_PARAMETER`).
    #[error("SUBMIT_3D stream refused")]
    Stream(#[source] StreamError),
    /// virglrenderer refused the guest's arguments (`ERR_INVALID_PARAMETER`).
    #[error("virglrenderer refused the arguments")]
    Refused(#[source] VirglError),
    /// virglrenderer failed (`ERR_UNSPEC`).
    #[error("virglrenderer failed")]
    Renderer(#[source] VirglError),
}

/// A 3D resource of this guest.
#[derive(Debug)]
struct Resource3d {
    host: u32,
    /// Whether guest memory is attached (virglrenderer holds pointers into it).
    backed: bool,
}

/// A fence created on the host for a guest's fenced command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFence {
    /// A global fence (`virgl_renderer_create_fence`): retires in creation order.
    Global(u32),
    /// A context fence on (host context, ring): retires in order on that ring.
    Context {
        /// Host context id (virglrenderer's).
        ctx: u32,
        /// The context's fence ring (`VIRTIO_GPU_FLAG_INFO_RING_IDX`).
        ring: u32,
        /// The guest's fence id, echoed in the response.
        id: u64,
    },
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

    /// `(capset id, max version, max size in bytes)` of capset `index` (0: VIRGL, 1: VIRGL2).
    pub fn capset_info(&self, index: u32) -> Option<(u32, u32, u32)> {
        let id = match index {
            0 => crate::renderer::virgl::CAPSET_VIRGL,
            1 => crate::renderer::virgl::CAPSET_VIRGL2,
            _ => return None,
        };
        let (version, size) = self.virgl().capset_info(id);
        Some((id, version, size))
    }

    /// Number of capsets offered (`num_capsets` of the config space).
    pub fn num_capsets(&self) -> u32 {
        2
    }

    /// The capset bytes of `id` at `version`, zero-filled to the capset's size.
    pub fn capset(&self, id: u32, version: u32) -> Option<Vec<u8>> {
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

    /// Host id of guest context `ctx`.
    pub fn host_context(&self, ctx: u32) -> Option<u32> {
        self.contexts.get(&ctx).copied()
    }

    /// Host id of guest 3D resource `res`.
    pub fn host_resource(&self, res: u32) -> Option<u32> {
        self.resources.get(&res).map(|r| r.host)
    }

    /// `CTX_CREATE`: guest context `ctx` with capset `capset` (0: the default, VIRGL2).
    pub fn context_create(&mut self, ctx: u32, capset: u32, name: &str) -> Result<(), Error3d> {
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

    /// `CTX_DESTROY`.
    pub fn context_destroy(&mut self, ctx: u32) -> Result<(), Error3d> {
        let host = self.contexts.remove(&ctx).ok_or(Error3d::Context(ctx))?;
        self.attached.retain(|&(c, _)| c != ctx);
        self.virgl().context_destroy(host);
        Ok(())
    }

    /// `CTX_ATTACH_RESOURCE` / `CTX_DETACH_RESOURCE`.
    pub fn context_attach(&mut self, ctx: u32, res: u32, attach: bool) -> Result<(), Error3d> {
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

    /// `RESOURCE_CREATE_3D` of guest id `res` (the device model checked the id is unused).
    pub fn resource_create(&mut self, res: u32, mut args: ResourceCreate3d) -> Result<(), Error3d> {
        if res == 0 || self.resources.contains_key(&res) {
            return Err(Error3d::Resource(res));
        }
        let host = VirglShared::alloc(&self.shared.next_resource);
        args.handle = host;
        self.virgl().resource_create(&args).map_err(Error3d::Refused)?;
        self.resources.insert(res, Resource3d { host, backed: false });
        Ok(())
    }

    /// `RESOURCE_UNREF` of a 3D resource: detached from every context and freed.
    pub fn resource_unref(&mut self, res: u32) -> Result<(), Error3d> {
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

    /// `RESOURCE_ATTACH_BACKING` of a 3D resource: hand virglrenderer the host addresses of the
    /// (already validated) guest ranges. `mem` must stay mapped until [`Virgl3d::detach_backing`],
    /// [`Virgl3d::resource_unref`] or [`Virgl3d::reset`].
    pub fn attach_backing<M: GuestMemory>(
        &mut self,
        res: u32,
        entries: &[BackingEntry],
        mem: &M,
    ) -> Result<(), Error3d> {
        let host = self.host_resource(res).ok_or(Error3d::Resource(res))?;
        let iov = iovecs(mem, entries).ok_or(Error3d::Backing)?;
        // SAFETY: the iovecs point into guest memory mapped for the life of the connection; the
        // device detaches them (reset) before the memory is unmapped.
        unsafe { self.virgl().attach_iov(host, &iov) }.map_err(Error3d::Renderer)?;
        if let Some(r) = self.resources.get_mut(&res) {
            r.backed = true;
        }
        Ok(())
    }

    /// `RESOURCE_DETACH_BACKING` of a 3D resource.
    pub fn detach_backing(&mut self, res: u32) -> Result<(), Error3d> {
        let r = self.resources.get_mut(&res).ok_or(Error3d::Resource(res))?;
        if r.backed {
            r.backed = false;
            let host = r.host;
            self.virgl().detach_iov(host);
        }
        Ok(())
    }

    /// `TRANSFER_TO_HOST_3D` (`to_host`) or `TRANSFER_FROM_HOST_3D` between a resource and its
    /// backing; `ctx` is the guest context of the header (0: none).
    #[allow(clippy::too_many_arguments)]
    pub fn transfer(
        &self,
        res: u32,
        ctx: u32,
        level: u32,
        stride: u32,
        layer_stride: u32,
        bbox: Box3d,
        offset: u64,
        to_host: bool,
    ) -> Result<(), Error3d> {
        let r = self.resources.get(&res).ok_or(Error3d::Resource(res))?;
        if !r.backed {
            return Err(Error3d::NoBacking);
        }
        let ctx_id = if ctx == 0 { 0 } else { self.host_context(ctx).unwrap_or(0) };
        let t = Transfer { resource_id: r.host, ctx_id, level, stride, layer_stride, bbox, offset };
        let result = if to_host { self.virgl().transfer_write(&t) } else { self.virgl().transfer_read(&t) };
        result.map_err(Error3d::Refused)
    }

    /// `SUBMIT_3D`: rewrite the stream's resource handles to host ids (rejecting unknown opcodes
    /// and resources this guest does not own) and execute it in the guest's context.
    pub fn submit(&self, ctx: u32, stream: &mut [u32]) -> Result<(), Error3d> {
        let host_ctx = self.host_context(ctx).ok_or(Error3d::Context(ctx))?;
        virgl_stream::rewrite_resource_handles(stream, |guest| self.host_resource(guest)).map_err(Error3d::Stream)?;
        self.virgl().submit_cmd(host_ctx, stream).map_err(Error3d::Renderer)
    }

    /// Create the host fence of a fenced command: on `(ctx, ring)` when the guest gave a ring
    /// (`VIRTIO_GPU_FLAG_INFO_RING_IDX`), else a global one.
    pub fn create_fence(&self, ctx: u32, ring: Option<u32>) -> Result<HostFence, Error3d> {
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

    /// The GL texture behind guest resource `res`, for zero-copy scanout.
    pub fn resource_info(&self, res: u32) -> Option<ResourceInfo> {
        self.virgl().resource_info(self.host_resource(res)?)
    }

    /// Destroy every context and resource of this guest (disconnect, device reset).
    pub fn reset(&mut self) {
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

impl HostFence {
    /// Whether `retired` (a fence virglrenderer reported done) retires this one.
    pub fn retired_by(&self, retired: &crate::renderer::virgl::Fence) -> bool {
        match *self {
            HostFence::Global(id) => {
                // Global fences retire in order: everything up to the reported id is done.
                retired.global && (retired.fence_id as u32).wrapping_sub(id) as i32 >= 0
            }
            HostFence::Context { ctx, ring, id } => {
                !retired.global && retired.ctx_id == ctx && retired.ring_idx == ring && retired.fence_id >= id
            }
        }
    }
}

/// Host iovecs of validated guest ranges, split where a range crosses memory regions.
fn iovecs<M: GuestMemory>(mem: &M, entries: &[BackingEntry]) -> Option<Vec<libc::iovec>> {
    let mut iov = Vec::with_capacity(entries.len());
    for e in entries {
        let len = usize::try_from(e.len).ok()?;
        for slice in mem.get_slices(GuestAddress(e.addr), len, Permissions::ReadWrite).ok()? {
            let slice = slice.ok()?;
            iov.push(libc::iovec { iov_base: slice.ptr_guard_mut().as_ptr().cast(), iov_len: slice.len() });
        }
    }
    Some(iov)
}

impl std::fmt::Debug for VirglShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirglShared").field("next_resource", &self.next_resource.get()).finish_non_exhaustive()
    }
}
