//! EDID generation for GET_EDID (virtio spec 1.2, 5.7.6.8; VESA E-EDID 1.4,
//! VESA CVT 1.2 reduced blanking).
//!
//! [`generate`] builds a single 128-byte EDID 1.4 base block (no extension
//! blocks) for a digital sRGB display whose preferred (first detailed) timing
//! is the requested size, using CVT reduced-blanking (v1) timings at 60 Hz.

/// Size of the EDID produced by [`generate`], bytes.
pub const EDID_SIZE: usize = 128;

/// Largest active width/height a detailed timing descriptor can carry (12 bits).
pub const MAX_DTD_DIMENSION: u32 = 4095;

/// Largest pixel clock a detailed timing descriptor can carry, in 10 kHz units.
const MAX_PIXEL_CLOCK_10KHZ: u64 = u16::MAX as u64;

/// Preferred refresh rate, Hz.
const PREFERRED_REFRESH_HZ: u32 = 60;

/// Pixel density used to derive the physical size, dots per inch.
const DPI: u64 = 96;

/// Manufacturer PNP id.
const MANUFACTURER: &[u8; 3] = b"SWY";

/// Year of manufacture written to the EDID.
const YEAR: u16 = 2024;

/// Display name used when the requested name has no printable ASCII character.
const DEFAULT_NAME: &str = "scanway";

// CVT reduced blanking (v1) constants.
const RB_H_BLANK: u32 = 160;
const RB_H_SYNC: u32 = 32;
const RB_H_FRONT_PORCH: u32 = 48;
const RB_V_FRONT_PORCH: u32 = 3;
const RB_MIN_V_BACK_PORCH: u32 = 6;
const RB_MIN_V_BLANK_US: f64 = 460.0;
/// CVT clock granularity, Hz.
const CVT_CLOCK_STEP_HZ: u64 = 250_000;

/// A detailed timing (all in pixels/lines except the clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Pixel clock, Hz (a multiple of 250 kHz, at most 655.35 MHz).
    pub pixel_clock_hz: u64,
    /// Active width, pixels.
    pub h_active: u32,
    /// Horizontal front porch, pixels.
    pub h_front_porch: u32,
    /// Horizontal sync width, pixels.
    pub h_sync: u32,
    /// Horizontal back porch, pixels.
    pub h_back_porch: u32,
    /// Active height, lines.
    pub v_active: u32,
    /// Vertical front porch, lines.
    pub v_front_porch: u32,
    /// Vertical sync width, lines.
    pub v_sync: u32,
    /// Vertical back porch, lines.
    pub v_back_porch: u32,
}

impl Timing {
    /// Total pixels per line.
    pub fn h_total(&self) -> u32 {
        self.h_active + self.h_front_porch + self.h_sync + self.h_back_porch
    }

    /// Total lines per frame.
    pub fn v_total(&self) -> u32 {
        self.v_active + self.v_front_porch + self.v_sync + self.v_back_porch
    }

    /// Horizontal blanking, pixels.
    pub fn h_blank(&self) -> u32 {
        self.h_total() - self.h_active
    }

    /// Vertical blanking, lines.
    pub fn v_blank(&self) -> u32 {
        self.v_total() - self.v_active
    }

    /// Refresh rate, Hz.
    pub fn refresh_hz(&self) -> f64 {
        self.pixel_clock_hz as f64 / (f64::from(self.h_total()) * f64::from(self.v_total()))
    }

    /// Line rate, kHz.
    pub fn h_freq_khz(&self) -> f64 {
        self.pixel_clock_hz as f64 / f64::from(self.h_total()) / 1000.0
    }
}

/// CVT v1.2 vertical sync width for the aspect ratio (table 3-2), lines.
fn cvt_vsync(width: u32, height: u32) -> u32 {
    let (w, h) = (u64::from(width), u64::from(height));
    if h * 4 == w * 3 {
        4
    } else if h * 16 == w * 9 {
        5
    } else if h * 16 == w * 10 {
        6
    } else if h * 5 == w * 4 || h * 15 == w * 9 {
        7
    } else {
        10
    }
}

