//! The module loader: the only place that touches `libloading` and the raw module boundary.
//!
//! [`Module::open`] maps a module file (`RTLD_NOW | RTLD_LOCAL`), finds its entry symbol and
//! validates the descriptor before calling anything else. [`Module::instantiate`] builds the
//! app through the module's `create`; the resulting [`Instance`] offers safe `warmup`, `handle`
//! and `shutdown` calls. The library stays mapped as long as an `Instance` or the `Module` is
//! alive; dropping the last of them unloads it. Callers decide on which threads module code
//! runs (see `deploy`): the loader only guarantees that every boundary call is sound.
#![allow(unsafe_code)]

mod callbacks;
mod elf;
mod error;
mod maps;
mod session;
mod tlskeys;

use std::ffi::c_void;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_sdk::abi::{self, DescriptorHeader, ModuleDescriptor, RawStr};

pub use callbacks::{
    BodyReadError, MemoryIo, ModuleRequest, ModuleResponse, RequestIo, StreamClosed,
};
pub use elf::{Checked, NoDelete, check, check_file};
pub use error::LoadError;
pub use maps::mapped_regions;
pub use session::{AccessError, SessionAccess, UpdateFn};
pub use tlskeys::{PTHREAD_KEYS_MAX, loads_refused, pthread_keys_in_use, pthread_keys_reclaimed};

use crate::error::{Error, Result};

/// What a module says about itself, read from its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// App name.
    pub app: String,
    /// App version.
    pub version: String,
    /// Version of `baton-sdk` it was built with.
    pub sdk_version: String,
    /// Compiler that built it.
    pub rustc_version: String,
    /// ABI version (major, minor).
    pub abi: (u32, u32),
}

/// How a call into a module failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The app returned an error.
    #[error("{0}")]
    Failed(String),
    /// The app panicked; the panic was caught inside the module.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The call did not return in time; it goes on running on its thread.
    #[error("did not return within {} ms", .0.as_millis())]
    Overran(std::time::Duration),
}

/// A loaded, validated module file.
pub struct Module {
    // Declared first so the table is never used after the library is closed.
    table: FnTable,
    info: ModuleInfo,
    path: PathBuf,
    library: libloading::Library,
}

#[derive(Clone, Copy)]
struct FnTable {
    create: abi::CreateFn,
    warmup: abi::HookFn,
    handle: abi::HandleFn,
    shutdown: abi::HookFn,
    destroy: abi::DestroyFn,
    /// Since 1.1.
    assets: Option<abi::AssetsFn>,
}

/// The size of a 1.0 descriptor: every field before `assets`.
const DESCRIPTOR_1_0: usize = std::mem::offset_of!(ModuleDescriptor, assets);

