//! The plugin loader: finds a plugin library, checks its ABI, and calls into it.
//!
//! This crate is one of the two places in notifyd where `unsafe` lives (the other is the SDK's
//! export module in `notifyd-plugin`); it is a crate of its own so that the daemon crate can say
//! `#![forbid(unsafe_code)]`. The daemon re-exports it as `notifyd::plugin`. Everything above it
//! sees safe types: [`PluginLibrary`] (a loaded library and what it describes) and
//! [`PluginInstance`] (a provider instance created from settings), whose [`PluginInstance::call`]
//! moves JSON documents in and out. Libraries are never unloaded.
//!
//! The safety argument, which every `// SAFETY:` comment below applies to one call: plugins are
//! trusted code the operator chose, like any shared library the daemon links; the C ABI
//! (`include/notifyd_plugin.h`, mirrored by `notifyd_plugin::abi`) fixes every symbol's type and
//! who owns each buffer; the host checks what it can check (the ABI major version, the table's
//! size, that required entries are not NULL) before it calls anything.
// The workspace denies `unsafe_code`; this crate is the host's one exception (docs/architecture.md,
// "Where `unsafe` lives"). Clippy's `undocumented_unsafe_blocks` still asks every block for its
// `// SAFETY:` comment.
#![allow(unsafe_code)]
#![warn(missing_docs)]

use notifyd_plugin::abi::{self, Buf, Instance, OpFn, PluginVTable};
use notifyd_plugin::wire::{Describe, ErrorCode, ErrorDoc, InstanceInit, ProviderError, WIRE_VERSION};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock};

/// Why a plugin could not be found, loaded or instantiated.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No file for the plugin name in any search directory.
    #[error("plugin `{name}` not found: looked for {file} in {searched}")]
    NotFound {
        /// The plugin name asked for.
        name: String,
        /// The file name it maps to ([`file_name`]).
        file: String,
        /// The directories searched, comma-separated.
        searched: String,
    },
    /// The file exists but the dynamic loader refused it.
    #[error("{path}: cannot be loaded as a shared library: {reason}")]
    Open {
        /// The library's path as given.
        path: String,
        /// The loader's (or the file system's) error.
        reason: String,
    },
    /// The library lacks the entry symbol.
    #[error("{path}: not a notifyd plugin (it exports no `notifyd_plugin_v1` symbol)")]
    NoEntry {
        /// The library's path as given.
        path: String,
    },
    /// The library lacks `notifyd_plugin_v1` but exports the entry symbol of another ABI major
    /// version (`notifyd_plugin_v2`, ...): a plugin built for another notifyd.
    #[error(
        "{path}: built for ABI {}; this notifyd supports ABI {} (the library exports {}, not `notifyd_plugin_v{}`); rebuild the plugin against include/notifyd_plugin.h of this version",
        joined(.majors, |m| m.to_string()),
        abi::ABI_MAJOR,
        joined(.majors, |m| format!("`notifyd_plugin_v{m}`")),
        abi::ABI_MAJOR
    )]
    OtherAbiEntry {
        /// The library's path as given.
        path: String,
        /// The ABI major versions whose entry symbols it exports, in ascending order.
        majors: Vec<u32>,
    },
    /// The plugin was built against another ABI major version, or a later minor.
    #[error(
        "{path}: plugin ABI {major}.{minor} is not supported; this notifyd supports ABI {}.x (up to {}.{}); rebuild the plugin against include/notifyd_plugin.h of this version, or upgrade notifyd",
        abi::ABI_MAJOR,
        abi::ABI_MAJOR,
        abi::ABI_MINOR
    )]
    AbiMismatch {
        /// The library's path as given.
        path: String,
        /// The plugin's ABI major version.
        major: u16,
        /// The plugin's ABI minor version.
        minor: u16,
    },
    /// The table or the describe document breaks an ABI rule.
    #[error("{path}: malformed plugin: {reason}")]
    Malformed {
        /// The library's path as given.
        path: String,
        /// Which rule, in words.
        reason: String,
    },
    /// `instance_new` refused a provider's settings.
    #[error("plugin `{plugin}` refused the settings of provider `{instance}`: {message}")]
    Settings {
        /// The plugin's name (from its describe document).
        plugin: String,
        /// The provider instance's name in the config.
        instance: String,
        /// The plugin's error message.
        message: String,
        /// `instance_new`'s return code (`RC_OK` when it returned no instance).
        rc: i32,
        /// The error document's `code`, when the plugin wrote a readable one.
        code: Option<String>,
    },
}

