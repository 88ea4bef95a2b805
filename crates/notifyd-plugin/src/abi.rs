//! The C ABI, v1: a mirror of `include/notifyd_plugin.h`, which is the source of truth.
//!
//! `tests/abi_layout.rs` compiles a C program against the header and compares every size and
//! offset with this file, so the two cannot drift silently.

use std::ffi::c_void;

/// Major version: part of the entry symbol's name; a mismatch is refused.
pub const ABI_MAJOR: u16 = 1;
/// Minor version: the table grows at its end and documents gain fields a plugin opts into; older
/// minors keep working. 1.1 adds document fields only (`wire`: `exchange_errors`, `response_json`,
/// `results`, the request helpers, `from_given`).
pub const ABI_MINOR: u16 = 1;
/// The exported entry symbol (NUL-terminated for `dlsym`).
pub const ENTRY_SYMBOL: &[u8] = b"notifyd_plugin_v1\0";

/// `send`: always set.
pub const CAP_SEND: u64 = 1 << 0;
/// `status`: delivery status polling.
pub const CAP_STATUS: u64 = 1 << 1;
/// `balance`: account balance query.
pub const CAP_BALANCE: u64 = 1 << 2;
/// `callback`: parses provider-pushed delivery reports.
pub const CAP_CALLBACK: u64 = 1 << 3;
/// `send` honours `send_at` natively.
pub const CAP_SCHEDULE: u64 = 1 << 4;

/// `out` holds the JSON answer.
pub const RC_OK: i32 = 0;
/// `out` holds an error document.
pub const RC_ERROR: i32 = 1;
/// The plugin caught a panic; `out` may be empty.
pub const RC_PANIC: i32 = 2;
/// The operation is not implemented.
pub const RC_UNSUPPORTED: i32 = 3;

/// A byte buffer allocated by the plugin and released through [`PluginVTable::free_buf`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Buf {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Buf {
    pub const EMPTY: Buf = Buf { ptr: std::ptr::null_mut(), len: 0 };
}

/// An opaque provider instance (`notifyd_instance`).
pub type Instance = c_void;

/// One operation: `(instance, input, input_len, out) -> rc`.
pub type OpFn =
    unsafe extern "C" fn(instance: *const Instance, input: *const u8, len: usize, out: *mut Buf) -> i32;

/// The function table (`notifyd_plugin_vtable`). Append-only: fields beyond `struct_size` are absent.
#[repr(C)]
pub struct PluginVTable {
    pub struct_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub capabilities: u64,
    pub free_buf: Option<unsafe extern "C" fn(buf: Buf)>,
    pub describe: Option<unsafe extern "C" fn(out: *mut Buf) -> i32>,
    pub instance_new: Option<
        unsafe extern "C" fn(
            settings: *const u8,
            len: usize,
            instance: *mut *mut Instance,
            out: *mut Buf,
        ) -> i32,
    >,
    pub instance_free: Option<unsafe extern "C" fn(instance: *mut Instance)>,
    pub send: Option<OpFn>,
    pub status: Option<OpFn>,
    pub balance: Option<OpFn>,
    pub callback: Option<OpFn>,
}

/// The smallest `struct_size` a host accepts: the header and every required v1.0 field.
pub const MIN_STRUCT_SIZE: usize = std::mem::offset_of!(PluginVTable, status);

/// The entry point's type: returns a pointer to a static table.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginVTable;
