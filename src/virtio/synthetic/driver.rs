//! The guest driver's part: virtio-gpu commands as bytes (virtio 1.2, 5.7.6), and a 2D
//! framebuffer scanout driven the way Linux's virtio-gpu driver drives its fbdev console.

use anyhow::{Context, bail, ensure};

use super::{SyntheticGuest, Ticket};
use crate::virtio::device::Rect;
use crate::virtio::protocol::*;
use crate::virtio::vhost::{CTRL_QUEUE, CURSOR_QUEUE};

/// Bytes of a response header, `struct virtio_gpu_ctrl_hdr`.
const HDR_BYTES: u32 = size_of::<CtrlHdr>() as u32;
/// Bytes per pixel of every 2D format.
const BPP: u32 = 4;

/// The response type (`VIRTIO_GPU_RESP_*`) of a response, `None` if shorter than a header.
pub(crate) fn resp_type(resp: &[u8]) -> Option<u32> {
    read_struct::<CtrlHdr>(resp).map(|h| h.type_.to_native())
}

/// Fails unless `resp` has response type `ty`, saying what it was instead.
pub(crate) fn expect_type(what: &str, resp: &[u8], ty: u32) -> anyhow::Result<()> {
    match resp_type(resp) {
        Some(got) if got == ty => Ok(()),
        Some(got) => bail!("{what}: device answered {} ({got:#x})", ctrl_type_name(got)),
        None => bail!("{what}: device answered {} bytes, no response header", resp.len()),
    }
}

/// Requests as the bytes of their wire structs (virtio 1.2, 5.7.6.7 and on).
pub(crate) mod cmd {
    use vm_memory::ByteValued;

    use super::*;

    fn bytes<T: ByteValued>(v: &T) -> Vec<u8> {
        v.as_slice().to_vec()
    }

    /// A request header of type `ty` (no fence, context 0).
    pub fn hdr(ty: u32) -> CtrlHdr {
        CtrlHdr { type_: ty.into(), ..CtrlHdr::default() }
    }

    /// GET_DISPLAY_INFO (5.7.6.8); answered with a [`RespDisplayInfo`].
    pub fn display_info() -> Vec<u8> {
        bytes(&hdr(VIRTIO_GPU_CMD_GET_DISPLAY_INFO))
    }

    /// GET_EDID of `scanout`; answered with a [`RespEdid`].
    pub fn edid(scanout: u32) -> Vec<u8> {
        bytes(&GetEdid { hdr: hdr(VIRTIO_GPU_CMD_GET_EDID), scanout: scanout.into(), padding: 0.into() })
    }

