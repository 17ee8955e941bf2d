//! The virtio-gpu device model (virtio spec 1.2, section 5.7.6): plain Rust, driven by
//! descriptor chains in guest memory, with no GL and no sockets (3D goes to a [`Renderer3d`]).
//!
//! [`Gpu`] owns the host side state of one guest's GPU: the host copies of 2D
//! resources, their guest backing (as guest-physical ranges, never mapped),
//! the scanouts and the cursors. It executes control queue and cursor queue
//! requests and records what the compositor must do as [`GpuEvent`]s.
//!
//! By idea: this file has the device, its configuration, events and the command dispatch
//! ([`Gpu::handle_request`]); `queue` the descriptor chains and fenced responses; `error`
//! the guest errors and their response codes; `rect` checked rectangles; `resource` 2D resources, their
//! backing (`super::backing`) and transfers; `scanout` display info, EDID,
//! scanouts and flushes; `cursor` the cursor queue; `three_d` the 3D commands. Tests by idea
//! in `tests/`.
//!
//! Every byte coming from the guest is treated as hostile: requests are parsed
//! with length checks, every size and offset computation is checked, host
//! allocations are bounded by [`GpuConfig::max_host_memory`] and use
//! `try_reserve`, and errors are answered with the `VIRTIO_GPU_RESP_ERR_*`
//! codes of the spec rather than panics. Each distinct kind of guest error is
//! logged with `tracing::warn!` once per [`Gpu`] (later occurrences at debug
//! level); every command is logged at debug level.
//!
//! # Notification contract
//!
//! [`Gpu::process_ctrl_queue`] and [`Gpu::process_cursor_queue`] only pop
//! chains and add them to the used ring. They never signal the guest and never
//! touch notification suppression: **the caller** (the vhost-user backend)
//! decides whether to signal, e.g. with
//! `if added && queue.needs_notification(mem)? { vring.signal_used_queue() }`,
//! and, with `VIRTIO_RING_F_EVENT_IDX`, drives the usual
//! `loop { disable_notification; process; if !enable_notification { break } }`
//! loop. Each call handles at most `queue.size()` chains so that a guest that
//! keeps refilling the ring cannot starve the caller; the enable/disable loop
//! (or the guest's next kick) picks up the rest.

use std::collections::{BTreeMap, VecDeque};
use std::mem::size_of;

use tracing::{debug, warn};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemory, Le32, Permissions};

use super::edid;
use super::format::Format;
use super::protocol::*;
use super::renderer3d::{Error3d, HostFence, HostRegion, ReadBack, Renderer3d, Renderer3dStatus, Transfer3d};
use crate::renderer::virgl::{Box3d, Fence, ResourceCreate3d as VirglCreate3d, ResourceInfo};

mod cursor;
mod error;
mod queue;
pub mod record;
mod rect;
mod resource;
mod scanout;
#[cfg(test)]
mod tests;
mod three_d;

pub use super::backing::{Backing, BackingEntry};
pub use cursor::CursorImage;
use error::{CommandError, GuestError, PendingReply, Reply, Timeline, Wait, response_bytes};
use queue::zeroed;
pub use rect::Rect;
pub use resource::{Resource, ResourceKind};
pub use scanout::Scanout;

