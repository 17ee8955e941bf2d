//! One guest's device model on a real 3D worker process (`scanway 3d-worker`, real
//! virglrenderer on its own EGL display): guest memory in a memfd crosses as a descriptor,
//! a guest clear comes back through the read-back buffer, through the guest's own backing and,
//! where the worker's EGL exports dmabufs, as a dmabuf this process imports and reads; a fence
//! retires on the worker's channel; then the worker is killed (SIGKILL), the guest's 3D
//! commands fail with ERR_UNSPEC, and a device reset brings a new worker that works.
//!
//! `SCANWAY_BIN` names the scanway executable to run as the worker (default: this build's),
//! for running the test binary on another machine.

mod common;

use std::{fs::File, os::fd::FromRawFd, path::PathBuf, time::Duration};

use common::*;
use scanway::virtio::{
    device::{Gpu, GpuConfig, QueueKind, Rect},
    isolated::Isolated3d,
    protocol::*,
    renderer3d::{Renderer3dStatus, WorkerStatus},
};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

const MEM: usize = 1 << 20;

/// 1 MiB of guest memory in a memfd, as a VMM shares it.
fn guest_memory() -> GuestMemoryMmap {
    // SAFETY: plain syscalls, checked.
    let file = unsafe {
        let fd = libc::memfd_create(c"guest".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, MEM as libc::off_t), 0);
        File::from_raw_fd(fd)
    };
    let region =
        MmapRegion::build(Some(FileOffset::new(file, 0)), MEM, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED)
            .unwrap();
    GuestMemoryMmap::from_regions(vec![GuestRegionMmap::new(region, GuestAddress(0)).unwrap()]).unwrap()
}

fn worker(gpu: &Gpu) -> WorkerStatus {
    match gpu.renderer_status() {
        Some(Renderer3dStatus::Isolated(w)) => w,
        other => panic!("not isolated: {other:?}"),
    }
}

/// Wait (at most 10 s) until the worker's channel is readable, then take its fences.
fn wait_fences(gpu: &mut Gpu) -> usize {
    let fd = gpu.renderer_wake_fd().unwrap();
    for _ in 0..100 {
        let n = gpu.own_fences().unwrap().len();
        if n > 0 {
            return n;
        }
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 100) };
    }
    0
}

/// Resource 1 (cleared red) exported as a dmabuf, imported here and read: red. Where the
/// worker's EGL cannot export (Mesa without a render node), the worker says so and is not asked
/// again.
fn check_export(gpu: &mut Gpu) {
    use smithay::backend::{
        allocator::Fourcc,
        renderer::{ExportMem, ImportDma},
    };
    let Some(exported) = gpu.export_scanout(1) else {
        assert_eq!(worker(gpu).exports, 0);
        assert!(gpu.export_scanout(1).is_none());
        eprintln!("isolated_worker: this EGL exports no dmabufs; scanouts are read back");
        return;
    };
    assert_eq!(worker(gpu).exports, 1);
    let mut here = scanway::renderer::headless_renderer().expect("EGL");
    let texture = here.import_dmabuf(&exported.dmabuf, None).expect("importing the worker's dmabuf");
    let region = smithay::utils::Rectangle::from_size((W as i32, H as i32).into());
    let mapping = here.copy_texture(&texture, region, Fourcc::Abgr8888).expect("copy");
    let rgba = here.map_texture(&mapping).expect("map");
    assert!(rgba.chunks_exact(4).all(|p| p == [255, 0, 0, 255]), "the dmabuf is red (R, G, B, A): {:?}", &rgba[..8]);
    eprintln!("isolated_worker: dmabuf export and import: red, exact");
}

#[test]
fn a_guest_renders_through_a_worker_and_survives_losing_it() {
    let exe =
        std::env::var_os("SCANWAY_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_scanway")), PathBuf::from);
    let mut gpu = Gpu::new(GpuConfig { name: "iso".into(), ..GpuConfig::default() });
    gpu.enable_3d(Box::new(Isolated3d::spawn("iso", exe).expect("3D worker (EGL, virglrenderer)")));
    let first = worker(&gpu);
    assert!(first.running && first.pid.is_some());
    let mem = guest_memory();
    gpu.set_guest_memory(&mem);

    guest_with_target(&mut gpu, &mem, 1, BACKING);
    assert_eq!(submit(&mut gpu, &mem, 1, &clear_stream(1, [1.0, 0.0, 0.0, 1.0])), VIRTIO_GPU_RESP_OK_NODATA);
    let pixels = gpu.read_back(1, Rect::new(0, 0, W, H)).expect("read back").to_vec();
    assert_eq!(pixels.len(), (W * H * 4) as usize);
    assert!(pixels.chunks_exact(4).all(|p| p == [0, 0, 255, 255]), "read back red (B, G, R, A)");
    assert_eq!(read_pixel(&mut gpu, &mem, 1, BACKING), [0, 0, 255, 255], "the guest's backing red");
    assert_eq!(worker(&gpu).read_backs, 1);
    check_export(&mut gpu);

    // A fenced submit: the device makes a fence on the worker, which retires it on its channel.
    let fenced = cmd(CmdSubmit {
        hdr: CtrlHdr { flags: VIRTIO_GPU_FLAG_FENCE.into(), fence_id: 7.into(), ..hdr(VIRTIO_GPU_CMD_SUBMIT_3D, 1) },
        size: 0.into(),
        padding: 0.into(),
    });
    let _ = gpu.handle_request(QueueKind::Control, &fenced, &mem);
    assert!(wait_fences(&mut gpu) > 0, "the worker retired the fence");

    // Kill the worker: the guest's 3D fails, the device model carries on.
    // SAFETY: plain syscall on the worker's pid.
    assert_eq!(unsafe { libc::kill(first.pid.unwrap() as i32, libc::SIGKILL) }, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(submit(&mut gpu, &mem, 1, &clear_stream(1, [0.0, 1.0, 0.0, 1.0])), VIRTIO_GPU_RESP_ERR_UNSPEC);
    let lost = worker(&gpu);
    assert!(!lost.running && lost.lost == 1, "{lost:?}");
    assert!(lost.reason.as_deref().unwrap_or("").contains("SIGKILL"), "{lost:?}");
    assert!(gpu.read_back(1, Rect::new(0, 0, W, H)).is_none());

    // The VMM reconnects: a new worker, and the guest renders again.
    gpu.reset();
    let again = worker(&gpu);
    assert!(again.running && again.restarts == 1 && again.pid != first.pid, "{again:?}");
    gpu.set_guest_memory(&mem);
    guest_with_target(&mut gpu, &mem, 1, BACKING);
    assert_eq!(submit(&mut gpu, &mem, 1, &clear_stream(1, [0.0, 0.0, 1.0, 1.0])), VIRTIO_GPU_RESP_OK_NODATA);
    assert_eq!(read_pixel(&mut gpu, &mem, 1, BACKING), [255, 0, 0, 255], "blue from the new worker");
}