/// `items`, each shown by `show`, joined with ` and `.
fn joined(items: &[u32], show: impl Fn(u32) -> String) -> String {
    items.iter().map(|&i| show(i)).collect::<Vec<_>>().join(" and ")
}

/// A plugin operation that takes an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Send a text (every plugin has it).
    Send,
    /// Poll delivery statuses (`CAP_STATUS`).
    Status,
    /// Read the account balance (`CAP_BALANCE`).
    Balance,
    /// Read a pushed delivery report (`CAP_CALLBACK`).
    Callback,
}

impl Op {
    /// The operation's name, as in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Send => "send",
            Op::Status => "status",
            Op::Balance => "balance",
            Op::Callback => "callback",
        }
    }
}

/// A loaded plugin library.
pub struct PluginLibrary {
    /// The canonical path it was loaded from.
    pub path: PathBuf,
    /// The table as far as the plugin provides it; later fields are `None`.
    table: PluginVTable,
    /// What the plugin says about itself.
    pub describe: Describe,
    /// The describe document as the plugin wrote it.
    describe_document: Vec<u8>,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary").field("path", &self.path).field("describe", &self.describe).finish()
    }
}

/// The file name a plugin name maps to: `smsc` → `libnotifyd_smsc.so`, `c-example` →
/// `libnotifyd_c_example.so` (`-` becomes `_`, as in Rust library names).
pub fn file_name(name: &str) -> String {
    let name = name.replace('-', "_");
    format!("{}notifyd_{name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// The directories searched for plugins: `dirs`, then the executable's directory, then
/// `/usr/lib/notifyd/plugins`.
pub fn search_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut all = dirs.to_vec();
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
        all.push(exe_dir);
    }
    all.push(PathBuf::from("/usr/lib/notifyd/plugins"));
    all
}

