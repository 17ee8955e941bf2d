//! The VMM's part: the vhost-user frontend handshake in the order QEMU's vhost-user-gpu sends
//! it (vhost-user spec, "Initializing the connection" and "Starting and stopping rings"), and
//! the helper that runs blocking frontend requests on a thread while the caller pumps the
//! backend.

use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

use super::ring::RingLayout;
use crate::virtio::protocol::{VIRTIO_GPU_F_EDID, VirtioGpuConfig, read_struct};
use crate::virtio::vhost::NUM_QUEUES;

/// `VIRTIO_F_VERSION_1` (virtio 1.2, 6): a virtio 1.x device.
pub(crate) const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_RING_F_EVENT_IDX` (virtio 1.2, 6): `used_event` / `avail_event` suppression.
pub(crate) const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// Most `pump` calls one blocking request waits through (besides its timeout).
pub(super) const MAX_PUMPS: u64 = 1_000_000;

/// What the frontend tells the backend about the guest: memory and rings.
pub(super) struct Plan {
    /// The one memory region (memfd-backed, guest physical address 0).
    pub region: VhostUserMemoryRegionInfo,
    /// Ctrl and cursor queue, guest physical addresses.
    pub rings: [RingLayout; NUM_QUEUES],
    /// The guest kicks these (the backend polls them).
    pub kicks: [EventFd; NUM_QUEUES],
    /// The backend signals these.
    pub calls: [EventFd; NUM_QUEUES],
    /// Negotiate `VIRTIO_RING_F_EVENT_IDX` if the backend offers it.
    pub event_idx: bool,
}

/// What the handshake settled.
pub(super) struct Negotiated {
    pub frontend: Frontend,
    /// Virtio feature bits acked with `SET_FEATURES`.
    pub features: u64,
    /// Protocol feature bits acked with `SET_PROTOCOL_FEATURES`.
    pub protocol_features: u64,
    /// The device configuration space read with `GET_CONFIG` (virtio 1.2, 5.7.4).
    pub config: VirtioGpuConfig,
}

/// The frontend's side of connecting and starting the device, as QEMU does it: features,
/// protocol features, owner, config space, then (as on `vhost_dev_start`) the acked features,
/// the memory table and each ring's size, base, addresses, kick and call, and finally
/// `SET_VRING_ENABLE`. With `REPLY_ACK` every later request waits for the backend's ack, so when
/// this returns the backend has handled all of it. `GPU_SET_SOCKET` (QEMU's display channel) is
/// not sent: the vhost crate's frontend has no request for it and scanway works without it.
pub(super) fn handshake(stream: UnixStream, plan: Plan) -> anyhow::Result<Negotiated> {
    let mut frontend = Frontend::from_stream(stream, NUM_QUEUES as u64);
    let offered = frontend.get_features().context("GET_FEATURES")?;
    ensure!(offered & VIRTIO_F_VERSION_1 != 0, "backend offers no VIRTIO_F_VERSION_1 ({offered:#x})");
    let protocol = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    let mut protocol_features = 0;
    if offered & protocol != 0 {
        let offered_protocol = frontend.get_protocol_features().context("GET_PROTOCOL_FEATURES")?;
        // QEMU's vhost-user-gpu refuses a backend without CONFIG.
        ensure!(
            offered_protocol.contains(VhostUserProtocolFeatures::CONFIG),
            "backend offers no CONFIG protocol feature ({offered_protocol:?})"
        );
        let acked = offered_protocol & (VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK);
        frontend.set_protocol_features(acked).context("SET_PROTOCOL_FEATURES")?;
        if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        protocol_features = acked.bits();
    }
    frontend.set_owner().context("SET_OWNER")?;

    let size = u32::try_from(size_of::<VirtioGpuConfig>())?;
    let zero = vec![0; size_of::<VirtioGpuConfig>()];
    let config = if protocol_features & VhostUserProtocolFeatures::CONFIG.bits() != 0 {
        let (_, bytes) = frontend.get_config(0, size, VhostUserConfigFlags::empty(), &zero).context("GET_CONFIG")?;
        read_struct::<VirtioGpuConfig>(&bytes).context("GET_CONFIG reply too short")?
    } else {
        VirtioGpuConfig::default()
    };

    // The guest driver acks version 1 and EDID; the VMM adds what the transport needs.
    let wanted = VIRTIO_F_VERSION_1
        | (1 << VIRTIO_GPU_F_EDID)
        | if plan.event_idx { VIRTIO_RING_F_EVENT_IDX } else { 0 }
        | protocol;
    let features = offered & wanted;
    frontend.set_features(features).context("SET_FEATURES")?;
    frontend.set_mem_table(&[plan.region]).context("SET_MEM_TABLE")?;
    let host = plan.region.userspace_addr;
    for (index, ring) in plan.rings.iter().enumerate() {
        frontend.set_vring_num(index, ring.size).with_context(|| format!("SET_VRING_NUM {index}"))?;
        frontend.set_vring_base(index, 0).with_context(|| format!("SET_VRING_BASE {index}"))?;
        // Ring addresses are the VMM's virtual addresses (vhost-user spec, "SET_VRING_ADDR").
        let addr = VringConfigData {
            queue_max_size: ring.size,
            queue_size: ring.size,
            flags: 0,
            desc_table_addr: host + ring.desc,
            used_ring_addr: host + ring.used,
            avail_ring_addr: host + ring.avail,
            log_addr: None,
        };
        frontend.set_vring_addr(index, &addr).with_context(|| format!("SET_VRING_ADDR {index}"))?;
        frontend.set_vring_kick(index, &plan.kicks[index]).with_context(|| format!("SET_VRING_KICK {index}"))?;
        frontend.set_vring_call(index, &plan.calls[index]).with_context(|| format!("SET_VRING_CALL {index}"))?;
    }
    if features & protocol != 0 {
        for index in 0..NUM_QUEUES {
            frontend.set_vring_enable(index, true).with_context(|| format!("SET_VRING_ENABLE {index}"))?;
        }
    }
    Ok(Negotiated { frontend, features, protocol_features, config })
}

/// Runs `request` (blocking frontend I/O) on a thread and calls `pump` until it is done, so that
/// the backend can answer on the caller's thread. `abort` is shut down on timeout to unblock the
/// thread. Bounded by `timeout` and [`MAX_PUMPS`].
pub(super) fn pumped<T: Send + 'static>(
    what: &str,
    abort: &UnixStream,
    timeout: Duration,
    request: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    mut pump: impl FnMut(),
) -> anyhow::Result<T> {
    let thread = thread::Builder::new().name(format!("synthetic-vmm: {what}")).spawn(request)?;
    let start = Instant::now();
    let mut pumps = 0u64;
    while !thread.is_finished() {
        if start.elapsed() > timeout || pumps >= MAX_PUMPS {
            // Unblocks the thread's read or write; it then fails and ends.
            let _ = abort.shutdown(std::net::Shutdown::Both);
            let _ = thread.join();
            bail!(
                "vhost-user {what}: no answer after {pumps} pumps in {:?} (is `pump` serving the backend?)",
                start.elapsed()
            );
        }
        pump();
        pumps += 1;
    }
    thread
        .join()
        .map_err(|_| anyhow!("vhost-user {what}: frontend thread panicked"))?
        .with_context(|| format!("vhost-user {what}"))
}
