//! A fake [`Renderer3d`] without GL: it records every call, keeps its own context, resource and
//! attachment tables so that it answers like virglrenderer (unknown or duplicate ids are
//! [`Error3d`]s, ring fences die with their context), fails a call when told to, and retires
//! its fences when the test says so, as the `Fence`s virglrenderer reports, for
//! [`Gpu::retire_fences`].
//!
//! The test keeps a clone ([`Fake3d`] is a shared handle) and gives the device another.

use std::cell::{Ref, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::renderer::virgl::VirglError;
use crate::virtio::renderer3d::CapsetInfo;

/// The capsets the fake offers: (id, max version, size in bytes).
pub(super) const FAKE_CAPSETS: [(u32, u32, u32); 2] = [(1, 1, 16), (2, 2, 40)];
/// Host context ids of the fake start here (so they never look like guest ids).
const HOST_CTX_BASE: u32 = 1000;

/// One call the device made, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Call {
    ContextCreate {
        ctx: u32,
        capset: u32,
        name: String,
    },
    ContextDestroy(u32),
    ContextAttach {
        ctx: u32,
        res: u32,
        attach: bool,
    },
    ResourceCreate {
        res: u32,
        args: VirglCreate3d,
    },
    ResourceUnref(u32),
    /// The iovecs as (host address, length).
    AttachBacking {
        res: u32,
        iov: Vec<(usize, usize)>,
    },
    DetachBacking(u32),
    Transfer(Transfer3d),
    Submit {
        ctx: u32,
        stream: Vec<u32>,
    },
    CreateFence {
        ctx: u32,
        ring: Option<u32>,
    },
    Reset,
}

/// The fallible methods, to make one fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Method {
    ContextCreate,
    ContextDestroy,
    ContextAttach,
    ResourceCreate,
    ResourceUnref,
    AttachBacking,
    DetachBacking,
    Transfer,
    Submit,
    CreateFence,
}

/// How a call told to fail fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The renderer failed ([`Error3d::Renderer`]: `ERR_UNSPEC`).
    Renderer,
    /// The renderer refused the arguments ([`Error3d::Refused`]: `ERR_INVALID_PARAMETER`).
    Refused,
}

impl Failure {
    fn error(self) -> Error3d {
        let e = VirglError::Call { call: "fake", code: 22 };
        match self {
            Failure::Renderer => Error3d::Renderer(e),
            Failure::Refused => Error3d::Refused(e),
        }
    }
}

/// A resource of the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FakeResource {
    pub(super) args: VirglCreate3d,
    /// Total length of the attached iovecs, bytes; `None` without backing.
    pub(super) backing: Option<usize>,
}

/// What the fake knows; read it with [`Fake3d::state`].
#[derive(Debug, Default)]
pub(super) struct FakeState {
    /// Every call of a fallible method, in order (queries are not recorded).
    pub(super) calls: Vec<Call>,
    /// Guest context id -> host context id.
    pub(super) contexts: BTreeMap<u32, u32>,
    /// Guest resource id -> resource.
    pub(super) resources: BTreeMap<u32, FakeResource>,
    /// (guest context, guest resource) attachments.
    pub(super) attached: BTreeSet<(u32, u32)>,
    /// Fences created and not retired yet, in creation order.
    pub(super) fences: Vec<HostFence>,
    /// Resource ids the device named (other than to create them) that the fake did not have.
    pub(super) unknown_resources: Vec<u32>,
    /// Calls told to fail, once each.
    fail: BTreeMap<Method, Failure>,
    next_ctx: u32,
    next_fence: u32,
}

impl FakeState {
    /// Fail this call if told to (once).
    fn injected(&mut self, method: Method) -> Result<(), Error3d> {
        self.fail.remove(&method).map_or(Ok(()), |f| Err(f.error()))
    }

    fn resource(&mut self, res: u32) -> Result<&mut FakeResource, Error3d> {
        if !self.resources.contains_key(&res) {
            self.unknown_resources.push(res);
        }
        self.resources.get_mut(&res).ok_or(Error3d::Resource(res))
    }

    fn host_context(&self, ctx: u32) -> Result<u32, Error3d> {
        self.contexts.get(&ctx).copied().ok_or(Error3d::Context(ctx))
    }
}

/// A shared handle on one fake renderer.
#[derive(Clone, Debug, Default)]
pub(super) struct Fake3d(Rc<RefCell<FakeState>>);