/// Finds a plugin by name (or takes a value containing `/` as a path).
pub fn find(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginError> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let file = file_name(name);
    let dirs = search_dirs(dirs);
    dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()).ok_or_else(|| PluginError::NotFound {
        name: name.to_owned(),
        file,
        searched: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// Loaded libraries by canonical path: each is loaded once and never unloaded.
fn loaded() -> &'static Mutex<HashMap<PathBuf, Arc<PluginLibrary>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<PluginLibrary>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

impl PluginLibrary {
    /// Loads the library at `path`, checks its ABI and reads its description.
    pub fn load(path: &Path) -> Result<Arc<PluginLibrary>, PluginError> {
        let shown = path.display().to_string();
        let canonical = path
            .canonicalize()
            .map_err(|e| PluginError::Open { path: shown.clone(), reason: e.to_string() })?;
        let mut loaded = loaded().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lib) = loaded.get(&canonical) {
            return Ok(lib.clone());
        }
        // SAFETY: loading a library runs its initialisers; plugins are trusted code chosen by the
        // operator, like any shared library the daemon links.
        let library = unsafe { libloading::Library::new(&canonical) }
            .map_err(|e| PluginError::Open { path: shown.clone(), reason: with_sources(&e) })?;
        // Never unloaded: function pointers into it live as long as the process.
        let library: &'static libloading::Library = Box::leak(Box::new(library));
        // SAFETY: the symbol's type is fixed by the ABI (include/notifyd_plugin.h).
        let entry: abi::EntryFn = match unsafe { library.get::<abi::EntryFn>(abi::ENTRY_SYMBOL) } {
            Ok(sym) => *sym,
            Err(_) => {
                let majors = other_entry_majors(library, &canonical);
                return Err(if majors.is_empty() {
                    PluginError::NoEntry { path: shown }
                } else {
                    PluginError::OtherAbiEntry { path: shown, majors }
                });
            }
        };
        // SAFETY: the entry point takes no arguments and returns a pointer to a static table.
        let raw = unsafe { entry() };
        if raw.is_null() {
            return Err(PluginError::Malformed {
                path: shown,
                reason: "the entry point returned NULL".into(),
            });
        }
        let table = read_table(raw, &shown)?;
        let (describe, describe_document) = describe(&table, &shown)?;
        let lib = Arc::new(PluginLibrary { path: canonical.clone(), table, describe, describe_document });
        loaded.insert(canonical, lib.clone());
        Ok(lib)
    }

    /// `"<major>.<minor>"` of the ABI the plugin was built against.
    pub fn abi_version(&self) -> String {
        format!("{}.{}", self.table.abi_major, self.table.abi_minor)
    }

    /// The ABI minor version the plugin was built against: a `describe` field of a later minor
    /// (ABI 1.1's `exchange_errors`, `response_json`) is honoured only from a plugin built
    /// against that minor or a later one.
    pub fn abi_minor(&self) -> u16 {
        self.table.abi_minor
    }

    /// The `CAP_*` bits of the plugin's table.
    pub fn capabilities(&self) -> u64 {
        self.table.capabilities
    }

    /// Whether the plugin implements `op`.
    pub fn supports(&self, op: Op) -> bool {
        self.op_fn(op).is_some()
    }

    fn op_fn(&self, op: Op) -> Option<OpFn> {
        let (f, cap) = match op {
            Op::Send => (self.table.send, abi::CAP_SEND),
            Op::Status => (self.table.status, abi::CAP_STATUS),
            Op::Balance => (self.table.balance, abi::CAP_BALANCE),
            Op::Callback => (self.table.callback, abi::CAP_CALLBACK),
        };
        f.filter(|_| op == Op::Send || self.table.capabilities & cap != 0)
    }

    /// The describe document exactly as the plugin wrote it, for conformance checks (the schema
    /// test validates it against `include/notifyd_plugin.schema.json`); [`PluginLibrary::describe`]
    /// is what the host read from it.
    pub fn describe_document(&self) -> &[u8] {
        &self.describe_document
    }

    /// Creates an instance from its settings document.
    pub fn instantiate(self: &Arc<Self>, init: &InstanceInit) -> Result<PluginInstance, PluginError> {
        let settings = serde_json::to_vec(init).expect("settings encode as JSON");
        let created = self.instance_new(&settings);
        let refuse = |message: String| PluginError::Settings {
            plugin: self.describe.name.clone(),
            instance: init.name.clone(),
            message,
            rc: created.rc,
            code: serde_json::from_slice::<ErrorDoc>(&created.answer)
                .ok()
                .map(|d| d.error.code.as_str().to_owned()),
        };
        match (created.rc, created.instance) {
            (abi::RC_OK, Some(instance)) => Ok(instance),
            (abi::RC_OK, None) => Err(refuse("instance_new returned no instance".into())),
            (abi::RC_PANIC, _) => Err(refuse("the plugin panicked while reading its settings".into())),
            (_, _) => Err(refuse(error_message(&created.answer))),
        }
    }

    /// Calls `instance_new` with `settings`, any bytes, and reports what the plugin did, unjudged:
    /// for conformance checks that need the plugin's own answer document.
    /// [`PluginLibrary::instantiate`] is the checked form the daemon uses.
    pub fn instance_new(self: &Arc<Self>, settings: &[u8]) -> Created {
        let mut instance: *mut Instance = std::ptr::null_mut();
        let mut out = Buf::EMPTY;
        let new = self.table.instance_new.expect("checked at load");
        // SAFETY: host-owned input valid for the call; `instance` and `out` are valid out-pointers.
        let rc = unsafe { new(settings.as_ptr(), settings.len(), &mut instance, &mut out) };
        let answer = self.take(out);
        // Only a success hands the instance over: after a failure the plugin may not write
        // `*instance` (ABI rule), so a pointer there is not the host's to free.
        let instance = NonNull::new(instance)
            .filter(|_| rc == abi::RC_OK)
            .map(|ptr| PluginInstance { lib: self.clone(), ptr });
        Created { rc, instance, answer }
    }

    /// Copies a plugin-owned buffer and releases it through the plugin's own `free_buf`.
    fn take(&self, out: Buf) -> Vec<u8> {
        if out.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the plugin returned `len` readable bytes at `ptr`, valid until freed below.
        let bytes = unsafe { std::slice::from_raw_parts(out.ptr, out.len) }.to_vec();
        if let Some(free) = self.table.free_buf {
            // SAFETY: released once, through the allocator that made it.
            unsafe { free(out) };
        }
        bytes
    }
}

/// An error and its sources, joined with `: `. libloading's own text is only `dlopen failed`; the
/// dynamic loader's reason (`invalid ELF header`, a missing dependency) is its source.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = e.source();
    }
    text
}