/// Largest width or height of a 2D resource, pixels (an arbitrary but
/// generous bound; QEMU and Linux limit framebuffers to 16384 too).
pub const MAX_RESOURCE_DIMENSION: u32 = 16384;
/// Largest `nr_entries` accepted by RESOURCE_ATTACH_BACKING (as QEMU).
pub const MAX_BACKING_ENTRIES: u32 = 16384;
/// Largest cursor image, pixels per side (the spec's cursor size is 64x64).
pub const MAX_CURSOR_DIMENSION: u32 = 64;
/// Bookkeeping cost charged per resource against `max_host_memory`, bytes.
pub const RESOURCE_OVERHEAD_BYTES: u64 = 256;
/// Bookkeeping cost charged per stored backing entry against `max_host_memory`, bytes.
pub const BACKING_ENTRY_BYTES: u64 = size_of::<BackingEntry>() as u64;
/// Largest number of readable request bytes copied out of a chain: a
/// SUBMIT_3D header plus [`MAX_SUBMIT_BYTES`] of commands (more than an
/// ATTACH_BACKING with [`MAX_BACKING_ENTRIES`] entries). Anything beyond is
/// ignored.
pub const MAX_REQUEST_BYTES: usize = size_of::<CmdSubmit>() + MAX_SUBMIT_BYTES;
/// Largest SUBMIT_3D command buffer accepted, bytes (Mesa's virgl driver
/// sends at most 64 Ki dwords).
pub const MAX_SUBMIT_BYTES: usize = 1 << 20;
const _: () = assert!(
    MAX_REQUEST_BYTES >= size_of::<ResourceAttachBacking>() + MAX_BACKING_ENTRIES as usize * size_of::<MemEntry>()
);
/// Gallium's `PIPE_BUFFER` resource target: `width` is a length in bytes.
const PIPE_BUFFER: u32 = 0;
/// Longest 3D buffer resource accepted, bytes (also bounded by the host memory cap).
pub const MAX_BUFFER_BYTES: u32 = 256 << 20;
/// Default [`GpuConfig::max_host_memory`]: 512 MiB.
pub const DEFAULT_MAX_HOST_MEMORY: u64 = 512 << 20;
/// Default [`GpuConfig::preferred_size`]: 1280x800.
pub const DEFAULT_PREFERRED_SIZE: (u32, u32) = (1280, 800);

/// Bytes per pixel of every 2D format.
const BPP: u64 = 4;

/// Per-guest configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuConfig {
    /// Number of scanouts, 1..=16 (clamped by [`Gpu::new`]); all are reported
    /// enabled (connected) by GET_DISPLAY_INFO.
    pub num_scanouts: u32,
    /// Preferred mode of every scanout, pixels (width, height), reported by
    /// GET_DISPLAY_INFO and GET_EDID; each side clamped to 1..=16384.
    pub preferred_size: (u32, u32),
    /// Cap on [`Gpu::host_memory_used`], bytes: pixel data of every resource
    /// plus bookkeeping (see [`Resource::host_memory`]).
    pub max_host_memory: u64,
    /// Guest name, used as the EDID display name and in logs.
    pub name: String,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            num_scanouts: 1,
            preferred_size: DEFAULT_PREFERRED_SIZE,
            max_host_memory: DEFAULT_MAX_HOST_MEMORY,
            name: "guest".to_owned(),
        }
    }
}

/// Which virtqueue a request came from. Control commands are only accepted on
/// the control queue and cursor commands only on the cursor queue; anything
/// else is answered with `VIRTIO_GPU_RESP_ERR_UNSPEC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// Queue 0, `controlq`.
    Control,
    /// Queue 1, `cursorq`.
    Cursor,
}

/// What the compositor has to do, in command order. See [`Gpu::drain_events`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuEvent {
    /// SET_SCANOUT: `scanout_id` now shows `rect` of `resource_id` (0 = scanout
    /// disabled, then `rect` is `Rect::default()`). Also emitted with 0 when
    /// the shown resource is destroyed or on reset.
    ScanoutSet {
        /// Scanout index.
        scanout_id: u32,
        /// Resource shown, 0 = disabled.
        resource_id: u32,
        /// Source rectangle in the resource, pixels.
        rect: Rect,
    },
    /// RESOURCE_FLUSH: `rect` (resource coordinates, already clipped to the
    /// resource, non-empty) of `resource_id` is to be shown; emitted once per
    /// flush (the consumer finds the scanouts showing it).
    ResourceFlush {
        /// Flushed resource.
        resource_id: u32,
        /// Damaged area, pixels.
        rect: Rect,
    },
    /// A resource was destroyed (RESOURCE_UNREF or reset).
    ResourceDestroyed {
        /// Destroyed resource.
        resource_id: u32,
    },
    /// UPDATE_CURSOR: new image (None = hide), copied out of the cursor
    /// resource at update time, with hot spot and position.
    CursorUpdate {
        /// Scanout index.
        scanout_id: u32,
        /// New image, `None` hides the cursor.
        image: Option<CursorImage>,
        /// Position, pixels.
        x: i32,
        /// Position, pixels.
        y: i32,
    },
    /// MOVE_CURSOR.
    CursorMove {
        /// Scanout index.
        scanout_id: u32,
        /// Position, pixels.
        x: i32,
        /// Position, pixels.
        y: i32,
    },
}

