//! Judging a screenshot: a guest that booted shows something of its own.
//!
//! Two ways a screen lies about a boot: it is uniform or nearly so (a
//! black screen, a hung framebuffer), or it still shows what the firmware
//! or boot loader drew ("No bootable device", a GRUB menu frozen on a
//! missing kernel). The first is counted; the second is found by
//! comparing with a screenshot taken while the firmware ran: if most of
//! what the firmware drew is still there, pixel for pixel, the guest never
//! took the screen over. A text-mode screen (720x400, VGA's 80x25) is
//! also read as text, straight from the guest's VGA text buffer, and
//! fails when it shows a firmware's or boot loader's failure ("No bootable
//! device", "grub rescue>"): by the time probes give up, a firmware
//! usually has scrolled its own banner away trying the next device.

use crate::LabError;
use std::collections::HashMap;
use std::path::Path;

/// An RGB image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 8-bit RGB, 3 bytes a pixel, row by row (`width * height * 3` bytes).
    pub rgb: Vec<u8>,
}

/// What a screenshot shows, as far as the lab cares.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScreenVerdict {
    /// The guest draws its own screen: neither blank nor still the
    /// firmware's.
    pub ok: bool,
    /// Share of the most common colour (1.0 = uniform; above 0.999 the
    /// screen counts as blank).
    pub dominant_share: f64,
    /// Share of the firmware screen's drawn pixels still unchanged (0.0 to
    /// 1.0; above 0.9 fails). `None` when no firmware screen of the same
    /// size was caught, it drew nothing, or the screen was already found
    /// blank.
    pub firmware_left: Option<f64>,
    /// One sentence for the report: why the screen passes or fails.
    pub reason: String,
}

impl Screen {
    /// Reads a PNG (as QEMU's `screendump` writes it; palette, grey and
    /// 16-bit images are converted, alpha is dropped). Errors are
    /// [`LabError::Probe`] naming the file.
    pub fn load_png(path: &Path) -> Result<Screen, LabError> {
        let bad = |e: String| LabError::Probe(format!("screenshot {}: {e}", path.display()));
        let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut dec = png::Decoder::new(std::io::BufReader::new(f));
        dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut r = dec.read_info().map_err(|e| bad(e.to_string()))?;
        let mut buf = vec![0; r.output_buffer_size().ok_or_else(|| bad("image too large".into()))?];
        let info = r.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
        let px = (info.width * info.height) as usize;
        let rgb = match info.color_type {
            png::ColorType::Rgb => buf[..px * 3].to_vec(),
            png::ColorType::Rgba => buf[..px * 4].chunks(4).flat_map(|c| [c[0], c[1], c[2]]).collect(),
            png::ColorType::Grayscale => buf[..px].iter().flat_map(|g| [*g, *g, *g]).collect(),
            png::ColorType::GrayscaleAlpha => buf[..px * 2].chunks(2).flat_map(|c| [c[0], c[0], c[0]]).collect(),
            other => return Err(bad(format!("unexpected colour type {other:?}"))),
        };
        Ok(Screen { width: info.width, height: info.height, rgb })
    }

    fn pixel(&self, i: usize) -> [u8; 3] {
        [self.rgb[i * 3], self.rgb[i * 3 + 1], self.rgb[i * 3 + 2]]
    }

    fn pixels(&self) -> usize {
        (self.width * self.height) as usize
    }

    /// The most common colour and its share of the pixels.
    pub fn dominant(&self) -> ([u8; 3], f64) {
        let mut counts: HashMap<[u8; 3], usize> = HashMap::new();
        for i in 0..self.pixels() {
            *counts.entry(self.pixel(i)).or_default() += 1;
        }
        let (c, n) = counts.into_iter().max_by_key(|(_, n)| *n).unwrap_or(([0; 3], 0));
        (c, n as f64 / self.pixels().max(1) as f64)
    }

