//! The vhost-user transport of one guest's virtio-gpu device.
//!
//! [`VhostUserGpu`] answers the VMM's vhost-user requests (features, memory table, vrings,
//! config space, `VHOST_USER_GPU_SET_SOCKET`) through rust-vmm's `vhost` crate and owns the
//! [`Gpu`] device model, the guest memory and the two virtqueues. It does no I/O of its own:
//! the event loop (`compositor::guests`) reads the socket, takes the queue kick eventfds that
//! [`VhostUserGpu::take_new_kicks`] hands out, and calls [`VhostUserGpu::process_queue`] when
//! one fires. Everything runs on the compositor's thread.

use std::{fs::File, os::fd::AsRawFd};

use tracing::{debug, info, warn};
use vhost::vhost_user::{
    self, GpuBackend, VhostUserBackendReqHandlerMut,
    message::{
        VhostUserConfigFlags, VhostUserInflight, VhostUserMemoryRegion, VhostUserProtocolFeatures,
        VhostUserShMemConfig, VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags,
        VhostUserVringState,
    },
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
use vmm_sys_util::eventfd::EventFd;

use super::device::{Gpu, GpuConfig};
use super::protocol::VirtioGpuConfig;

/// Index of the control queue (virtio 1.2, 5.7.2).
pub const CTRL_QUEUE: usize = 0;
/// Index of the cursor queue (virtio 1.2, 5.7.2).
pub const CURSOR_QUEUE: usize = 1;
/// Number of virtqueues of a virtio-gpu device.
pub const NUM_QUEUES: usize = 2;
/// Largest queue size we accept from the VMM (descriptors).
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// Most memory regions in one `SET_MEM_TABLE` (the vhost-user limit without mem slots).
const MAX_MEM_REGIONS: usize = 8;
/// Most replaced guest memory tables kept mapped before the device is reset.
const MAX_RETIRED_MEMS: usize = 8;

const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// `VHOST_USER_F_PROTOCOL_FEATURES` (vhost-user spec).
const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

type Result<T> = vhost_user::Result<T>;

/// One virtqueue as the VMM configured it.
struct Vring {
    queue: Queue,
    call: Option<EventFd>,
    /// Set by `SET_VRING_ENABLE` (or implicitly when protocol features are not negotiated).
    enabled: bool,
    /// Started by `SET_VRING_KICK`, stopped by `GET_VRING_BASE` (vhost-user spec, "Starting and
    /// stopping rings").
    started: bool,
    /// The guest broke the ring (virtio 1.2, 2.7.13.3: its available index ran more than the
    /// queue size ahead of what the device used): the queue is not served again until the ring
    /// is set up anew (`SET_VRING_BASE`, a device reset or the next VMM connection).
    broken: bool,
}

impl Vring {
    fn new() -> Self {
        // MAX_QUEUE_SIZE is a power of two, so `Queue::new` cannot fail.
        let queue = Queue::new(MAX_QUEUE_SIZE).unwrap_or_else(|_| unreachable!("valid queue size"));
        Vring { queue, call: None, enabled: false, started: false, broken: false }
    }

    /// Whether the guest's available index is more than the queue size ahead of the next entry
    /// the device takes, which no driver can produce (the ring holds `size` entries). An index
    /// that cannot be read counts as broken too.
    fn avail_index_broken(&self, mem: &GuestMemoryMmap) -> bool {
        match self.queue.avail_idx(mem, std::sync::atomic::Ordering::Acquire) {
            Ok(avail) => avail.0.wrapping_sub(self.queue.next_avail()) > self.queue.size(),
            Err(_) => true,
        }
    }
}

impl Vring {
    /// After used entries were added: interrupt the guest through the call eventfd, unless
    /// `VIRTIO_RING_F_EVENT_IDX` says it does not want one yet.
    fn signal_used(&mut self, mem: &GuestMemoryMmap, guest: &str, index: usize) {
        let notify = self.queue.needs_notification(mem).unwrap_or(true);
        if let (true, Some(call)) = (notify, self.call.as_ref())
            && let Err(e) = call.write(1)
        {
            warn!(guest, "signalling queue {index}: {e}");
        }
    }
}

/// A mapping of VMM virtual addresses to guest physical addresses (one `SET_MEM_TABLE` region).
#[derive(Clone, Copy, Debug)]
struct AddressMapping {
    vmm_addr: u64,
    size: u64,
    guest_phys_addr: u64,
}

/// One guest's virtio-gpu device behind a vhost-user socket.
pub struct VhostUserGpu {
    gpu: Gpu,
    name: String,
    mem: Option<GuestMemoryMmap>,
    /// Guest memory replaced by a later `SET_MEM_TABLE`: kept mapped, because virglrenderer may
    /// hold pointers into it (3D backing) until the device resets.
    retired_mems: Vec<GuestMemoryMmap>,
    mappings: Vec<AddressMapping>,
    vrings: [Vring; NUM_QUEUES],
    acked_features: u64,
    acked_protocol_features: u64,
    /// QEMU's display socket (`VHOST_USER_GPU_SET_SOCKET`). scanway shows the scanouts itself,
    /// so no pixels are sent on it, only scanout sizes ([`VhostUserGpu::announce_scanout`]).
    display_socket: Option<GpuBackend>,
    /// Kick eventfds received since the event loop last looked: (queue index, fd).
    new_kicks: Vec<(usize, EventFd)>,
}

impl VhostUserGpu {
    /// A device for guest `config.name`, before any VMM connected.
    pub fn new(config: GpuConfig) -> Self {
        let name = config.name.clone();
        VhostUserGpu {
            gpu: Gpu::new(config),
            name,
            mem: None,
            retired_mems: Vec::new(),
            mappings: Vec::new(),
            vrings: [Vring::new(), Vring::new()],
            acked_features: 0,
            acked_protocol_features: 0,
            display_socket: None,
            new_kicks: Vec::new(),
        }
    }

    /// Tell the VMM the size of scanout `scanout_id` (`VHOST_USER_GPU_SCANOUT`; 0x0 when
    /// disabled), so that its console (QEMU's D-Bus display, which scales absolute pointer
    /// positions by the console's size) matches what the guest shows. QEMU switches its
    /// console to the new size only with the next `VHOST_USER_GPU_UPDATE`, so one black pixel
    /// at (0, 0) follows; no other pixels are sent. Does nothing before the VMM sent
    /// `VHOST_USER_GPU_SET_SOCKET`; a failed send is logged at debug level.
    pub fn announce_scanout(&self, scanout_id: u32, width: u32, height: u32) {
        use vhost_user::gpu_message::{VhostUserGpuScanout, VhostUserGpuUpdate};
        let Some(socket) = &self.display_socket else { return };
        let mut sent = socket.set_scanout(&VhostUserGpuScanout { scanout_id, width, height });
        if sent.is_ok() && width > 0 && height > 0 {
            let pixel = VhostUserGpuUpdate { scanout_id, x: 0, y: 0, width: 1, height: 1 };
            sent = socket.update_scanout(&pixel, &[0, 0, 0, 0]);
        }
        if let Err(e) = sent {
            debug!(guest = %self.name, "VHOST_USER_GPU_SCANOUT {scanout_id} {width}x{height}: {e}");
        }
    }

    /// The device model.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The device model, mutably (the scanout layer drains its events).
    pub fn gpu_mut(&mut self) -> &mut Gpu {
        &mut self.gpu
    }

    /// Kick eventfds the VMM sent since the last call; the event loop polls them.
    pub fn take_new_kicks(&mut self) -> Vec<(usize, EventFd)> {
        std::mem::take(&mut self.new_kicks)
    }

    /// Forget the connection: free every resource, drop guest memory and queue state. Called when
    /// the VMM disconnects (and on `RESET_OWNER`); the device model emits the events that remove
    /// the guest's windows.
    pub fn reset(&mut self) {
        self.gpu.reset();
        self.mem = None;
        self.retired_mems.clear();
        self.mappings.clear();
        self.vrings = [Vring::new(), Vring::new()];
        self.acked_features = 0;
        self.acked_protocol_features = 0;
        self.display_socket = None;
        self.new_kicks.clear();
    }

    /// Execute every available request of queue `index` (after its kick fired) and signal the
    /// guest through the call eventfd if used entries were added. Does nothing while the ring is
    /// stopped, disabled or has no memory.
    pub fn process_queue(&mut self, index: usize) {
        let Some(mem) = self.mem.as_ref() else { return };
        let Some(vring) = self.vrings.get_mut(index) else { return };
        if !vring.started || !vring.enabled || vring.broken || !vring.queue.ready() {
            return;
        }
        // With VIRTIO_RING_F_EVENT_IDX the guest kicks again only after we publish avail_event
        // (enable_notification); requests that arrived meanwhile are picked up by the loop, which
        // ends because every round either takes entries off a sane ring or finds it broken.
        let mut used = false;
        loop {
            if vring.avail_index_broken(mem) {
                vring.broken = true;
                warn!(
                    guest = %self.name,
                    "queue {index}: the available index is more than the queue size ahead of the device \
                     (a broken ring): the queue is stopped until the VMM sets it up again"
                );
                break;
            }
            if let Err(e) = vring.queue.disable_notification(mem) {
                warn!(guest = %self.name, "queue {index}: {e}");
                break;
            }
            used |= match index {
                CTRL_QUEUE => self.gpu.process_ctrl_queue(&mut vring.queue, mem),
                CURSOR_QUEUE => self.gpu.process_cursor_queue(&mut vring.queue, mem),
                _ => false,
            };
            match vring.queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    warn!(guest = %self.name, "queue {index}: {e}");
                    break;
                }
            }
        }
        if !used {
            return;
        }
        vring.signal_used(mem, &self.name, index);
    }

    /// Answer the deferred (fenced) responses whose fences virglrenderer retired, and signal the
    /// guest if any were added to the control queue.
    /// `shared` are the process-wide virglrenderer's fences; a guest whose 3D runs in a
    /// worker takes its own instead ([`Gpu::own_fences`]).
    pub fn retire_fences(&mut self, shared: &[crate::renderer::virgl::Fence]) {
        let own = self.gpu.own_fences();
        let fences = own.as_deref().unwrap_or(shared);
        if fences.is_empty() || self.gpu.pending_fences() == 0 {
            return;
        }
        let Some(mem) = self.mem.as_ref() else { return };
        let vring = &mut self.vrings[CTRL_QUEUE];
        if !self.gpu.retire_fences(fences, &mut vring.queue, mem) {
            return;
        }
        vring.signal_used(mem, &self.name, CTRL_QUEUE);
    }

    fn vring(&mut self, index: u32) -> Result<&mut Vring> {
        self.vrings.get_mut(index as usize).ok_or(vhost_user::Error::InvalidParam)
    }

    /// Translate a VMM virtual address (from `SET_VRING_ADDR`) to a guest physical address.
    fn vmm_to_guest(&self, vmm_addr: u64) -> Result<GuestAddress> {
        self.mappings
            .iter()
            .find(|m| vmm_addr >= m.vmm_addr && vmm_addr - m.vmm_addr < m.size)
            .map(|m| GuestAddress(m.guest_phys_addr + (vmm_addr - m.vmm_addr)))
            .ok_or(vhost_user::Error::InvalidParam)
    }

    fn protocol_features_negotiated(&self) -> bool {
        self.acked_features & VHOST_USER_F_PROTOCOL_FEATURES != 0
    }
}