/// The virtio-gpu device model of one guest. See the module docs.
#[derive(Debug)]
pub struct Gpu {
    config: GpuConfig,
    resources: BTreeMap<u32, Resource>,
    scanouts: Vec<Scanout>,
    events: Vec<GpuEvent>,
    host_memory_used: u64,
    /// Bit `GuestError as u8` set once that error kind was warned about.
    warned: u64,
    /// Guest errors of this VMM connection, per kind.
    faults: BTreeMap<&'static str, u64>,
    /// Where every request is recorded as a fuzz seed, when asked ([`Gpu::record_to`]).
    recorder: Option<record::Recorder>,
    /// The 3D renderer of this guest; `None` for a 2D-only device.
    renderer: Option<Box<dyn Renderer3d>>,
    /// What the response of the command being handled waits for (fenced commands, 3D on).
    deferred: Option<(Wait, Timeline)>,
    /// Deferred responses, in submission order.
    pending: VecDeque<PendingReply>,
}

impl Gpu {
    /// Creates the device. `num_scanouts` is clamped to 1..=16 and each side
    /// of `preferred_size` to 1..=[`MAX_RESOURCE_DIMENSION`] (with a warning).
    pub fn new(mut config: GpuConfig) -> Self {
        let n = config.num_scanouts.clamp(1, VIRTIO_GPU_MAX_SCANOUTS);
        let (w, h) = config.preferred_size;
        let size = (w.clamp(1, MAX_RESOURCE_DIMENSION), h.clamp(1, MAX_RESOURCE_DIMENSION));
        if n != config.num_scanouts || size != config.preferred_size {
            warn!(
                guest = %config.name,
                "virtio-gpu config clamped: {} scanouts -> {n}, {w}x{h} -> {}x{}",
                config.num_scanouts, size.0, size.1
            );
        }
        config.num_scanouts = n;
        config.preferred_size = size;
        let scanouts = (0..n).map(|_| Scanout::new(size.0, size.1)).collect();
        Gpu {
            config,
            resources: BTreeMap::new(),
            scanouts,
            events: Vec::new(),
            host_memory_used: 0,
            warned: 0,
            faults: BTreeMap::new(),
            recorder: None,
            renderer: None,
            deferred: None,
            pending: VecDeque::new(),
        }
    }

    /// The configuration in effect (after clamping).
    pub fn config(&self) -> &GpuConfig {
        &self.config
    }

    /// Virtio feature bits (a mask over the device-specific bits 0..24) this
    /// model implements: `1 << VIRTIO_GPU_F_EDID` only. Transport bits
    /// (`VIRTIO_F_VERSION_1`, ring features, ...) are the caller's business.
    pub fn device_features(&self) -> u64 {
        let mut features = 1 << VIRTIO_GPU_F_EDID;
        if self.renderer.is_some() {
            features |= (1 << VIRTIO_GPU_F_VIRGL) | (1 << VIRTIO_GPU_F_CONTEXT_INIT);
        }
        features
    }

    /// The device configuration space (5.7.4) with `num_scanouts` filled in
    /// and `events_read`, `events_clear`, `num_capsets` zero; the caller owns
    /// `events_read`/`events_clear` (set `VIRTIO_GPU_EVENT_DISPLAY` after
    /// [`Gpu::set_display_size`]).
    pub fn config_space(&self) -> VirtioGpuConfig {
        VirtioGpuConfig {
            num_scanouts: self.num_scanouts().into(),
            num_capsets: self.renderer.as_ref().map_or(0, |r| r.num_capsets()).into(),
            ..VirtioGpuConfig::default()
        }
    }

    /// Number of scanouts, 1..=16.
    pub fn num_scanouts(&self) -> u32 {
        self.scanouts.len() as u32
    }

    /// Scanout `scanout_id`, `None` if out of range.
    pub fn scanout(&self, scanout_id: u32) -> Option<&Scanout> {
        self.scanouts.get(scanout_id as usize)
    }

    /// The host copy of resource `resource_id`, if it exists.
    pub fn resource(&self, resource_id: u32) -> Option<&Resource> {
        self.resources.get(&resource_id)
    }

