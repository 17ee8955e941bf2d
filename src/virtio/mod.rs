//! The virtio-gpu device (virtio 1.2, section 5.7) and its vhost-user transport.
//!
//! [`device`] is the device model: plain Rust, driven by descriptor chains in guest memory,
//! testable without GL or sockets; its 3D commands go to a [`renderer3d::Renderer3d`], which
//! [`virgl3d`] implements over virglrenderer. [`vhost`] serves it to a VMM over a vhost-user
//! socket; in tests, `synthetic` is that VMM and its guest driver.

pub mod backing;
pub mod device;
pub mod edid;
pub mod format;
pub mod isolated;
pub mod protocol;
pub mod renderer3d;
#[cfg(test)]
pub(crate) mod synthetic;
pub mod vhost;
pub mod virgl3d;
pub mod virgl_stream;