fn map_region(region: &VhostUserMemoryRegion, file: File) -> Result<GuestRegionMmap> {
    let size = usize::try_from(region.memory_size).map_err(|_| vhost_user::Error::InvalidParam)?;
    if size == 0 || region.guest_phys_addr.checked_add(region.memory_size).is_none() {
        return Err(vhost_user::Error::InvalidParam);
    }
    let mapping = MmapRegion::build(
        Some(FileOffset::new(file, region.mmap_offset)),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED | libc::MAP_NORESERVE,
    )
    .map_err(|e| {
        warn!("mapping guest memory region: {e}");
        vhost_user::Error::InvalidParam
    })?;
    GuestRegionMmap::new(mapping, GuestAddress(region.guest_phys_addr)).ok_or(vhost_user::Error::InvalidParam)
}

impl VhostUserBackendReqHandlerMut for VhostUserGpu {
    fn set_owner(&mut self) -> Result<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> Result<()> {
        self.reset();
        Ok(())
    }

    fn reset_device(&mut self) -> Result<()> {
        self.reset();
        Ok(())
    }

    fn get_features(&mut self) -> Result<u64> {
        Ok(VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_INDIRECT_DESC
            | VIRTIO_RING_F_EVENT_IDX
            | VHOST_USER_F_PROTOCOL_FEATURES
            | self.gpu.device_features())
    }