/// One file a module embeds, copied into host memory.
#[derive(Debug, Clone)]
pub struct ModuleAsset {
    /// Path relative to the app's mount, starting with `/`.
    pub path: String,
    /// Contents.
    pub bytes: bytes::Bytes,
    /// The module's content hash (hex).
    pub hash: String,
    /// Modification time in seconds since the Unix epoch; 0 when unknown.
    pub modified_unix_secs: u64,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("info", &self.info)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Reads a string field of a validated descriptor.
///
/// # Safety
/// `s` must come from a descriptor whose header checked out.
unsafe fn descriptor_str(s: RawStr, field: &'static str) -> Result<String, LoadError> {
    if s.len > 4096 || (s.len > 0 && s.ptr.is_null()) {
        return Err(LoadError::MalformedField { field });
    }
    // SAFETY: a valid descriptor's strings point into the module's static data.
    let bytes = unsafe { s.as_bytes() };
    String::from_utf8(bytes.to_vec()).map_err(|source| LoadError::NotUtf8 { field, source })
}

fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Module {
    /// Loads and validates the module at `path`.
    ///
    /// `display` is the name used in errors (the file the operator dropped, when `path` is a
    /// private copy).
    ///
    /// The file is checked as ELF before it is mapped ([`check_file`]); a library linked with
    /// `DF_1_NODELETE` has the flag cleared in `path` (a private copy) first, with a warning.
    ///
    /// # Errors
    /// [`Error::Load`] with the [`LoadError`] that refused the file: not a complete shared
    /// library for this host, no entry symbol, `dlopen` failed, a malformed descriptor or one of
    /// another ABI major (the message names both sides' versions).
    pub fn open(path: &Path, display: &Path) -> Result<Module> {
        Self::load(path, display).map_err(|source| Error::Load {
            path: display.to_owned(),
            source,
        })
    }

    fn load(path: &Path, display: &Path) -> Result<Module, LoadError> {
        // Every module may take a pthread key for good (see `tlskeys`); std aborts the whole
        // process when none is left, so refuse the load while there is still room.
        if loads_refused() {
            return Err(LoadError::KeysExhausted {
                in_use: pthread_keys_in_use().unwrap_or(PTHREAD_KEYS_MAX),
                max: PTHREAD_KEYS_MAX,
            });
        }
        // A file dlopen cannot map safely (truncated, foreign) would fault the whole process;
        // nothing is mapped before it checks out.
        let checked = elf::check_file(path)?;
        if let Some(nodelete) = checked.nodelete() {
            elf::clear_nodelete(path, nodelete).map_err(|source| LoadError::NoDelete { source })?;
            let file = display.display();
            tracing::warn!(module = %file,
                "module linked with DF_1_NODELETE (-z nodelete): cleared in the private copy so \
                 this version can be unloaded after a swap");
        }
        // SAFETY: loading a library runs its initialisers; a Baton module's are those of std and
        // its dependencies, and nothing else of it runs before the descriptor checks out.
        let library: libloading::Library = unsafe {
            use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
            Library::open(Some(path), RTLD_NOW | RTLD_LOCAL)
        }
        .map_err(|source| LoadError::Dlopen { source })?
        .into();

        // SAFETY: the symbol, if present, has the entry signature every Baton module exports.
        let entry: abi::EntryFn = unsafe {
            *library
                .get::<abi::EntryFn>(abi::ENTRY_SYMBOL.as_bytes())
                .map_err(|_| LoadError::NoEntry)?
        };
        // SAFETY: the entry point only returns a pointer to the module's static descriptor.
        let descriptor = unsafe { entry() };
        if descriptor.is_null() {
            return Err(LoadError::NoDescriptor);
        }
        // SAFETY: every ABI version starts with the fixed header, so reading it is sound.
        let header: DescriptorHeader = unsafe { descriptor.cast::<DescriptorHeader>().read() };
        if header.magic != abi::MAGIC {
            return Err(LoadError::BadMagic {
                magic: header.magic,
            });
        }
        let (module_abi, host_abi) = (
            (header.abi_major, header.abi_minor),
            (abi::ABI_MAJOR, abi::ABI_MINOR),
        );
        // SAFETY: the magic checked out, so this is a Baton header, whose sdk version field
        // exists in every ABI version.
        let module_sdk = unsafe { descriptor_str(header.sdk_version, "sdk_version") }
            .unwrap_or_else(|_| "unknown".to_owned());
        if header.abi_major != abi::ABI_MAJOR {
            return Err(LoadError::AbiMajor {
                module_sdk,
                module: module_abi,
                host: host_abi,
            });
        }
        if header.size < DESCRIPTOR_1_0 {
            return Err(LoadError::ShortDescriptor {
                module: module_abi,
                host: host_abi,
                size: header.size,
                expected: DESCRIPTOR_1_0,
            });
        }
        // SAFETY: magic, major and size checked out: the descriptor has at least the 1.0 layout
        // (a newer minor only appends fields); fields after it are read only when its size and
        // minor say they exist.
        let desc = unsafe { &*descriptor };
        let has_assets =
            header.abi_minor >= 1 && header.size >= std::mem::size_of::<ModuleDescriptor>();
        // SAFETY: the header checked out.
        let (app, version, rustc_version) = unsafe {
            (
                descriptor_str(desc.app_name, "app_name"),
                descriptor_str(desc.app_version, "app_version"),
                descriptor_str(desc.rustc_version, "rustc_version"),
            )
        };
        let info = ModuleInfo {
            app: app?,
            version: version?,
            sdk_version: module_sdk,
            rustc_version: rustc_version?,
            abi: module_abi,
        };
        if !valid_app_name(&info.app) {
            return Err(LoadError::AppName { name: info.app });
        }
        if info.version.is_empty() || info.version.len() > 64 {
            return Err(LoadError::AppVersion {
                version: info.version,
            });
        }
        Ok(Module {
            table: FnTable {
                create: desc.create,
                warmup: desc.warmup,
                handle: desc.handle,
                shutdown: desc.shutdown,
                destroy: desc.destroy,
                assets: has_assets.then_some(desc.assets),
            },
            info,
            path: path.to_owned(),
            library,
        })
    }

    /// What the module says about itself.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// The file the library was mapped from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Builds an app instance with `config` (a JSON object) through the module's `create`.
    ///
    /// Runs module code: call it on a thread that is joined before the library is unloaded.
    ///
    /// # Errors
    /// The app's `init` error or panic.
    pub fn instantiate(self: &Arc<Self>, config: &[u8]) -> Result<Instance, CallError> {
        let host = callbacks::HostServices::new(&self.info);
        let mut raw: *mut c_void = std::ptr::null_mut();
        let mut err = callbacks::ErrorText::default();
        // SAFETY: `host` is boxed and lives in the instance until after `destroy`; `config`,
        // `err` and `raw` outlive the call.
        let status =
            unsafe { (self.table.create)(host.api(), RawStr::new(config), &mut raw, &err.sink()) };
        err.into_result(status)?;
        if raw.is_null() {
            return Err(CallError::Failed("create returned no instance".into()));
        }
        Ok(Instance {
            raw,
            host,
            module: Arc::clone(self),
        })
    }

    /// Unloads the library now (`dlclose`) and, once it is unmapped, deletes the pthread keys
    /// its copy of std created. Returns how many keys were reclaimed.
    ///
    /// Call only after every thread that ran the module's code has exited.
    ///
    /// # Errors
    /// [`LoadError::Close`] with what `dlclose` reports.
    pub fn close(self) -> Result<usize, LoadError> {
        let keys = maps::address_ranges(&self.path)
            .map(|ranges| tlskeys::owned_by(&ranges))
            .unwrap_or_default();
        let path = self.path;
        self.library
            .close()
            .map_err(|source| LoadError::Close { source })?;
        if keys.is_empty() || !maps::mapped_regions(&path).is_ok_and(|left| left.is_empty()) {
            return Ok(0);
        }
        let reclaimed = tlskeys::reclaim(&keys);
        tracing::debug!(module = %path.display(), reclaimed, "pthread keys reclaimed");
        Ok(reclaimed)
    }
}

/// One live app instance inside a loaded module. Dropping it calls the module's `destroy`.
pub struct Instance {
    raw: *mut c_void,
    // Kept alive until after `destroy`: the module may log until then.
    host: Box<callbacks::HostServices>,
    module: Arc<Module>,
}

// SAFETY: the sdk requires apps to be `Send + Sync`, and the instance pointer is only used
// through the module's thread-safe entry points.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("module", &self.module.info)
            .finish()
    }
}