/// The ABI major versions `N` other than ours for which `library` (loaded from `path`) exports a
/// `notifyd_plugin_v<N>` symbol, ascending. There is no portable way to list a library's symbols,
/// so the file's bytes are searched for the names (they are in its dynamic string table), and each
/// name found is confirmed with the dynamic loader. Only called when `notifyd_plugin_v1` is missing.
fn other_entry_majors(library: &libloading::Library, path: &Path) -> Vec<u32> {
    const PREFIX: &[u8] = b"notifyd_plugin_v";
    let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
    let mut majors: Vec<u32> = Vec::new();
    let mut rest = bytes.as_slice();
    while let Some(at) = rest.windows(PREFIX.len()).position(|w| w == PREFIX) {
        rest = &rest[at + PREFIX.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        // A symbol name ends with a NUL right after its digits.
        if digits == 0 || rest.get(digits) != Some(&0) {
            continue;
        }
        let Some(major) = std::str::from_utf8(&rest[..digits]).ok().and_then(|d| d.parse::<u32>().ok())
        else {
            continue;
        };
        if major == u32::from(abi::ABI_MAJOR) || majors.contains(&major) {
            continue;
        }
        let name = format!("notifyd_plugin_v{major}\0");
        // SAFETY: the symbol is only looked up, never called or read: its address is typed as an
        // opaque pointer, and the lookup result is dropped at once.
        if unsafe { library.get::<*const std::ffi::c_void>(name.as_bytes()) }.is_ok() {
            majors.push(major);
        }
    }
    majors.sort_unstable();
    majors
}

/// Copies the plugin's table, as far as its `struct_size` reaches, into a zeroed host table:
/// fields a shorter (older) table lacks stay `None`.
fn read_table(raw: *const PluginVTable, path: &str) -> Result<PluginVTable, PluginError> {
    #[repr(C)]
    struct Header {
        struct_size: u32,
        abi_major: u16,
        abi_minor: u16,
    }
    // SAFETY: every table starts with this header (ABI rule); reading it is in bounds.
    let header = unsafe { raw.cast::<Header>().read_unaligned() };
    // A later minor may put fields in its documents that this host does not know and would
    // ignore (a body given as `form` fields, say): refused, like another major.
    if header.abi_major != abi::ABI_MAJOR || header.abi_minor > abi::ABI_MINOR {
        return Err(PluginError::AbiMismatch {
            path: path.to_owned(),
            major: header.abi_major,
            minor: header.abi_minor,
        });
    }
    let size = header.struct_size as usize;
    if size < abi::MIN_STRUCT_SIZE {
        return Err(PluginError::Malformed {
            path: path.to_owned(),
            reason: format!("struct_size {size} is smaller than the required {} bytes", abi::MIN_STRUCT_SIZE),
        });
    }
    let mut table = std::mem::MaybeUninit::<PluginVTable>::zeroed();
    let n = size.min(size_of::<PluginVTable>());
    // SAFETY: the plugin promises `struct_size` readable bytes; we copy at most that many, and
    // never more than the host table holds, into that table.
    unsafe { std::ptr::copy_nonoverlapping(raw.cast::<u8>(), table.as_mut_ptr().cast::<u8>(), n) };
    // SAFETY: the table was zeroed, and an all-zero table is valid (integers 0, function pointers
    // None); the bytes copied over it came from a table of the same layout.
    let table = unsafe { table.assume_init() };
    let missing = [
        ("free_buf", table.free_buf.is_none()),
        ("describe", table.describe.is_none()),
        ("instance_new", table.instance_new.is_none()),
        ("instance_free", table.instance_free.is_none()),
        ("send", table.send.is_none()),
    ];
    if let Some((name, _)) = missing.iter().find(|(_, absent)| *absent) {
        return Err(PluginError::Malformed {
            path: path.to_owned(),
            reason: format!("the required `{name}` is NULL"),
        });
    }
    Ok(table)
}

fn describe(table: &PluginVTable, path: &str) -> Result<(Describe, Vec<u8>), PluginError> {
    let malformed = |reason: String| PluginError::Malformed { path: path.to_owned(), reason };
    let mut out = Buf::EMPTY;
    // SAFETY: checked non-NULL in read_table; `out` is a valid out-pointer.
    let rc = unsafe { table.describe.expect("checked")(&mut out) };
    let bytes = if out.ptr.is_null() {
        Vec::new()
    } else {
        // SAFETY: as in PluginLibrary::take.
        let v = unsafe { std::slice::from_raw_parts(out.ptr, out.len) }.to_vec();
        // SAFETY: released once, by the plugin.
        unsafe { table.free_buf.expect("checked")(out) };
        v
    };
    if rc != abi::RC_OK {
        return Err(malformed(format!("describe failed (code {rc}): {}", error_message(&bytes))));
    }
    let d: Describe = serde_json::from_slice(&bytes)
        .map_err(|e| malformed(format!("describe answered a malformed document: {e}")))?;
    if d.v != WIRE_VERSION {
        return Err(malformed(format!("describe document version {} (supported: {WIRE_VERSION})", d.v)));
    }
    if d.name.is_empty() || d.max_recipients == 0 {
        return Err(malformed("describe must give a name and max_recipients of at least 1".into()));
    }
    Ok((d, bytes))
}

/// The message of an error document, or a description of why there is none.
fn error_message(bytes: &[u8]) -> String {
    match serde_json::from_slice::<ErrorDoc>(bytes) {
        Ok(doc) => doc.error.message,
        Err(_) if bytes.is_empty() => "no error document".into(),
        Err(e) => format!("malformed error document ({e})"),
    }
}

/// A provider instance inside a plugin. Callable from many threads at once (ABI rule).
pub struct PluginInstance {
    lib: Arc<PluginLibrary>,
    ptr: NonNull<Instance>,
}

// SAFETY: the ABI requires instances to be callable from many threads at once.
unsafe impl Send for PluginInstance {}
// SAFETY: as above.
unsafe impl Sync for PluginInstance {}

/// What `instance_new` did ([`PluginLibrary::instance_new`]).
#[derive(Debug)]
pub struct Created {
    /// The return code (`RC_OK`, `RC_ERROR`, `RC_PANIC`, or any other the plugin returned).
    pub rc: i32,
    /// The instance, when the plugin returned `RC_OK` and wrote one.
    pub instance: Option<PluginInstance>,
    /// The answer document (empty if the plugin returned none): the error document on failure.
    pub answer: Vec<u8>,
}

/// The raw answer of one call.
pub struct Answer {
    /// The return code (`RC_OK`, `RC_ERROR`, `RC_PANIC`).
    pub rc: i32,
    /// The answer document (empty if the plugin returned none).
    pub body: Vec<u8>,
}

impl PluginInstance {
    /// The library the instance lives in.
    pub fn library(&self) -> &Arc<PluginLibrary> {
        &self.lib
    }

    /// Calls `op` with a JSON document. Errors only when the plugin lacks the operation.
    pub fn call(&self, op: Op, input: &[u8]) -> Result<Answer, ProviderError> {
        let f = self.lib.op_fn(op).ok_or_else(|| {
            ProviderError::new(
                ErrorCode::PluginError,
                format!("plugin `{}` does not support {}", self.lib.describe.name, op.as_str()),
            )
        })?;
        let mut out = Buf::EMPTY;
        // SAFETY: the instance is live (freed only in Drop); the input is valid for the call;
        // `out` is a valid out-pointer.
        let rc = unsafe { f(self.ptr.as_ptr(), input.as_ptr(), input.len(), &mut out) };
        Ok(Answer { rc, body: self.lib.take(out) })
    }
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        if let Some(free) = self.lib.table.instance_free {
            // SAFETY: made by this library's instance_new; freed once.
            unsafe { free(self.ptr.as_ptr()) };
        }
    }
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance").field("plugin", &self.lib.describe.name).finish()
    }
}