    fn set_features(&mut self, features: u64) -> Result<()> {
        debug!(guest = %self.name, "SET_FEATURES {features:#x}");
        // QEMU's frontend may ack transport bits it handles itself (VIRTIO_F_RING_RESET, bit 40)
        // that the backend never offered; keep only what we offered.
        let features = features & self.get_features()?;
        self.acked_features = features;
        // Without protocol features a ring is enabled as soon as it starts (vhost-user spec).
        let enabled = !self.protocol_features_negotiated();
        let event_idx = features & VIRTIO_RING_F_EVENT_IDX != 0;
        for vring in &mut self.vrings {
            vring.enabled = enabled;
            vring.queue.set_event_idx(event_idx);
        }
        debug!(guest = %self.name, "features {features:#x}");
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<Vec<u64>>> {
        for r in regions {
            debug!(
                guest = %self.name,
                "SET_MEM_TABLE region gpa {:#x} size {:#x} vmm {:#x} offset {:#x}",
                { r.guest_phys_addr }, { r.memory_size }, { r.user_addr }, { r.mmap_offset }
            );
        }
        if regions.len() != files.len() || regions.len() > MAX_MEM_REGIONS {
            return Err(vhost_user::Error::InvalidParam);
        }
        let mut mapped = Vec::with_capacity(regions.len());
        let mut mappings = Vec::with_capacity(regions.len());
        for (region, file) in regions.iter().zip(files) {
            mapped.push(map_region(region, file)?);
            mappings.push(AddressMapping {
                vmm_addr: region.user_addr,
                size: region.memory_size,
                guest_phys_addr: region.guest_phys_addr,
            });
        }
        let mem = GuestMemoryMmap::from_regions(mapped).map_err(|e| {
            warn!(guest = %self.name, "guest memory table: {e}");
            vhost_user::Error::InvalidParam
        })?;
        info!(guest = %self.name, "guest memory: {} region(s)", mappings.len());
        if let Some(old) = self.mem.replace(mem) {
            if self.retired_mems.len() >= MAX_RETIRED_MEMS {
                // Bound the address space kept: start the device over (frees every resource,
                // so no backing points into the old mappings any more).
                warn!(guest = %self.name, "guest memory replaced {MAX_RETIRED_MEMS} times; resetting the device");
                self.gpu.reset();
                self.retired_mems.clear();
            } else {
                self.retired_mems.push(old);
            }
        }
        self.mappings = mappings;
        if let Some(mem) = &self.mem {
            self.gpu.set_guest_memory(mem);
        }
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        debug!(guest = %self.name, "SET_VRING_NUM {index}: {num}");
        let vring = self.vring(index)?;
        let num = u16::try_from(num).map_err(|_| vhost_user::Error::InvalidParam)?;
        vring.queue.try_set_size(num).map_err(|_| vhost_user::Error::InvalidParam)
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> Result<()> {
        debug!(guest = %self.name, "SET_VRING_ADDR {index}: desc {descriptor:#x} used {used:#x} avail {available:#x}");
        let desc = self.vmm_to_guest(descriptor)?;
        let avail = self.vmm_to_guest(available)?;
        let used = self.vmm_to_guest(used)?;
        let vring = self.vring(index)?;
        let q = &mut vring.queue;
        q.try_set_desc_table_address(desc).map_err(|_| vhost_user::Error::InvalidParam)?;
        q.try_set_avail_ring_address(avail).map_err(|_| vhost_user::Error::InvalidParam)?;
        q.try_set_used_ring_address(used).map_err(|_| vhost_user::Error::InvalidParam)?;
        q.set_ready(true);
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<()> {
        let vring = self.vring(index)?;
        let base = u16::try_from(base).map_err(|_| vhost_user::Error::InvalidParam)?;
        vring.queue.set_next_avail(base);
        vring.queue.set_next_used(base);
        vring.broken = false;
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> Result<VhostUserVringState> {
        let vring = self.vring(index)?;
        vring.started = false;
        let next = vring.queue.next_avail();
        vring.queue.reset();
        vring.queue.set_ready(false);
        Ok(VhostUserVringState::new(index, u32::from(next)))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        let index = usize::from(index);
        let vring = self.vrings.get_mut(index).ok_or(vhost_user::Error::InvalidParam)?;
        vring.started = true;
        if let Some(file) = fd {
            // SAFETY: the VMM handed us this eventfd; `File` owned it and we move the ownership.
            let kick =
                unsafe { <EventFd as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(file)) };
            debug!(guest = %self.name, "queue {index} kick fd {}", kick.as_raw_fd());
            self.new_kicks.push((index, kick));
        }
        Ok(())
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        let vring = self.vrings.get_mut(usize::from(index)).ok_or(vhost_user::Error::InvalidParam)?;
        // SAFETY: as in set_vring_kick, ownership of the VMM's eventfd moves into the EventFd.
        vring.call = fd.map(|f| unsafe {
            <EventFd as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(f))
        });
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, _fd: Option<File>) -> Result<()> {
        self.vrings.get(usize::from(index)).map(|_| ()).ok_or(vhost_user::Error::InvalidParam)
    }

    fn get_protocol_features(&mut self) -> Result<VhostUserProtocolFeatures> {
        // CONFIG: QEMU's vhost-user-gpu reads virtio_gpu_config through GET_CONFIG and refuses a
        // backend without it. REPLY_ACK is handled by the vhost crate.
        Ok(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK)
    }

    fn set_protocol_features(&mut self, features: u64) -> Result<()> {
        self.acked_protocol_features = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> Result<u64> {
        Ok(NUM_QUEUES as u64)
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<()> {
        if !self.protocol_features_negotiated() {
            return Err(vhost_user::Error::InvalidOperation("protocol features not negotiated"));
        }
        self.vring(index)?.enabled = enable;
        Ok(())
    }

    fn get_config(&mut self, offset: u32, size: u32, _flags: VhostUserConfigFlags) -> Result<Vec<u8>> {
        let config: VirtioGpuConfig = self.gpu.config_space();
        let bytes = vm_memory::ByteValued::as_slice(&config);
        let start = offset as usize;
        let end = start.checked_add(size as usize).ok_or(vhost_user::Error::InvalidParam)?;
        bytes.get(start..end).map(<[u8]>::to_vec).ok_or(vhost_user::Error::InvalidParam)
    }

    fn set_config(&mut self, offset: u32, buf: &[u8], _flags: VhostUserConfigFlags) -> Result<()> {
        // Only `events_clear` (offset 4) is writable; no events are raised by scanway itself.
        debug!(guest = %self.name, "set_config offset {offset} len {}", buf.len());
        Ok(())
    }

    fn set_gpu_socket(&mut self, gpu_backend: GpuBackend) -> Result<()> {
        debug!(guest = %self.name, "VHOST_USER_GPU_SET_SOCKET accepted");
        self.display_socket = Some(gpu_backend);
        Ok(())
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> Result<File> {
        Err(vhost_user::Error::InvalidOperation("shared objects are not supported"))
    }

    fn get_inflight_fd(&mut self, _inflight: &VhostUserInflight) -> Result<(VhostUserInflight, File)> {
        Err(vhost_user::Error::InvalidOperation("inflight tracking is not supported"))
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> Result<()> {
        Err(vhost_user::Error::InvalidOperation("inflight tracking is not supported"))
    }

    fn get_max_mem_slots(&mut self) -> Result<u64> {
        Err(vhost_user::Error::InvalidOperation("memory slots are not supported"))
    }

    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<u64>> {
        Err(vhost_user::Error::InvalidOperation("memory slots are not supported"))
    }

    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> Result<()> {
        Err(vhost_user::Error::InvalidOperation("memory slots are not supported"))
    }

    fn set_device_state_fd(
        &mut self,
        _direction: vhost_user::message::VhostTransferStateDirection,
        _phase: vhost_user::message::VhostTransferStatePhase,
        _fd: File,
    ) -> Result<Option<File>> {
        Err(vhost_user::Error::InvalidOperation("migration is not supported"))
    }

    fn check_device_state(&mut self) -> Result<()> {
        Err(vhost_user::Error::InvalidOperation("migration is not supported"))
    }

    fn get_shmem_config(&mut self) -> Result<VhostUserShMemConfig> {
        Err(vhost_user::Error::InvalidOperation("shared memory regions are not supported"))
    }

    fn set_log_base(&mut self, _log: &vhost_user::message::VhostUserLog, _file: File) -> Result<()> {
        Err(vhost_user::Error::InvalidOperation("dirty logging is not supported"))
    }
}

#[cfg(test)]
mod tests;