impl Fake3d {
    pub(super) fn new() -> Self {
        Fake3d::default()
    }

    /// A boxed handle for [`Gpu::enable_3d`].
    pub(super) fn boxed(&self) -> Box<dyn Renderer3d> {
        Box::new(self.clone())
    }

    pub(super) fn state(&self) -> Ref<'_, FakeState> {
        self.0.borrow()
    }

    /// The next call of `method` fails with `failure` (and changes nothing, except that a
    /// failing unref still frees the resource, as the trait says).
    pub(super) fn fail(&self, method: Method, failure: Failure) {
        self.0.borrow_mut().fail.insert(method, failure);
    }

    /// Forget the failures told and not happened yet.
    pub(super) fn clear_failures(&self) {
        self.0.borrow_mut().fail.clear();
    }

    /// The calls so far, and forget them.
    pub(super) fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.0.borrow_mut().calls)
    }

    /// Retire the `n` oldest fences (all if fewer) and report them as virglrenderer does:
    /// merged, one [`Fence`] per timeline, the newest retired on it.
    pub(super) fn retire(&self, n: usize) -> Vec<Fence> {
        let mut st = self.0.borrow_mut();
        let n = n.min(st.fences.len());
        let retired: Vec<HostFence> = st.fences.drain(..n).collect();
        let mut reports: Vec<Fence> = Vec::new();
        for f in retired.iter().rev() {
            let report = match *f {
                HostFence::Global(id) => Fence { ctx_id: 0, ring_idx: 0, fence_id: u64::from(id), global: true },
                HostFence::Context { ctx, ring, id } => {
                    Fence { ctx_id: ctx, ring_idx: ring, fence_id: id, global: false }
                }
            };
            if !reports
                .iter()
                .any(|r| (r.global, r.ctx_id, r.ring_idx) == (report.global, report.ctx_id, report.ring_idx))
            {
                reports.push(report);
            }
        }
        reports
    }

    /// Retire every fence.
    pub(super) fn retire_all(&self) -> Vec<Fence> {
        self.retire(usize::MAX)
    }
}

impl Renderer3d for Fake3d {
    fn num_capsets(&self) -> u32 {
        FAKE_CAPSETS.len() as u32
    }

    fn capset_info(&self, index: u32) -> Option<CapsetInfo> {
        let &(id, max_version, max_size) = FAKE_CAPSETS.get(index as usize)?;
        Some(CapsetInfo { id, max_version, max_size })
    }

    /// Byte `i` of capset `id` at `version` is `id * 16 + version + i`.
    fn capset(&mut self, id: u32, version: u32) -> Option<Vec<u8>> {
        let &(_, max_version, size) = FAKE_CAPSETS.iter().find(|c| c.0 == id)?;
        (version <= max_version).then(|| (0..size).map(|i| (id * 16 + version + i) as u8).collect())
    }

    fn context_create(&mut self, ctx: u32, capset: u32, name: &str) -> Result<(), Error3d> {
        let mut st = self.0.borrow_mut();
        st.calls.push(Call::ContextCreate { ctx, capset, name: name.to_owned() });
        if ctx == 0 || st.contexts.contains_key(&ctx) {
            return Err(Error3d::Context(ctx));
        }
        if capset != 0 && !FAKE_CAPSETS.iter().any(|c| c.0 == capset) {
            return Err(Error3d::Capset(capset));
        }
        st.injected(Method::ContextCreate)?;
        let host = HOST_CTX_BASE + st.next_ctx;
        st.next_ctx += 1;
        st.contexts.insert(ctx, host);
        Ok(())
    }

    fn context_destroy(&mut self, ctx: u32) -> Result<(), Error3d> {
        let mut st = self.0.borrow_mut();
        st.calls.push(Call::ContextDestroy(ctx));
        let host = st.host_context(ctx)?;
        st.injected(Method::ContextDestroy)?;
        st.contexts.remove(&ctx);
        st.attached.retain(|&(c, _)| c != ctx);
        // virglrenderer frees the fences of a destroyed context without retiring them.
        st.fences.retain(|f| !matches!(*f, HostFence::Context { ctx: c, .. } if c == host));
        Ok(())
    }

