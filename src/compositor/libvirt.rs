//! The few libvirt client calls scanway makes, with `libvirt.so.0` loaded at run time: a
//! compositor must start on machines without libvirt (a TTY, a guest, a container), so the
//! library is not a link-time dependency. Used only by the UI link of VMs that libvirt
//! started ([`super::qemu_ui`]), on its worker thread.
//!
//! Calls (libvirt's public C API, `libvirt-domain.h`): `virConnectOpen`,
//! `virDomainLookupByID`, `virDomainIsActive`, `virDomainGetXMLDesc`,
//! `virDomainOpenGraphicsFD`, `virDomainFree`, `virConnectClose`, `virGetLastErrorMessage`.

use std::{
    ffi::{CStr, CString, c_char, c_int, c_uint, c_void},
    os::fd::{FromRawFd, OwnedFd},
    sync::OnceLock,
};

use anyhow::{Context, anyhow, bail};
use libloading::Library;

type Ptr = *mut c_void;

/// The loaded library's entry points.
struct Api {
    connect_open: unsafe extern "C" fn(*const c_char) -> Ptr,
    connect_close: unsafe extern "C" fn(Ptr) -> c_int,
    lookup_by_id: unsafe extern "C" fn(Ptr, c_int) -> Ptr,
    is_active: unsafe extern "C" fn(Ptr) -> c_int,
    get_xml_desc: unsafe extern "C" fn(Ptr, c_uint) -> *mut c_char,
    open_graphics_fd: unsafe extern "C" fn(Ptr, c_uint, c_uint) -> c_int,
    domain_free: unsafe extern "C" fn(Ptr) -> c_int,
    last_error: unsafe extern "C" fn() -> *const c_char,
    _lib: Library,
}

fn api() -> anyhow::Result<&'static Api> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| load().map_err(|e| format!("{e:#}"))).as_ref().map_err(|e| anyhow!("{e}"))
}

fn load() -> anyhow::Result<Api> {
    // SAFETY: loading libvirt runs its constructors, which have no preconditions.
    let lib = unsafe { Library::new("libvirt.so.0") }.context("loading libvirt.so.0 (Debian package libvirt0)")?;
    // SAFETY: each symbol is looked up with the signature libvirt-domain.h gives it.
    unsafe {
        macro_rules! sym {
            ($name:literal) => {
                *lib.get($name).with_context(|| format!("libvirt.so.0: {}", String::from_utf8_lossy($name)))?
            };
        }
        Ok(Api {
            connect_open: sym!(b"virConnectOpen\0"),
            connect_close: sym!(b"virConnectClose\0"),
            lookup_by_id: sym!(b"virDomainLookupByID\0"),
            is_active: sym!(b"virDomainIsActive\0"),
            get_xml_desc: sym!(b"virDomainGetXMLDesc\0"),
            open_graphics_fd: sym!(b"virDomainOpenGraphicsFD\0"),
            domain_free: sym!(b"virDomainFree\0"),
            last_error: sym!(b"virGetLastErrorMessage\0"),
            _lib: lib,
        })
    }
}

fn last_error(api: &Api) -> String {
    // SAFETY: returns a thread-local, NUL-terminated message (never NULL per its docs).
    let msg = unsafe { (api.last_error)() };
    if msg.is_null() {
        return "unknown libvirt error".to_owned();
    }
    // SAFETY: non-NULL and NUL-terminated, valid until the next libvirt call on this thread.
    unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
}

/// A connection to a libvirt daemon (`virConnectPtr`), closed on drop.
pub struct Connection {
    api: &'static Api,
    ptr: Ptr,
}

impl Connection {
    /// `virConnectOpen(uri)`. Errors: libvirt is not installed, or the daemon refused.
    pub fn open(uri: &str) -> anyhow::Result<Connection> {
        let api = api()?;
        let uri = CString::new(uri).map_err(|_| anyhow!("URI with a NUL byte"))?;
        // SAFETY: a NUL-terminated URI; the result is NULL or a connection we own.
        let ptr = unsafe { (api.connect_open)(uri.as_ptr()) };
        if ptr.is_null() {
            bail!("{}", last_error(api));
        }
        Ok(Connection { api, ptr })
    }

    /// The running domain with id `id` (`virDomainLookupByID`).
    pub fn domain_by_id(&self, id: u32) -> anyhow::Result<Domain<'_>> {
        let id = c_int::try_from(id).map_err(|_| anyhow!("domain id {id} out of range"))?;
        // SAFETY: a live connection; the result is NULL or a domain reference we own.
        let ptr = unsafe { (self.api.lookup_by_id)(self.ptr, id) };
        if ptr.is_null() {
            bail!("{}", last_error(self.api));
        }
        Ok(Domain { conn: self, ptr })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: our reference, released once.
        unsafe { (self.api.connect_close)(self.ptr) };
    }
}

/// A domain reference (`virDomainPtr`), freed on drop; it cannot outlive its connection.
pub struct Domain<'a> {
    conn: &'a Connection,
    ptr: Ptr,
}

impl Domain<'_> {
    /// Whether the domain runs (`virDomainIsActive`).
    pub fn is_active(&self) -> anyhow::Result<bool> {
        // SAFETY: a live domain reference.
        match unsafe { (self.conn.api.is_active)(self.ptr) } {
            r if r < 0 => bail!("{}", last_error(self.conn.api)),
            r => Ok(r == 1),
        }
    }

    /// The domain's XML description (`virDomainGetXMLDesc`, no flags).
    pub fn xml(&self) -> anyhow::Result<String> {
        // SAFETY: a live domain reference; the result is NULL or a malloc'ed string we free.
        let xml = unsafe { (self.conn.api.get_xml_desc)(self.ptr, 0) };
        if xml.is_null() {
            bail!("{}", last_error(self.conn.api));
        }
        // SAFETY: non-NULL and NUL-terminated; freed with free() as libvirt documents.
        let text = unsafe { CStr::from_ptr(xml) }.to_string_lossy().into_owned();
        // SAFETY: allocated by libvirt with malloc, not used after this.
        unsafe { libc::free(xml.cast()) };
        Ok(text)
    }

    /// A connection to the domain's graphics device number `index` (`virDomainOpenGraphicsFD`:
    /// libvirt asks QEMU for a new client of that display and hands us the socket).
    pub fn open_graphics_fd(&self, index: u32) -> anyhow::Result<OwnedFd> {
        // SAFETY: a live domain reference; the result is -1 or a new descriptor we own.
        let fd = unsafe { (self.conn.api.open_graphics_fd)(self.ptr, index, 0) };
        if fd < 0 {
            bail!("{}", last_error(self.conn.api));
        }
        // SAFETY: a new descriptor, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl Drop for Domain<'_> {
    fn drop(&mut self) {
        // SAFETY: our reference, released once.
        unsafe { (self.conn.api.domain_free)(self.ptr) };
    }
}