    /// RESOURCE_CREATE_2D of `width` x `height` pixels in `format` (`VIRTIO_GPU_FORMAT_*`).
    pub fn create_2d(resource_id: u32, format: u32, width: u32, height: u32) -> Vec<u8> {
        bytes(&ResourceCreate2d {
            hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D),
            resource_id: resource_id.into(),
            format: format.into(),
            width: width.into(),
            height: height.into(),
        })
    }

    /// RESOURCE_UNREF.
    pub fn unref(resource_id: u32) -> Vec<u8> {
        bytes(&ResourceUnref {
            hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_UNREF),
            resource_id: resource_id.into(),
            padding: 0.into(),
        })
    }

    /// The header of RESOURCE_ATTACH_BACKING announcing `nr_entries` entries.
    pub fn attach_backing_header(resource_id: u32, nr_entries: u32) -> Vec<u8> {
        bytes(&ResourceAttachBacking {
            hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING),
            resource_id: resource_id.into(),
            nr_entries: nr_entries.into(),
        })
    }

    /// `struct virtio_gpu_mem_entry` array: (guest address, length in bytes) each.
    pub fn mem_entries(entries: &[(u64, u32)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|&(addr, length)| {
                bytes(&MemEntry { addr: addr.into(), length: length.into(), padding: 0.into() })
            })
            .collect()
    }

    /// RESOURCE_ATTACH_BACKING with its entries in the same buffer.
    pub fn attach_backing(resource_id: u32, entries: &[(u64, u32)]) -> Vec<u8> {
        let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let mut v = attach_backing_header(resource_id, count);
        v.extend(mem_entries(entries));
        v
    }

    /// RESOURCE_DETACH_BACKING.
    pub fn detach_backing(resource_id: u32) -> Vec<u8> {
        bytes(&ResourceDetachBacking {
            hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING),
            resource_id: resource_id.into(),
            padding: 0.into(),
        })
    }

    /// SET_SCANOUT: `scanout` shows `rect` (pixels) of `resource_id` (0 disables it).
    pub fn set_scanout(scanout: u32, resource_id: u32, rect: Rect) -> Vec<u8> {
        bytes(&SetScanout {
            hdr: hdr(VIRTIO_GPU_CMD_SET_SCANOUT),
            r: rect.into(),
            scanout_id: scanout.into(),
            resource_id: resource_id.into(),
        })
    }

    /// TRANSFER_TO_HOST_2D of `rect` (pixels), whose first pixel is at byte `offset` of the
    /// backing.
    pub fn transfer_to_host_2d(resource_id: u32, rect: Rect, offset: u64) -> Vec<u8> {
        bytes(&TransferToHost2d {
            hdr: hdr(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D),
            r: rect.into(),
            offset: offset.into(),
            resource_id: resource_id.into(),
            padding: 0.into(),
        })
    }

    /// RESOURCE_FLUSH of `rect` (pixels, resource coordinates).
    pub fn flush(resource_id: u32, rect: Rect) -> Vec<u8> {
        bytes(&ResourceFlush {
            hdr: hdr(VIRTIO_GPU_CMD_RESOURCE_FLUSH),
            r: rect.into(),
            resource_id: resource_id.into(),
            padding: 0.into(),
        })
    }

    /// UPDATE_CURSOR (5.7.6.10): `resource_id`'s image (0 hides) at (`x`, `y`) pixels of
    /// `scanout`, hot spot `hot` pixels from its top left corner.
    pub fn update_cursor(scanout: u32, resource_id: u32, x: i32, y: i32, hot: (u32, u32)) -> Vec<u8> {
        cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, scanout, resource_id, x, y, hot)
    }

    /// MOVE_CURSOR to (`x`, `y`) pixels of `scanout`.
    pub fn move_cursor(scanout: u32, x: i32, y: i32) -> Vec<u8> {
        cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, scanout, 0, x, y, (0, 0))
    }

    /// UPDATE_CURSOR or MOVE_CURSOR (`ty`) with every field given.
    pub fn cursor(ty: u32, scanout: u32, resource_id: u32, x: i32, y: i32, hot: (u32, u32)) -> Vec<u8> {
        bytes(&UpdateCursor {
            hdr: hdr(ty),
            pos: CursorPos {
                scanout_id: scanout.into(),
                x: x.cast_unsigned().into(),
                y: y.cast_unsigned().into(),
                padding: 0.into(),
            },
            resource_id: resource_id.into(),
            hot_x: hot.0.into(),
            hot_y: hot.1.into(),
            padding: 0.into(),
        })
    }
}

/// A 2D resource with its backing in guest memory, shown on a scanout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Framebuffer {
    /// The resource's id.
    pub resource_id: u32,
    /// The scanout showing it.
    pub scanout_id: u32,
    /// `VIRTIO_GPU_FORMAT_*`.
    pub format: u32,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Guest physical address of the backing: `height` rows of `stride` bytes, contiguous.
    pub backing: u64,
}

impl Framebuffer {
    /// Bytes per row of the backing.
    pub fn stride(&self) -> u32 {
        self.width * BPP
    }

    /// Bytes of the backing.
    pub fn len(&self) -> u64 {
        u64::from(self.stride()) * u64::from(self.height)
    }

    /// The whole resource, pixels.
    pub fn rect(&self) -> Rect {
        Rect::new(0, 0, self.width, self.height)
    }
}

impl SyntheticGuest {
    /// Sends `cmd` on the control queue and expects `VIRTIO_GPU_RESP_OK_NODATA`.
    pub fn ctrl_ok(&mut self, what: &str, cmd: &[u8], pump: impl FnMut()) -> anyhow::Result<()> {
        let resp = self.call(CTRL_QUEUE, cmd, HDR_BYTES, pump)?;
        expect_type(what, &resp, VIRTIO_GPU_RESP_OK_NODATA)
    }