/// CVT reduced-blanking (v1) timing for `width x height` at `refresh` Hz.
/// `width`/`height` must be in `1..=4095` and `refresh` non-zero.
fn cvt_rb(width: u32, height: u32, refresh: u32) -> Timing {
    let v_sync = cvt_vsync(width, height);
    let field_us = 1_000_000.0 / f64::from(refresh);
    let h_period_est_us = (field_us - RB_MIN_V_BLANK_US) / f64::from(height);
    // `as` saturates; the value is small and positive for refresh <= 60.
    let vbi_lines = (RB_MIN_V_BLANK_US / h_period_est_us).floor() as u32 + 1;
    let min_vbi = RB_V_FRONT_PORCH + v_sync + RB_MIN_V_BACK_PORCH;
    let act_vbi = vbi_lines.max(min_vbi);
    let v_total = u64::from(height) + u64::from(act_vbi);
    let h_total = u64::from(width) + u64::from(RB_H_BLANK);
    let ideal_hz = u64::from(refresh) * v_total * h_total;
    let pixel_clock_hz = (ideal_hz / CVT_CLOCK_STEP_HZ * CVT_CLOCK_STEP_HZ).max(CVT_CLOCK_STEP_HZ);
    Timing {
        pixel_clock_hz,
        h_active: width,
        h_front_porch: RB_H_FRONT_PORCH,
        h_sync: RB_H_SYNC,
        h_back_porch: RB_H_BLANK - RB_H_FRONT_PORCH - RB_H_SYNC,
        v_active: height,
        v_front_porch: RB_V_FRONT_PORCH,
        v_sync,
        v_back_porch: act_vbi - RB_V_FRONT_PORCH - v_sync,
    }
}

/// Clamps a requested mode to what a detailed timing descriptor can express:
/// at least 1x1, and at most 4095 in either dimension (scaled down keeping the
/// aspect ratio).
pub fn dtd_size(width: u32, height: u32) -> (u32, u32) {
    let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    let max = w.max(h);
    let limit = u64::from(MAX_DTD_DIMENSION);
    if max <= limit {
        return (w as u32, h as u32);
    }
    let scale = |v: u64| ((v * limit / max).max(1)) as u32;
    (scale(w), scale(h))
}

/// The preferred timing [`generate`] writes for a `width x height` mode: CVT
/// reduced blanking at 60 Hz, or at the highest integer refresh rate whose
/// pixel clock fits the 655.35 MHz EDID limit. The size is clamped with
/// [`dtd_size`].
pub fn preferred_timing(width: u32, height: u32) -> Timing {
    let (w, h) = dtd_size(width, height);
    let mut refresh = PREFERRED_REFRESH_HZ;
    loop {
        let t = cvt_rb(w, h, refresh);
        if t.pixel_clock_hz / 10_000 <= MAX_PIXEL_CLOCK_10KHZ || refresh == 1 {
            return t;
        }
        refresh -= 1;
    }
}

fn push_dtd(out: &mut [u8; 18], t: &Timing, size_mm: (u32, u32)) {
    let clock = (t.pixel_clock_hz / 10_000).min(MAX_PIXEL_CLOCK_10KHZ) as u16;
    let ha = t.h_active;
    let hb = t.h_blank();
    let va = t.v_active;
    let vb = t.v_blank();
    let (hfp, hs, vfp, vs) = (t.h_front_porch, t.h_sync, t.v_front_porch, t.v_sync);
    let (wmm, hmm) = size_mm;
    let lo = |v: u32| (v & 0xff) as u8;
    *out = [
        clock.to_le_bytes()[0],
        clock.to_le_bytes()[1],
        lo(ha),
        lo(hb),
        (((ha >> 8) & 0xf) << 4 | ((hb >> 8) & 0xf)) as u8,
        lo(va),
        lo(vb),
        (((va >> 8) & 0xf) << 4 | ((vb >> 8) & 0xf)) as u8,
        lo(hfp),
        lo(hs),
        (((vfp & 0xf) << 4) | (vs & 0xf)) as u8,
        ((((hfp >> 8) & 3) << 6) | (((hs >> 8) & 3) << 4) | (((vfp >> 4) & 3) << 2) | ((vs >> 4) & 3)) as u8,
        lo(wmm),
        lo(hmm),
        (((wmm >> 8) & 0xf) << 4 | ((hmm >> 8) & 0xf)) as u8,
        0,
        0,
        // Non-interlaced, digital separate sync, -vsync, +hsync (CVT-RB).
        0x1a,
    ];
}