impl Instance {
    /// The module this instance lives in.
    pub fn module(&self) -> &Arc<Module> {
        &self.module
    }

    fn hook(&self, hook: abi::HookFn) -> Result<(), CallError> {
        let mut err = callbacks::ErrorText::default();
        // SAFETY: `raw` is a live instance of this module; `err` outlives the call.
        let status = unsafe { hook(self.raw, &err.sink()) };
        err.into_result(status)
    }

    /// Runs the app's warm-up hook.
    ///
    /// # Errors
    /// The app's error or panic.
    pub fn warmup(&self) -> Result<(), CallError> {
        self.hook(self.module.table.warmup)
    }

    /// Runs the app's shutdown hook.
    ///
    /// # Errors
    /// A panic in the hook.
    pub fn shutdown(&self) -> Result<(), CallError> {
        self.hook(self.module.table.shutdown)
    }

    /// Copies the module's embedded assets into host memory (none for a 1.0 module).
    ///
    /// # Errors
    /// The module's listing failed or panicked.
    pub fn assets(&self) -> Result<Vec<ModuleAsset>, CallError> {
        let Some(list) = self.module.table.assets else {
            return Ok(Vec::new());
        };
        let mut found: Vec<ModuleAsset> = Vec::new();
        let visitor = abi::AssetVisitor {
            ctx: std::ptr::from_mut(&mut found).cast(),
            visit: collect_asset,
        };
        let mut err = callbacks::ErrorText::default();
        // SAFETY: `raw` is a live instance; the visitor and `err` outlive the call.
        let status = unsafe { list(self.raw, &visitor, &err.sink()) };
        err.into_result(status)?;
        Ok(found)
    }

