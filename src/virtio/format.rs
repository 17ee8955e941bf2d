//! The eight 2D pixel formats of virtio-gpu (virtio spec 1.2, 5.7.6.8,
//! `enum virtio_gpu_formats`).
//!
//! Virtio format names give the order of the bytes *in memory*
//! (`B8G8R8A8` = byte 0 is blue, byte 3 is alpha). DRM fourcc names give the
//! bits of a little-endian 32-bit word from most to least significant, so
//! virtio `B8G8R8A8` is DRM `ARGB8888`.

use super::protocol::{
    VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM, VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM,
    VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM,
    VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM, VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM,
};

const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | ((code[1] as u32) << 8) | ((code[2] as u32) << 16) | ((code[3] as u32) << 24)
}

/// DRM `ARGB8888` ('AR24'): bytes in memory B, G, R, A.
pub const DRM_FORMAT_ARGB8888: u32 = fourcc(b"AR24");
/// DRM `XRGB8888` ('XR24'): bytes in memory B, G, R, X.
pub const DRM_FORMAT_XRGB8888: u32 = fourcc(b"XR24");
/// DRM `BGRA8888` ('BA24'): bytes in memory A, R, G, B.
pub const DRM_FORMAT_BGRA8888: u32 = fourcc(b"BA24");
/// DRM `BGRX8888` ('BX24'): bytes in memory X, R, G, B.
pub const DRM_FORMAT_BGRX8888: u32 = fourcc(b"BX24");
/// DRM `ABGR8888` ('AB24'): bytes in memory R, G, B, A.
pub const DRM_FORMAT_ABGR8888: u32 = fourcc(b"AB24");
/// DRM `RGBX8888` ('RX24'): bytes in memory X, B, G, R.
pub const DRM_FORMAT_RGBX8888: u32 = fourcc(b"RX24");
/// DRM `RGBA8888` ('RA24'): bytes in memory A, B, G, R.
pub const DRM_FORMAT_RGBA8888: u32 = fourcc(b"RA24");
/// DRM `XBGR8888` ('XB24'): bytes in memory R, G, B, X.
pub const DRM_FORMAT_XBGR8888: u32 = fourcc(b"XB24");

/// A virtio-gpu 2D resource format. Every format is 4 bytes per pixel;
/// the discriminant is the `VIRTIO_GPU_FORMAT_*` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Format {
    /// Bytes B, G, R, A (DRM `ARGB8888`). Linux's default for ARGB framebuffers and cursors.
    B8G8R8A8 = VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM,
    /// Bytes B, G, R, X (DRM `XRGB8888`). Linux's default framebuffer format.
    B8G8R8X8 = VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
    /// Bytes A, R, G, B (DRM `BGRA8888`).
    A8R8G8B8 = VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM,
    /// Bytes X, R, G, B (DRM `BGRX8888`).
    X8R8G8B8 = VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM,
    /// Bytes R, G, B, A (DRM `ABGR8888`).
    R8G8B8A8 = VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM,
    /// Bytes X, B, G, R (DRM `RGBX8888`).
    X8B8G8R8 = VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM,
    /// Bytes A, B, G, R (DRM `RGBA8888`).
    A8B8G8R8 = VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM,
    /// Bytes R, G, B, X (DRM `XBGR8888`).
    R8G8B8X8 = VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM,
}

impl Format {
    /// The same byte order with the X byte read as alpha (A formats are returned unchanged).
    /// Cursor planes read their buffer as ARGB even though Linux creates every dumb buffer,
    /// the cursor's included, as a B8G8R8X8 resource.
    pub fn with_alpha(self) -> Format {
        match self {
            Format::B8G8R8X8 => Format::B8G8R8A8,
            Format::X8R8G8B8 => Format::A8R8G8B8,
            Format::X8B8G8R8 => Format::A8B8G8R8,
            Format::R8G8B8X8 => Format::R8G8B8A8,
            other => other,
        }
    }

