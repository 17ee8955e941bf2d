//! Rectangles in pixels with checked arithmetic (virtio_gpu_rect, 5.7.6.8).

#[allow(clippy::wildcard_imports)]
use super::*;

/// A rectangle in pixels. Arithmetic on it is checked: edges are computed in
/// `u64`, so `x + width` never overflows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rect {
    /// Left edge, pixels.
    pub x: u32,
    /// Top edge, pixels.
    pub y: u32,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

impl Rect {
    /// A rectangle from its left/top edge and size.
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect { x, y, width, height }
    }

    /// Whether the rectangle covers no pixel (zero width or height).
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// `x + width` (exclusive right edge), `None` if it overflows `u32`.
    pub fn checked_right(&self) -> Option<u32> {
        self.x.checked_add(self.width)
    }

    /// `y + height` (exclusive bottom edge), `None` if it overflows `u32`.
    pub fn checked_bottom(&self) -> Option<u32> {
        self.y.checked_add(self.height)
    }

    pub(super) fn right64(&self) -> u64 {
        u64::from(self.x) + u64::from(self.width)
    }

    pub(super) fn bottom64(&self) -> u64 {
        u64::from(self.y) + u64::from(self.height)
    }

    /// Whether `other` lies entirely inside `self` (an empty `other` is
    /// contained when its origin is inside or on the edge of `self`).
    pub fn contains(&self, other: &Rect) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.right64() <= self.right64()
            && other.bottom64() <= self.bottom64()
    }

    /// Whether the rectangle lies inside a `width x height` surface at the origin.
    pub fn fits_in(&self, width: u32, height: u32) -> bool {
        Rect::new(0, 0, width, height).contains(self)
    }

    /// The overlap of both rectangles, `None` if it is empty.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let x = self.x.max(other.x);
        let y = self.y.max(other.y);
        let right = self.right64().min(other.right64());
        let bottom = self.bottom64().min(other.bottom64());
        let width = u32::try_from(right.checked_sub(u64::from(x))?).ok()?;
        let height = u32::try_from(bottom.checked_sub(u64::from(y))?).ok()?;
        let r = Rect::new(x, y, width, height);
        (!r.is_empty()).then_some(r)
    }

    /// The rectangle clipped to a `width x height` surface, `None` if nothing is left.
    pub fn clip(&self, width: u32, height: u32) -> Option<Rect> {
        self.intersect(&Rect::new(0, 0, width, height))
    }

    /// The bounding box of both rectangles; an empty rectangle contributes
    /// nothing. `None` if the box is not representable (width or height
    /// above `u32::MAX`).
    pub fn union(&self, other: &Rect) -> Option<Rect> {
        if other.is_empty() {
            return Some(*self);
        }
        if self.is_empty() {
            return Some(*other);
        }
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        let right = self.right64().max(other.right64());
        let bottom = self.bottom64().max(other.bottom64());
        Some(Rect::new(x, y, u32::try_from(right - u64::from(x)).ok()?, u32::try_from(bottom - u64::from(y)).ok()?))
    }
}

impl From<GpuRect> for Rect {
    fn from(r: GpuRect) -> Rect {
        Rect::new(r.x.to_native(), r.y.to_native(), r.width.to_native(), r.height.to_native())
    }
}

impl From<Rect> for GpuRect {
    fn from(r: Rect) -> GpuRect {
        GpuRect { x: r.x.into(), y: r.y.into(), width: r.width.into(), height: r.height.into() }
    }
}