    /// GET_DISPLAY_INFO.
    pub fn display_info(&mut self, pump: impl FnMut()) -> anyhow::Result<RespDisplayInfo> {
        let len = u32::try_from(size_of::<RespDisplayInfo>())?;
        let resp = self.call(CTRL_QUEUE, &cmd::display_info(), len, pump)?;
        expect_type("GET_DISPLAY_INFO", &resp, VIRTIO_GPU_RESP_OK_DISPLAY_INFO)?;
        read_struct(&resp).context("GET_DISPLAY_INFO response too short")
    }

    /// GET_EDID of `scanout`: the EDID blob (`size` bytes of the response).
    pub fn edid(&mut self, scanout: u32, pump: impl FnMut()) -> anyhow::Result<Vec<u8>> {
        let len = u32::try_from(size_of::<RespEdid>())?;
        let resp = self.call(CTRL_QUEUE, &cmd::edid(scanout), len, pump)?;
        expect_type("GET_EDID", &resp, VIRTIO_GPU_RESP_OK_EDID)?;
        let edid: RespEdid = read_struct(&resp).context("GET_EDID response too short")?;
        let size = usize::try_from(edid.size.to_native())?;
        Ok(edid.edid.get(..size).context("GET_EDID size larger than its array")?.to_vec())
    }

    /// A `width` x `height` pixel resource in `format` with zeroed backing of its own in guest
    /// memory, created and shown on `scanout_id` as a driver does: RESOURCE_CREATE_2D,
    /// RESOURCE_ATTACH_BACKING (one entry: guest memory is contiguous), SET_SCANOUT of the whole
    /// resource. Nothing is transferred or flushed yet.
    pub fn framebuffer(
        &mut self,
        scanout_id: u32,
        resource_id: u32,
        format: u32,
        (width, height): (u32, u32),
        mut pump: impl FnMut(),
    ) -> anyhow::Result<Framebuffer> {
        let len = u64::from(width) * u64::from(height) * u64::from(BPP);
        let backing = self.alloc(len)?;
        let fb = Framebuffer { resource_id, scanout_id, format, width, height, backing };
        let entry_len = u32::try_from(len).context("framebuffer larger than 4 GiB")?;
        self.ctrl_ok("RESOURCE_CREATE_2D", &cmd::create_2d(resource_id, format, width, height), &mut pump)?;
        self.ctrl_ok("RESOURCE_ATTACH_BACKING", &cmd::attach_backing(resource_id, &[(backing, entry_len)]), &mut pump)?;
        self.ctrl_ok("SET_SCANOUT", &cmd::set_scanout(scanout_id, resource_id, fb.rect()), &mut pump)?;
        Ok(fb)
    }

    /// Draws `rect` (pixels) of `fb`: writes `pixel(x, y)` (4 bytes in the resource's format)
    /// for each of its pixels into the backing, then TRANSFER_TO_HOST_2D and RESOURCE_FLUSH of
    /// `rect`.
    pub fn draw(
        &mut self,
        fb: &Framebuffer,
        rect: Rect,
        mut pixel: impl FnMut(u32, u32) -> [u8; 4],
        mut pump: impl FnMut(),
    ) -> anyhow::Result<()> {
        ensure!(
            rect.checked_right().is_some_and(|r| r <= fb.width)
                && rect.checked_bottom().is_some_and(|b| b <= fb.height),
            "{rect:?} is not within the {}x{} framebuffer",
            fb.width,
            fb.height
        );
        let stride = u64::from(fb.stride());
        let offset = u64::from(rect.y) * stride + u64::from(rect.x) * u64::from(BPP);
        for y in rect.y..rect.y + rect.height {
            let row: Vec<u8> = (rect.x..rect.x + rect.width).flat_map(|x| pixel(x, y)).collect();
            self.write(fb.backing + u64::from(y) * stride + u64::from(rect.x) * u64::from(BPP), &row)?;
        }
        self.ctrl_ok("TRANSFER_TO_HOST_2D", &cmd::transfer_to_host_2d(fb.resource_id, rect, offset), &mut pump)?;
        self.ctrl_ok("RESOURCE_FLUSH", &cmd::flush(fb.resource_id, rect), &mut pump)
    }

    /// Sends `cmd` on the cursor queue without a response buffer, as Linux does, and waits
    /// until the device used it.
    pub fn cursor(&mut self, cmd: &[u8], pump: impl FnMut()) -> anyhow::Result<()> {
        let ticket: Ticket = self.submit(CURSOR_QUEUE, cmd, 0)?;
        self.wait(ticket, pump).map(drop)
    }
}