    /// All resources, by increasing id.
    pub fn resources(&self) -> impl Iterator<Item = (u32, &Resource)> + '_ {
        self.resources.iter().map(|(id, r)| (*id, r))
    }

    /// Sum of [`Resource::host_memory`] over all resources, bytes; never above
    /// [`GpuConfig::max_host_memory`].
    pub fn host_memory_used(&self) -> u64 {
        self.host_memory_used
    }

    /// Events since the last drain, in command order.
    ///
    /// Cursor events are coalesced: while undrained, a new cursor event for a
    /// scanout replaces (or, for a move after an update, updates the position
    /// of) the pending cursor event of that scanout in the trailing run of
    /// cursor events, so a cursor-queue flood cannot grow this list. Drain
    /// after every `process_*` call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, GpuEvent> {
        self.events.drain(..)
    }

    /// Device reset / guest disconnect: disables every scanout (emitting
    /// `ScanoutSet` with 0), hides every visible cursor (`CursorUpdate` with
    /// `None`), and destroys every resource (`ResourceDestroyed`, by
    /// increasing id). Display modes are kept.
    pub fn reset(&mut self) {
        if let Some(r) = self.renderer.as_mut() {
            r.reset();
        }
        self.pending.clear();
        self.deferred = None;
        for (i, s) in self.scanouts.iter_mut().enumerate() {
            let scanout_id = i as u32;
            if s.resource_id != 0 {
                s.resource_id = 0;
                s.rect = Rect::default();
                self.events.push(GpuEvent::ScanoutSet { scanout_id, resource_id: 0, rect: Rect::default() });
            }
            s.flush_count = 0;
            if s.cursor.take().is_some() {
                self.events.push(GpuEvent::CursorUpdate {
                    scanout_id,
                    image: None,
                    x: s.cursor_pos.0,
                    y: s.cursor_pos.1,
                });
            }
            s.cursor_pos = (0, 0);
        }
        let resources = std::mem::take(&mut self.resources);
        for resource_id in resources.into_keys() {
            self.events.push(GpuEvent::ResourceDestroyed { resource_id });
        }
        self.host_memory_used = 0;
    }

    /// Executes ONE request given its bytes (the readable part of a chain:
    /// control header followed by the command struct and, for
    /// ATTACH_BACKING, the memory entries) and returns the response bytes
    /// (control header, or a larger struct such as [`RespDisplayInfo`]; never
    /// empty). `mem` is the guest memory that backing addresses refer to.
    /// This is what `process_*` call per chain; exposed for tests and fuzzing.
    pub fn handle_request<M: GuestMemory>(&mut self, kind: QueueKind, request: &[u8], mem: &M) -> Vec<u8> {
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.record(kind, request);
        }
        let Some(hdr) = read_struct::<CtrlHdr>(request) else {
            self.guest_error(0, GuestError::ShortHeader);
            return response_bytes(CtrlHdr::default(), |h| h, VIRTIO_GPU_RESP_ERR_UNSPEC, None);
        };
        let ty = hdr.type_.to_native();
        debug!(
            guest = %self.config.name,
            queue = ?kind,
            cmd = ctrl_type_name(ty),
            flags = hdr.flags.to_native(),
            fence_id = hdr.fence_id.to_native(),
            len = request.len(),
            "virtio-gpu command"
        );
        let result = match (kind, ty) {
            (QueueKind::Control, VIRTIO_GPU_CMD_GET_DISPLAY_INFO) => self.get_display_info(),
            (QueueKind::Control, VIRTIO_GPU_CMD_GET_EDID) => self.get_edid(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_CREATE_2D) => self.resource_create_2d(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_UNREF) => self.resource_unref(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING) => self.resource_attach_backing(request, mem),
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING) => self.resource_detach_backing(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D) => self.transfer_to_host_2d(request, mem),
            (QueueKind::Control, VIRTIO_GPU_CMD_SET_SCANOUT) => self.set_scanout(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_FLUSH) => self.resource_flush(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_GET_CAPSET_INFO) => self.get_capset_info(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_GET_CAPSET) => self.get_capset(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_CTX_CREATE) => self.ctx_create(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_CTX_DESTROY) => self.ctx_destroy(hdr.ctx_id.to_native()),
            (QueueKind::Control, VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE | VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE) => {
                self.ctx_attach_resource(request, ty == VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE)
            }
            (QueueKind::Control, VIRTIO_GPU_CMD_RESOURCE_CREATE_3D) => self.resource_create_3d(request),
            (QueueKind::Control, VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D | VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D) => {
                self.transfer_3d(request, ty == VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D)
            }
            (QueueKind::Control, VIRTIO_GPU_CMD_SUBMIT_3D) => self.submit_3d(request),
            (QueueKind::Cursor, VIRTIO_GPU_CMD_UPDATE_CURSOR | VIRTIO_GPU_CMD_MOVE_CURSOR) => {
                self.update_cursor(request, ty == VIRTIO_GPU_CMD_MOVE_CURSOR)
            }
            (QueueKind::Control, VIRTIO_GPU_CMD_UPDATE_CURSOR | VIRTIO_GPU_CMD_MOVE_CURSOR)
            | (
                QueueKind::Cursor,
                VIRTIO_GPU_CMD_GET_DISPLAY_INFO..=VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING | VIRTIO_GPU_CMD_GET_EDID,
            ) => Err(GuestError::WrongQueue.into()),
            _ => Err(GuestError::UnsupportedCommand.into()),
        };
        let req = Some(&hdr);
        // Failed commands are fenced too: their response carries the fence id as well. Cursor
        // queue chains are never held: held responses go to the control queue's used ring.
        if kind == QueueKind::Control {
            self.fence_3d(&hdr);
        }
        match result {
            Ok(Reply::NoData) => response_bytes(CtrlHdr::default(), |h| h, VIRTIO_GPU_RESP_OK_NODATA, req),
            Ok(Reply::DisplayInfo(info)) => response_bytes(*info, |b| &mut b.hdr, VIRTIO_GPU_RESP_OK_DISPLAY_INFO, req),
            Ok(Reply::Edid(e)) => response_bytes(*e, |b| &mut b.hdr, VIRTIO_GPU_RESP_OK_EDID, req),
            Ok(Reply::CapsetInfo(info)) => response_bytes(info, |b| &mut b.hdr, VIRTIO_GPU_RESP_OK_CAPSET_INFO, req),
            Ok(Reply::Capset(caps)) => {
                let mut bytes = response_bytes(RespCapset::default(), |b| &mut b.hdr, VIRTIO_GPU_RESP_OK_CAPSET, req);
                bytes.extend_from_slice(&caps);
                bytes
            }
            Err(err) => {
                let response = err.kind.response();
                self.guest_error(ty, err);
                response_bytes(CtrlHdr::default(), |h| h, response, req)
            }
        }
    }

    /// Record every request from now on (the fuzz seed format of [`record`]); `None` stops.
    pub fn record_to(&mut self, recorder: Option<record::Recorder>) {
        self.recorder = recorder;
    }

    /// Warn again, once per kind, about the guest errors of the next VMM connection (a new
    /// boot of the VM); a device reset within one connection does not re-arm them, so a guest
    /// cannot flood the log by resetting its device.
    /// The fault counts of [`Gpu::faults`] start again too.
    pub fn rearm_warnings(&mut self) {
        self.warned = 0;
        self.faults.clear();
    }

    /// Guest errors since this VMM connection began (the last [`Gpu::rearm_warnings`]), per
    /// kind: the kind's name (`UnknownResource`, `RectOutOfBounds`, ...; for a 3D request, who
    /// refused it: [`Error3d::fault_name`], e.g. `StreamRefused` for scanway's stream parser,
    /// `VirglRefused`/`VirglFailed` for virglrenderer) and how many. For diagnostics (`scanway list --json`: `faults`).
    pub fn faults(&self) -> &BTreeMap<&'static str, u64> {
        &self.faults
    }

    /// Logs a guest error: `warn!` the first time this kind is seen, `debug!` after.
    fn guest_error(&mut self, ty: u32, err: impl Into<CommandError>) {
        let err: CommandError = err.into();
        let fault = err.cause.as_ref().map_or(err.kind.name(), Error3d::fault_name);
        *self.faults.entry(fault).or_default() += 1;
        let bit = 1u64 << (err.kind as u8);
        let cmd = ctrl_type_name(ty);
        if self.warned & bit == 0 {
            self.warned |= bit;
            warn!(
                guest = %self.config.name,
                cmd,
                "virtio-gpu guest error: {err} (further ones of this kind logged at debug level)"
            );
        } else {
            debug!(guest = %self.config.name, cmd, "virtio-gpu guest error: {err}");
        }
    }
}