/// Builds the 13 payload bytes of a display name descriptor: printable ASCII
/// of `name`, at most 13 characters, terminated by 0x0A and padded with 0x20.
fn name_payload(name: &str) -> [u8; 13] {
    let mut chars: Vec<u8> = name.bytes().filter(|b| (0x20..0x7f).contains(b)).collect();
    while chars.last() == Some(&b' ') {
        chars.pop();
    }
    while chars.first() == Some(&b' ') {
        chars.remove(0);
    }
    if chars.is_empty() {
        chars = DEFAULT_NAME.as_bytes().to_vec();
    }
    let mut out = [0x20u8; 13];
    for (slot, c) in out.iter_mut().zip(chars.iter()) {
        *slot = *c;
    }
    if let Some(slot) = out.get_mut(chars.len()) {
        *slot = 0x0a;
    }
    out
}

/// Standard timings advertised besides the preferred one: (width in pixels, aspect code), all
/// DMT modes at 60 Hz: 1920x1080, 1920x1200, 1680x1050, 1600x900, 1440x900, 1280x1024, 1280x720,
/// 1280x800.
const STANDARD_TIMINGS: [(u32, u8); 8] =
    [(1920, 0b11), (1920, 0b00), (1680, 0b00), (1600, 0b11), (1440, 0b00), (1280, 0b10), (1280, 0b11), (1280, 0b00)];
/// Range limits wide enough for the established and standard timings (vertical Hz, horizontal
/// kHz, and the pixel clock in units of 10 MHz).
const RANGE_V_HZ: (f64, f64) = (50.0, 76.0);
const RANGE_H_KHZ: (f64, f64) = (30.0, 81.0);
const RANGE_MAX_CLOCK_10MHZ: u8 = 20;

