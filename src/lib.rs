//! scanway: the host side of a vhost-user virtio-gpu device that shows every guest scanout as a
//! window of a smithay Wayland compositor.
//!
//! One guest flush, from socket to pixel:
//! 1. [`compositor::guests`]: the guest's ctrl queue kick eventfd fires on the calloop loop;
//!    the [`virtio::vhost::VhostUserGpu`] handler pops the descriptor chains.
//! 2. [`virtio::device::Gpu`] executes `TRANSFER_TO_HOST_2D` (guest backing -> host copy of the
//!    resource) and `RESOURCE_FLUSH`, answers the guest and records a
//!    [`virtio::device::GpuEvent::ResourceFlush`].
//! 3. [`scanout::GuestScanouts::apply`] turns the event into texture damage of every scanout
//!    showing the resource; the compositor is asked to redraw.
//! 4. Before the frame, [`scanout::GuestScanouts::upload`] copies only the flushed rectangle into
//!    the resource's GL texture, and the scanout's space element reports only that damage to
//!    smithay's damage tracker, which repaints only that region of the output.

pub mod attach;
pub mod cli;
pub mod compositor;
pub mod control;
pub mod renderer;
pub mod run_config;
pub mod scanout;
pub mod virtio;