    fn context_attach(&mut self, ctx: u32, res: u32, attach: bool) -> Result<(), Error3d> {
        let mut st = self.0.borrow_mut();
        st.calls.push(Call::ContextAttach { ctx, res, attach });
        st.host_context(ctx)?;
        st.resource(res)?;
        st.injected(Method::ContextAttach)?;
        if attach {
            st.attached.insert((ctx, res));
        } else {
            st.attached.remove(&(ctx, res));
        }
        Ok(())
    }

    fn resource_create(&mut self, res: u32, args: VirglCreate3d) -> Result<(), Error3d> {
        let mut st = self.0.borrow_mut();
        st.calls.push(Call::ResourceCreate { res, args });
        if res == 0 || st.resources.contains_key(&res) {
            return Err(Error3d::Resource(res));
        }
        st.injected(Method::ResourceCreate)?;
        st.resources.insert(res, FakeResource { args, backing: None });
        Ok(())
    }

    fn resource_unref(&mut self, res: u32) -> Result<(), Error3d> {
        let mut st = self.0.borrow_mut();
        st.calls.push(Call::ResourceUnref(res));
        st.resource(res)?;
        st.resources.remove(&res);
        st.attached.retain(|&(_, r)| r != res);
        st.injected(Method::ResourceUnref)
    }

    unsafe fn attach_backing(&mut self, res: u32, iov: &[libc::iovec]) -> Result<(), Error3d> {
        let mut st = self.0.borrow_mut();
        let list: Vec<(usize, usize)> = iov.iter().map(|v| (v.iov_base as usize, v.iov_len)).collect();
        let total = list.iter().map(|v| v.1).sum();
        st.calls.push(Call::AttachBacking { res, iov: list });
        if st.resource(res)?.backing.is_some() || iov.is_empty() {
            return Err(Error3d::Renderer(VirglError::InvalidArgument("resource already has backing")));
        }
        st.injected(Method::AttachBacking)?;
        st.resource(res)?.backing = Some(total);
        Ok(())
    }

    fn detach_backing(&mut self, res: u32) -> Result<(), Error3d> {
        let mut st = self.0.borrow_mut();
        st.calls.push(Call::DetachBacking(res));
        st.resource(res)?;
        st.injected(Method::DetachBacking)?;
        st.resource(res)?.backing = None;
        Ok(())
    }

    fn transfer(&mut self, t: &Transfer3d) -> Result<(), Error3d> {
        let mut st = self.0.borrow_mut();
        st.calls.push(Call::Transfer(*t));
        if st.resource(t.resource)?.backing.is_none() {
            return Err(Error3d::NoBacking);
        }
        st.injected(Method::Transfer)
    }

    fn submit(&mut self, ctx: u32, stream: &mut [u32]) -> Result<(), Error3d> {
        let mut st = self.0.borrow_mut();
        st.calls.push(Call::Submit { ctx, stream: stream.to_vec() });
        st.host_context(ctx)?;
        st.injected(Method::Submit)
    }

    fn create_fence(&mut self, ctx: u32, ring: Option<u32>) -> Result<HostFence, Error3d> {
        let mut st = self.0.borrow_mut();
        st.calls.push(Call::CreateFence { ctx, ring });
        let host = match ring {
            Some(_) => Some(st.host_context(ctx)?),
            None => None,
        };
        st.injected(Method::CreateFence)?;
        st.next_fence += 1;
        let id = st.next_fence;
        let fence = match (host, ring) {
            (Some(ctx), Some(ring)) => HostFence::Context { ctx, ring, id: u64::from(id) },
            _ => HostFence::Global(id),
        };
        st.fences.push(fence);
        Ok(fence)
    }

    /// The texture name is the guest id plus 500.
    fn resource_info(&self, res: u32) -> Option<ResourceInfo> {
        let st = self.0.borrow();
        let r = st.resources.get(&res)?;
        Some(ResourceInfo {
            tex_id: res + 500,
            width: r.args.width,
            height: r.args.height,
            depth: r.args.depth,
            virgl_format: r.args.format,
            ..ResourceInfo::default()
        })
    }

    fn reset(&mut self) {
        let mut st = self.0.borrow_mut();
        st.calls.push(Call::Reset);
        let hosts: Vec<u32> = st.contexts.values().copied().collect();
        st.fences.retain(|f| !matches!(*f, HostFence::Context { ctx, .. } if hosts.contains(&ctx)));
        st.contexts.clear();
        st.resources.clear();
        st.attached.clear();
    }
}