/// Generates an EDID 1.4 base block (128 bytes, checksum included) for a
/// digital display named `name` (printable ASCII, truncated to 13 characters)
/// whose preferred timing is `width x height` pixels (see
/// [`preferred_timing`]; sizes above 4095 are scaled down, 0 becomes 1).
///
/// Contents: manufacturer "SWY", 8-bit DisplayPort digital input, 96 DPI
/// physical size, sRGB chromaticity, established timings 640x480, 800x600 and
/// 1024x768 and eight standard timings (see [`STANDARD_TIMINGS`]), then
/// descriptors: preferred detailed timing, range limits (covering every listed
/// timing, "range limits only"), display product name, dummy.
/// Never panics.
pub fn generate(width: u32, height: u32, name: &str) -> [u8; EDID_SIZE] {
    let t = preferred_timing(width, height);
    let mm = |px: u32| ((u64::from(px) * 254 + DPI * 5) / (DPI * 10)).clamp(1, 4095) as u32;
    let size_mm = (mm(t.h_active), mm(t.v_active));
    let cm = |mm: u32| ((mm + 5) / 10).clamp(1, 255) as u8;

    let mut e = [0u8; EDID_SIZE];
    // Header.
    e[..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer id: three 5-bit letters, big-endian.
    let letter = |c: u8| u16::from(c - b'A' + 1);
    let mfg = (letter(MANUFACTURER[0]) << 10) | (letter(MANUFACTURER[1]) << 5) | letter(MANUFACTURER[2]);
    e[8..10].copy_from_slice(&mfg.to_be_bytes());
    // Product code (LE) and serial number (LE).
    e[10..12].copy_from_slice(&0x0001u16.to_le_bytes());
    e[12..16].copy_from_slice(&1u32.to_le_bytes());
    // Week 1 of YEAR.
    e[16] = 1;
    e[17] = (YEAR - 1990) as u8;
    // EDID 1.4.
    e[18] = 1;
    e[19] = 4;
    // Digital input, 8 bits per colour, DisplayPort.
    e[20] = 0xa5;
    // Screen size, cm.
    e[21] = cm(size_mm.0);
    e[22] = cm(size_mm.1);
    // Gamma 2.2.
    e[23] = 120;
    // Features: RGB 4:4:4, sRGB default colour space, preferred timing is native.
    e[24] = 0x06;
    // sRGB chromaticity coordinates.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // Established timings: 640x480, 800x600 and 1024x768 at 60 Hz, so a guest can pick the
    // common modes besides the preferred one (with an EDID, Linux lists only EDID modes).
    e[35] = 0x21;
    e[36] = 0x08;
    // Standard timings (DMT modes at 60 Hz): first byte = width / 8 - 31, second = aspect ratio
    // (00 16:10, 10 5:4, 11 16:9) << 6 | (refresh - 60).
    for (slot, (width, aspect)) in e[38..54].chunks_exact_mut(2).zip(STANDARD_TIMINGS) {
        slot[0] = (width / 8 - 31) as u8;
        slot[1] = aspect << 6;
    }
    // Descriptor 1: preferred detailed timing.
    let mut dtd = [0u8; 18];
    push_dtd(&mut dtd, &t, size_mm);
    e[54..72].copy_from_slice(&dtd);

    // Descriptor 2: display range limits, covering the preferred and every listed timing.
    let refresh = t.refresh_hz();
    let hfreq = t.h_freq_khz();
    let byte = |v: f64| v.clamp(1.0, 255.0) as u8;
    let clock_10mhz = t.pixel_clock_hz.div_ceil(10_000_000).clamp(1, 255) as u8;
    let mut range = [0u8; 18];
    range[3] = 0xfd;
    range[5] = byte((refresh.floor() - 1.0).min(RANGE_V_HZ.0));
    range[6] = byte((refresh.ceil() + 1.0).max(RANGE_V_HZ.1));
    range[7] = byte((hfreq.floor() - 1.0).min(RANGE_H_KHZ.0));
    range[8] = byte((hfreq.ceil() + 1.0).max(RANGE_H_KHZ.1));
    range[9] = clock_10mhz.max(RANGE_MAX_CLOCK_10MHZ);
    range[10] = 0x01; // Range limits only, no secondary timing formula.
    range[11] = 0x0a;
    for slot in range[12..].iter_mut() {
        *slot = 0x20;
    }
    e[72..90].copy_from_slice(&range);

    // Descriptor 3: display product name.
    e[90..95].copy_from_slice(&[0, 0, 0, 0xfc, 0]);
    e[95..108].copy_from_slice(&name_payload(name));

    // Descriptor 4: dummy.
    e[108..113].copy_from_slice(&[0, 0, 0, 0x10, 0]);

    // No extensions; checksum.
    e[126] = 0;
    let sum = e[..127].iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const SIZES: [(u32, u32); 5] = [(1280, 800), (1024, 768), (1920, 1080), (2560, 1600), (3840, 2160)];

    fn dtd_active(e: &[u8; 128]) -> (u32, u32) {
        let d = &e[54..72];
        let w = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
        let h = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
        (w, h)
    }

    #[test]
    fn checksum_and_header() {
        for (w, h) in SIZES.iter().copied().chain([(1, 1), (16384, 16384), (0, 0), (4095, 1)]) {
            let e = generate(w, h, "guest");
            assert_eq!(&e[..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
            assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "{w}x{h}");
            assert_eq!(e[18..20], [1, 4]);
        }
    }

    #[test]
    fn preferred_timing_decodes_to_size() {
        for (w, h) in SIZES {
            let e = generate(w, h, "guest");
            assert_eq!(dtd_active(&e), (w, h));
            let clock = u64::from(u16::from_le_bytes([e[54], e[55]])) * 10_000;
            let t = preferred_timing(w, h);
            assert_eq!(clock, t.pixel_clock_hz);
            let refresh = t.refresh_hz();
            assert!((59.5..60.5).contains(&refresh), "{w}x{h}: {refresh}");
        }
        // Known CVT-RB value: 1920x1080@60 RB is 138.5 MHz, 2080x1111.
        let t = preferred_timing(1920, 1080);
        assert_eq!(t.pixel_clock_hz, 138_500_000);
        assert_eq!((t.h_total(), t.v_total()), (2080, 1111));
        // 2560x1600@60 RB is 268.5 MHz, 2720x1646.
        let t = preferred_timing(2560, 1600);
        assert_eq!(t.pixel_clock_hz, 268_500_000);
        assert_eq!((t.h_total(), t.v_total()), (2720, 1646));
    }

    #[test]
    fn huge_and_tiny_sizes_do_not_panic() {
        for w in [0, 1, 2, 7, 640, 4095, 4096, 8192, 16383, 16384, u32::MAX] {
            for h in [0, 1, 3, 480, 4095, 4096, 16384, u32::MAX] {
                let e = generate(w, h, "");
                let (dw, dh) = dtd_active(&e);
                assert!((1..=4095).contains(&dw) && (1..=4095).contains(&dh));
                let t = preferred_timing(w, h);
                assert!(t.pixel_clock_hz / 10_000 <= 65_535);
                assert!(t.pixel_clock_hz > 0);
            }
        }
        assert_eq!(dtd_size(16384, 8192), (4095, 2047));
        assert_eq!(dtd_size(0, 5), (1, 5));
    }

    #[test]
    fn display_name_descriptor() {
        let e = generate(1280, 800, "vm");
        assert_eq!(&e[90..95], &[0, 0, 0, 0xfc, 0]);
        assert_eq!(&e[95..108], b"vm\n          ");
        let e = generate(1280, 800, "a-very-long-guest-name");
        assert_eq!(&e[95..108], b"a-very-long-g");
        let e = generate(1280, 800, "\u{e9}\u{1f600}");
        assert_eq!(&e[95..108], b"scanway\n     ");
        let e = generate(1280, 800, "exactly13char");
        assert_eq!(&e[95..108], b"exactly13char");
    }

    #[test]
    fn manufacturer_id() {
        let e = generate(1280, 800, "x");
        let v = u16::from_be_bytes([e[8], e[9]]);
        let l = |s: u16| (b'A' + ((v >> s) & 0x1f) as u8 - 1) as char;
        assert_eq!(format!("{}{}{}", l(10), l(5), l(0)), "SWY");
    }

    #[test]
    fn edid_decode_accepts() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        if Command::new("edid-decode").arg("--help").output().is_err() {
            eprintln!("edid-decode not on PATH; skipping EDID conformance check");
            return;
        }
        for ((w, h), name) in SIZES.into_iter().zip(["scanway-guest", "vm", "a", "", "x y"]) {
            let e = generate(w, h, name);
            let mut child = Command::new("edid-decode")
                .arg("--check")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn edid-decode");
            child.stdin.take().expect("stdin").write_all(&e).expect("write");
            let out = child.wait_with_output().expect("edid-decode output");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{w}x{h}: edid-decode failed:\n{text}");
            assert!(!text.contains("Warning"), "{w}x{h}: warnings:\n{text}");
            assert!(!text.contains("Failure"), "{w}x{h}: failures:\n{text}");
            assert!(text.contains("EDID conformity: PASS"), "{w}x{h}:\n{text}");
            assert!(text.contains(&format!("{w}x{h}")), "{w}x{h}: mode missing:\n{text}");
        }
    }
}