    /// Whether the module reads bodies and writes responses as streams (ABI 1.1 and later):
    /// an older module gets every body whole.
    pub fn streams(&self) -> bool {
        self.module.info.abi.1 >= 1
    }

    /// Handles one request. A handler error still yields its response (with the error for the
    /// log); a panic yields none.
    ///
    /// # Errors
    /// [`CallError::Panicked`] when the handler panicked.
    pub fn handle(
        &self,
        request: &ModuleRequest<'_>,
        io: &mut dyn RequestIo,
    ) -> Result<ModuleResponse, CallError> {
        let headers = request.raw_headers();
        let texts = request.address_texts();
        let mut response = callbacks::ResponseBuilder::default();
        let builder: *mut callbacks::ResponseBuilder = &mut response;
        let mut ctx = callbacks::RequestContext::new(request.session, io, builder);
        let raw = request.raw(&headers, &texts, &mut ctx);
        let sink = callbacks::ResponseBuilder::sink(builder);
        let mut err = callbacks::ErrorText::default();
        // SAFETY: `raw` borrows `request`, `headers`, `texts` and `ctx`, which outlive the call,
        // as do the sinks; the builder is reached only through the sink and the context, one
        // callback at a time on this thread.
        let status = unsafe { (self.module.table.handle)(self.raw, &raw, &sink, &err.sink()) };
        match err.into_result(status) {
            Ok(()) => Ok(response.finish(None)),
            Err(CallError::Failed(message)) => Ok(response.finish(Some(message))),
            Err(panic) => Err(panic),
        }
    }
}

unsafe extern "C" fn collect_asset(ctx: *mut c_void, asset: *const abi::RawAsset) {
    if ctx.is_null() || asset.is_null() {
        return;
    }
    // SAFETY: `ctx` is the `Vec` of `Instance::assets`, alive for the listing call; the asset and
    // its slices are valid for this call.
    let (found, asset) = unsafe { (&mut *ctx.cast::<Vec<ModuleAsset>>(), &*asset) };
    // A panic must not unwind into module frames.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: as above.
        let (path, bytes, hash) = unsafe {
            (
                String::from_utf8_lossy(asset.path.as_bytes()).into_owned(),
                bytes::Bytes::copy_from_slice(asset.bytes.as_bytes()),
                String::from_utf8_lossy(asset.hash.as_bytes()).into_owned(),
            )
        };
        found.push(ModuleAsset {
            path,
            bytes,
            hash,
            modified_unix_secs: asset.modified_unix_secs,
        });
    }));
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `raw` came from this module's `create` and is destroyed exactly once.
        unsafe { (self.module.table.destroy)(self.raw) };
        let _ = &self.host;
    }
}