    /// All formats, in `VIRTIO_GPU_FORMAT_*` order.
    pub const ALL: [Format; 8] = [
        Format::B8G8R8A8,
        Format::B8G8R8X8,
        Format::A8R8G8B8,
        Format::X8R8G8B8,
        Format::R8G8B8A8,
        Format::X8B8G8R8,
        Format::A8B8G8R8,
        Format::R8G8B8X8,
    ];

    /// Decodes a `VIRTIO_GPU_FORMAT_*` value; `None` for anything else.
    pub fn from_virtio(value: u32) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.to_virtio() == value)
    }

    /// The `VIRTIO_GPU_FORMAT_*` value.
    pub fn to_virtio(self) -> u32 {
        self as u32
    }

    /// Bytes per pixel: always 4.
    pub fn bytes_per_pixel(self) -> u32 {
        4
    }

    /// Whether the fourth channel is alpha (as opposed to ignored padding `X`).
    pub fn has_alpha(self) -> bool {
        matches!(self, Format::B8G8R8A8 | Format::A8R8G8B8 | Format::R8G8B8A8 | Format::A8B8G8R8)
    }

    /// The equivalent little-endian DRM fourcc (`DRM_FORMAT_*` above), e.g.
    /// `B8G8R8X8` -> `XRGB8888`.
    pub fn drm_fourcc(self) -> u32 {
        match self {
            Format::B8G8R8A8 => DRM_FORMAT_ARGB8888,
            Format::B8G8R8X8 => DRM_FORMAT_XRGB8888,
            Format::A8R8G8B8 => DRM_FORMAT_BGRA8888,
            Format::X8R8G8B8 => DRM_FORMAT_BGRX8888,
            Format::R8G8B8A8 => DRM_FORMAT_ABGR8888,
            Format::X8B8G8R8 => DRM_FORMAT_RGBX8888,
            Format::A8B8G8R8 => DRM_FORMAT_RGBA8888,
            Format::R8G8B8X8 => DRM_FORMAT_XBGR8888,
        }
    }

    /// The virtio name, e.g. `"B8G8R8X8_UNORM"`.
    pub fn name(self) -> &'static str {
        match self {
            Format::B8G8R8A8 => "B8G8R8A8_UNORM",
            Format::B8G8R8X8 => "B8G8R8X8_UNORM",
            Format::A8R8G8B8 => "A8R8G8B8_UNORM",
            Format::X8R8G8B8 => "X8R8G8B8_UNORM",
            Format::R8G8B8A8 => "R8G8B8A8_UNORM",
            Format::X8B8G8R8 => "X8B8G8R8_UNORM",
            Format::A8B8G8R8 => "A8B8G8R8_UNORM",
            Format::R8G8B8X8 => "R8G8B8X8_UNORM",
        }
    }

    /// Byte index within a pixel of (red, green, blue, alpha-or-padding).
    fn channel_offsets(self) -> [usize; 4] {
        match self {
            Format::B8G8R8A8 | Format::B8G8R8X8 => [2, 1, 0, 3],
            Format::A8R8G8B8 | Format::X8R8G8B8 => [1, 2, 3, 0],
            Format::R8G8B8A8 | Format::R8G8B8X8 => [0, 1, 2, 3],
            Format::A8B8G8R8 | Format::X8B8G8R8 => [3, 2, 1, 0],
        }
    }

    /// Converts pixels of this format to RGBA8 (bytes R, G, B, A in memory,
    /// i.e. DRM `ABGR8888`); formats without alpha produce A = 255.
    ///
    /// Converts `min(src.len(), dst.len()) / 4` whole pixels — normally one row:
    /// `src` holds `width * 4` bytes of the resource and `dst` `width * 4`
    /// bytes of output. Trailing partial pixels and excess `dst` bytes are left
    /// untouched. Never panics.
    pub fn to_rgba8(&self, src: &[u8], dst: &mut [u8]) {
        let [r, g, b, a] = self.channel_offsets();
        let alpha = self.has_alpha();
        for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(4)) {
            let px = [s.get(r), s.get(g), s.get(b), s.get(a)];
            let [Some(&pr), Some(&pg), Some(&pb), Some(&pa)] = px else {
                continue;
            };
            d.copy_from_slice(&[pr, pg, pb, if alpha { pa } else { 255 }]);
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_virtio_roundtrip_and_unknown() {
        for f in Format::ALL {
            assert_eq!(Format::from_virtio(f.to_virtio()), Some(f));
            assert_eq!(f.bytes_per_pixel(), 4);
        }
        for bad in [0u32, 5, 66, 69, 120, 122, 133, 135, u32::MAX] {
            assert_eq!(Format::from_virtio(bad), None, "{bad}");
        }
        assert_eq!(Format::from_virtio(1), Some(Format::B8G8R8A8));
        assert_eq!(Format::from_virtio(134), Some(Format::R8G8B8X8));
    }

    #[test]
    fn fourccs() {
        assert_eq!(DRM_FORMAT_XRGB8888, 0x3432_5258);
        assert_eq!(DRM_FORMAT_ARGB8888, 0x3432_5241);
        assert_eq!(DRM_FORMAT_ABGR8888, 0x3432_4241);
        assert_eq!(DRM_FORMAT_XBGR8888, 0x3432_4258);
        assert_eq!(DRM_FORMAT_RGBA8888, 0x3432_4152);
        assert_eq!(DRM_FORMAT_RGBX8888, 0x3432_5852);
        assert_eq!(DRM_FORMAT_BGRA8888, 0x3432_4142);
        assert_eq!(DRM_FORMAT_BGRX8888, 0x3432_5842);
        assert_eq!(Format::B8G8R8X8.drm_fourcc(), DRM_FORMAT_XRGB8888);
        assert_eq!(Format::R8G8B8A8.drm_fourcc(), DRM_FORMAT_ABGR8888);
        let mut all: Vec<u32> = Format::ALL.iter().map(|f| f.drm_fourcc()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn names_and_alpha() {
        assert_eq!(Format::B8G8R8X8.name(), "B8G8R8X8_UNORM");
        assert_eq!(Format::A8B8G8R8.to_string(), "A8B8G8R8_UNORM");
        let alpha: Vec<_> = Format::ALL.iter().filter(|f| f.has_alpha()).collect();
        assert_eq!(alpha.len(), 4);
        for f in Format::ALL {
            assert_eq!(f.has_alpha(), f.name().contains('A'), "{f}");
        }
    }

    /// Encodes (r, g, b, a) into `format` by its memory byte-order name.
    fn encode(format: Format, rgba: [u8; 4]) -> [u8; 4] {
        let name = format.name().as_bytes();
        let mut px = [0u8; 4];
        for (i, slot) in px.iter_mut().enumerate() {
            *slot = match name[i * 2] {
                b'R' => rgba[0],
                b'G' => rgba[1],
                b'B' => rgba[2],
                b'A' => rgba[3],
                b'X' => 0x5a,
                _ => unreachable!(),
            };
        }
        px
    }

    #[test]
    fn to_rgba8_all_formats() {
        for f in Format::ALL {
            let pixels = [[10u8, 20, 30, 40], [200, 150, 100, 50]];
            let src: Vec<u8> = pixels.iter().flat_map(|p| encode(f, *p)).collect();
            let mut dst = vec![0u8; 8];
            f.to_rgba8(&src, &mut dst);
            let a = |v: u8| if f.has_alpha() { v } else { 255 };
            assert_eq!(dst, vec![10, 20, 30, a(40), 200, 150, 100, a(50)], "{f}");
        }
    }

    #[test]
    fn to_rgba8_length_mismatch_does_not_panic() {
        let src = [1u8, 2, 3, 4, 5, 6, 7];
        let mut dst = [9u8; 12];
        Format::R8G8B8A8.to_rgba8(&src, &mut dst);
        assert_eq!(dst, [1, 2, 3, 4, 9, 9, 9, 9, 9, 9, 9, 9]);
        let mut short = [0u8; 3];
        Format::R8G8B8A8.to_rgba8(&src, &mut short);
        assert_eq!(short, [0, 0, 0]);
    }
}