    /// Judges `self`, the screen after boot, against the screen the
    /// firmware showed (when one was caught).
    pub fn judge(&self, firmware: Option<&Screen>) -> ScreenVerdict {
        let (_, share) = self.dominant();
        // Even a text console with one line on it keeps > 0.1 % of pixels
        // in another colour; a blank screen has none.
        if share > 0.999 {
            return ScreenVerdict { ok: false, dominant_share: share, firmware_left: None, reason: format!("the screen is blank ({:.2} % one colour)", share * 100.0) };
        }
        let left = firmware.filter(|f| f.width == self.width && f.height == self.height).and_then(|f| {
            let (bg, _) = f.dominant();
            let drawn: Vec<usize> = (0..f.pixels()).filter(|i| f.pixel(*i) != bg).collect();
            (!drawn.is_empty()).then(|| drawn.iter().filter(|i| self.pixel(**i) == f.pixel(**i)).count() as f64 / drawn.len() as f64)
        });
        if let Some(l) = left.filter(|l| *l > 0.9) {
            return ScreenVerdict {
                ok: false,
                dominant_share: share,
                firmware_left: Some(l),
                reason: format!("the screen still shows what the firmware drew ({:.0} % of it unchanged): the guest never took the screen over", l * 100.0),
            };
        }
        ScreenVerdict { ok: true, dominant_share: share, firmware_left: left, reason: "the guest draws its own screen".into() }
    }
}

/// VGA text mode as QEMU draws it: 80x25 cells of 9x16 pixels.
pub const TEXT_MODE: (u32, u32) = (720, 400);

/// The characters of a VGA text buffer (80x25, character and attribute
/// bytes), one line per row, trailing blanks trimmed.
pub fn text_of_vga(buf: &[u8]) -> String {
    buf.chunks(160).take(25).map(|row| row.iter().step_by(2).map(|c| if (0x20..0x7f).contains(c) { *c as char } else { ' ' }).collect::<String>().trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

/// Messages that mean a firmware or boot loader gave up.
const FAILURES: &[&str] = &[
    "No bootable device",
    "Boot failed",
    "not a bootable disk",
    "No boot device",
    "Operating System not found",
    "Missing operating system",
    "BOOTMGR is missing",
    "Non-system disk",
    "Reboot and Select proper Boot device",
    "grub rescue>",
    "Kernel panic",
    "PXE-E",
];

/// The first line of `text` that shows a firmware's or boot loader's
/// failure.
pub fn boot_failure(text: &str) -> Option<&str> {
    text.lines().find(|l| FAILURES.iter().any(|f| l.contains(f))).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Screen {
        let mut rgb = Vec::new();
        for y in 0..h {
            for x in 0..w {
                rgb.extend(f(x, y));
            }
        }
        Screen { width: w, height: h, rgb }
    }

    #[test]
    fn blank_screens_fail() {
        let s = screen(100, 100, |_, _| [0, 0, 0]);
        assert!(!s.judge(None).ok);
        assert!(s.judge(None).reason.contains("blank"));
    }

    #[test]
    fn a_firmware_screen_left_as_it_was_fails_and_a_new_one_passes() {
        // "Firmware" text in the top rows.
        let fw = screen(100, 100, |x, y| if y < 10 && x % 3 == 0 { [200, 200, 200] } else { [0, 0, 0] });
        let stuck = screen(100, 100, |x, y| if (y < 10 && x % 3 == 0) || (y == 20 && x < 50) { [200, 200, 200] } else { [0, 0, 0] });
        let v = stuck.judge(Some(&fw));
        assert!(!v.ok && v.reason.contains("firmware"), "{v:?}");
        let booted = screen(100, 100, |x, y| if y < 10 && x % 4 == 1 { [170, 170, 170] } else { [0, 0, 0] });
        assert!(booted.judge(Some(&fw)).ok);
        assert!(booted.judge(None).ok);
    }

    #[test]
    fn text_mode_failures_are_found() {
        let mut buf = vec![0u8; 4000];
        for (row, line) in [(0, "Booting from Hard Disk..."), (24, "No bootable device.")] {
            for (i, b) in line.bytes().enumerate() {
                buf[row * 160 + i * 2] = b;
                buf[row * 160 + i * 2 + 1] = 0x07;
            }
        }
        let text = text_of_vga(&buf);
        assert_eq!(text.lines().count(), 25);
        assert_eq!(boot_failure(&text), Some("No bootable device."));
        assert_eq!(boot_failure("LIFEBOAT TEST GUEST READY\n/ # "), None);
    }

    #[test]
    fn reads_what_png_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.png");
        let s = screen(7, 5, |x, y| [x as u8 * 30, y as u8 * 40, 9]);
        let mut e = png::Encoder::new(std::fs::File::create(&p).unwrap(), 7, 5);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        e.write_header().unwrap().write_image_data(&s.rgb).unwrap();
        assert_eq!(Screen::load_png(&p).unwrap(), s);
        std::fs::write(&p, b"not a png").unwrap();
        assert!(Screen::load_png(&p).is_err());
    }
}
