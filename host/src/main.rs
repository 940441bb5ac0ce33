//! `baton`: the command line of the Baton host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use baton_host::admin::client::AdminCommand;
use baton_host::{Config, Host, Stop, supervisor};
use clap::{Parser, Subcommand};

/// The host's own allocations (modules keep the allocator they were built with: each side frees
/// what it allocated). Built without transparent huge pages (the `no_thp` feature): with them,
/// mimalloc's eagerly committed arena grew an idle host's RSS from 11 to 22 MB. See
/// [`tune_allocator`] for when it gives freed memory back.
#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

/// mimalloc, through its plain calls wherever they give the alignment asked for.
///
/// The `mimalloc` crate's allocator passes every request to the `_aligned` calls, and mimalloc 3
/// serves those straight from a size class only for a block of up to 1 KiB whose page's next free
/// block happens to be aligned, or a power-of-two size class up to 4 KiB; it over-allocates for
/// the rest. A request made about three such allocations (a connection's read buffer, the
/// request's future, a header map), about 260 instructions each.
struct Mimalloc;

/// The alignment of every mimalloc block of more than 8 bytes (`MI_MAX_ALIGN_SIZE`): its size
/// classes above 8 bytes are multiples of 16 bytes, laid out from 16-byte aligned page starts, and
/// an 8-byte block is 8-byte aligned.
const MI_MAX_ALIGN_SIZE: usize = 16;

/// Whether a plain mimalloc block of `size` bytes is aligned to `align`.
fn plain_suffices(size: usize, align: usize) -> bool {
    align <= MI_MAX_ALIGN_SIZE && align <= size
}

// SAFETY: each call passes the layout's size (and its alignment where the plain block would not
// have it) to mimalloc, which returns null or a block of at least that size at that alignment
// (`plain_suffices`), and frees or resizes only blocks it returned, whichever call made them.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: mimalloc's allocation calls accept any size and power-of-two alignment.
        unsafe {
            if plain_suffices(size, align) {
                libmimalloc_sys::mi_malloc(size).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(size, align).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: as for `alloc`.
        unsafe {
            if plain_suffices(size, align) {
                libmimalloc_sys::mi_zalloc(size).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(size, align).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from mimalloc, aligned or not.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: `ptr` came from this allocator; a moved block is allocated as `alloc` would.
        unsafe {
            if plain_suffices(new_size, align) {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, align).cast()
            }
        }
    }
}

/// `mi_option_purge_delay` in `mimalloc.h` (the crate names no constant for it; the enum keeps
/// its numbering across releases, deprecated options included).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed pages before giving them back to the system, in ms.
///
/// Its default, 1,000 ms, kept the pages of the worker threads that every swap starts and joins:
/// 1,000 swaps back to back grew the RSS by 11 MB (`swapbench --soak`, target 10 MB); 100 ms
/// kept it to 6 MB. Giving pages back at once (0) cost throughput.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Sets mimalloc's options, before the host starts any thread.
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: `mi_option_set` stores an option's value in mimalloc's option table (a plain store:
    // this runs first in `main`, before any other thread exists); any value is valid for the
    // purge delay, which mimalloc reads whenever it schedules a purge, so setting it after the
    // allocator started is allowed.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// Baton: a web app host that swaps app versions without failing a request.
#[derive(Debug, Parser)]
#[command(name = "baton", version = baton_host::VERSION, about)]
struct Cli {
    /// Log format: `plain` or `json` (also BATON_LOG_FORMAT). Log filter: BATON_LOG, then RUST_LOG.
    #[arg(long, global = true, env = "BATON_LOG_FORMAT", default_value = "plain")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the modules in a directory.
    Serve(ServeArgs),
    #[command(flatten)]
    Admin(AdminCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file; the flags below override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the HTTPS listener (needs `[tls] cert` and `key` in the config) [default:
    /// none].
    #[arg(long, value_name = "ADDR")]
    listen_tls: Option<SocketAddr>,
    /// Directory of module files to serve [default: ./modules].
    #[arg(long)]
    modules: Option<PathBuf>,
    /// Address of the admin listener [default: 127.0.0.1:9090].
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Do not watch the modules directory (load it once at start).
    #[arg(long)]
    no_watch: bool,
    /// Directory for the host's private module copies and state [default: ./.baton].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Do not add the x-baton-version header to responses.
    #[arg(long)]
    no_version_header: bool,
    /// Session store: `memory` or a Redis URL: `redis://`, `rediss://`, `redis+sentinel://`,
    /// `redis+cluster://` [default: memory].
    #[arg(long, value_name = "URL")]
    sessions: Option<String>,
    /// Bearer token the admin API requires (prefer the environment variable).
    #[arg(long, env = "BATON_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Serve in this process, without a supervisor that restarts it when it dies.
    #[arg(long)]
    no_supervisor: bool,
}

/// How long the apps' shutdown hooks and unloads may take, after the drain, before the host
/// exits without them.
const SHUTDOWN_HOOKS_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the runtime's blocking tasks may run on once the host stopped.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The exit code for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// The log writer's guard: the lines still gathering are written when it is flushed, or
/// dropped at the end. Kept here so a forced exit (a second signal) can flush before it leaves.
static LOG_GUARD: std::sync::Mutex<Option<baton_host::logging::LogGuard>> =
    std::sync::Mutex::new(None);

/// Exits now with `code`, after `last_words` is logged and the log written (waiting at most
/// the log's exit wait: a stderr nobody reads holds back neither the line nor the exit).
fn exit_now(code: i32, last_words: impl FnOnce()) -> ! {
    if let Some(guard) = LOG_GUARD.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        guard.exiting();
    }
    last_words();
    flush_log();
    std::process::exit(code);
}

/// Set once the host has stopped by itself: the stop watch no longer ends the process.
static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes every log line so far and waits until they are written.
fn flush_log() {
    if let Some(guard) = LOG_GUARD.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        guard.flush();
    }
}

/// Installs the log subscriber. Lines are gathered in a buffer that a background thread writes
/// to stderr in batches, so a request never waits for a write system call or wakes a thread
/// (the access log writes one line per request); [`flush_log`] writes what is gathered. Colours
/// only on a terminal (and not with `NO_COLOR`).
fn init_tracing(format: LogFormat) {
    use baton_host::logging::{self, LineFormat};
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = std::env::var("BATON_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("baton: ignoring invalid log filter {filter:?}: {e}");
        EnvFilter::new("info")
    });
    let colours = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let line_format = match format {
        LogFormat::Plain => LineFormat::Plain,
        LogFormat::Json => LineFormat::Json,
    };
    // Coloured lines are the log formatter's to write, the access log's too.
    let started = if colours {
        logging::LogSink::start(Box::new(std::io::stderr()), line_format)
    } else {
        logging::install(Box::new(std::io::stderr()), line_format)
    };
    let (sink, guard) = match started {
        Ok((sink, guard)) => (BoxMakeWriter::new(sink), Some(guard)),
        Err(e) => {
            eprintln!("baton: cannot start the log writer thread ({e}); logging unbuffered");
            (BoxMakeWriter::new(std::io::stderr), None)
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(sink);
    match format {
        // Same lines as the default field formatter, without its cost per field.
        LogFormat::Plain => builder.fmt_fields(logging::PlainFields).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .fmt_fields(logging::JsonSpanFields)
            .init(),
    }
    *LOG_GUARD.lock().unwrap_or_else(|e| e.into_inner()) = guard;
}

/// Raises the soft limit on open files to the hard limit, so a busy host does not run out of
/// file descriptors at the common default of 1,024 when the system allows more.
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return;
    };
    // An unlimited hard limit is not a number the kernel accepts for files; leave it alone.
    let Some(hard) = hard else { return };
    if soft >= hard {
        tracing::info!(limit = soft, "open-files limit (RLIMIT_NOFILE)");
        return;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    ) {
        Ok(()) => tracing::info!(
            from = soft,
            to = hard,
            "raised the open-files limit (RLIMIT_NOFILE) to its hard limit"
        ),
        Err(e) => tracing::warn!(limit = soft, hard, error = %e,
            "cannot raise the open-files limit (RLIMIT_NOFILE)"),
    }
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(listen_tls) = args.listen_tls {
        config.listen_tls = Some(listen_tls);
    }
    if let Some(modules) = &args.modules {
        config.modules.clone_from(modules);
    }
    if let Some(admin) = args.admin {
        config.admin = admin;
    }
    if args.no_watch {
        config.watch = false;
    }
    if let Some(state_dir) = &args.state_dir {
        config.state_dir.clone_from(state_dir);
    }
    if args.no_version_header {
        config.version_header = false;
    }
    if let Some(store) = &args.sessions {
        config.sessions.store.clone_from(store);
    }
    if let Some(token) = &args.admin_token {
        config.admin_token = Some(token.clone());
    }
    config.validate()?;
    // A certificate and key that cannot serve are a configuration error, found before the
    // supervisor binds anything.
    if let Some((cert, key)) = config.tls.files() {
        baton_host::Certificates::load(cert, key)?;
    }
    Ok(config)
}

/// The single-threaded runtime of the command-line client and the supervisor.
fn small_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("baton: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Runs an admin command against a running host.
fn run_client(command: AdminCommand) -> ExitCode {
    let runtime = match small_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    match runtime.block_on(command.run(&mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT, caught from before the host starts (so a signal during the start is a
/// graceful shutdown too, not the default action), and the supervisor's SIGUSR1 (go on) and
/// SIGUSR2 (hand over to a new serving process), which must never end the process either.
#[derive(Debug)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// As the new serving process of an upgrade: waits for the supervisor's word that the old
    /// one has handed its sessions over. `false` if a stop signal came first.
    async fn handed_over(&mut self) -> bool {
        tokio::select! {
            _ = self.usr1.recv() => true,
            _ = self.term.recv() => false,
            _ = self.int.recv() => false,
        }
    }

    /// Resolves at the first SIGTERM or SIGINT (a shutdown) or the supervisor's SIGUSR2 (a
    /// hand-over); after a SIGTERM or SIGINT, a second one exits at once, with status 128 plus
    /// the signal's number (143 for SIGTERM, 130 for SIGINT), without waiting for anything.
    async fn stop(mut self) -> Stop {
        let supervised = std::env::var_os(supervisor::SUPERVISOR_PID_ENV).is_some();
        let name = loop {
            tokio::select! {
                _ = self.term.recv() => break "SIGTERM",
                _ = self.int.recv() => break "SIGINT",
                _ = self.usr2.recv() => {
                    if supervised {
                        return Stop::HandOver;
                    }
                    tracing::warn!("SIGUSR2 ignored: only a supervised host hands over");
                }
            }
        };
        tracing::info!(
            signal = name,
            "graceful shutdown; a second SIGTERM or SIGINT exits at once"
        );
        tokio::spawn(async move {
            let (name, number) = loop {
                tokio::select! {
                    _ = self.term.recv() => {
                        // Under a supervisor a second stop is the supervisor's (it kills this
                        // process); a SIGTERM here may be the kernel's parent-death signal, which
                        // comes once per thread of a supervisor that died.
                        if !supervised {
                            break ("SIGTERM", libc::SIGTERM);
                        }
                    }
                    _ = self.int.recv() => break ("SIGINT", libc::SIGINT),
                }
            };
            let code = 128 + number;
            exit_now(code, || {
                tracing::warn!(
                    signal = name,
                    code,
                    "second signal: exiting now, without waiting for running requests"
                );
            });
        });
        Stop::Shutdown
    }
}

/// From a stop signal on, the host has `limit` to stop; past it (a shutdown hook or an unload
/// that never returns) it logs what happened and exits with status 1, so a stopped host cannot
/// linger, holding its sockets or an upgrade waiting.
fn exit_if_still_stopping_after(limit: std::time::Duration) {
    let watch = std::thread::Builder::new()
        .name("baton-exit".into())
        .spawn(move || {
            std::thread::sleep(limit);
            if STOPPED.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            exit_now(1, || {
                tracing::error!(
                    waited_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                    "still stopping after the shutdown grace, the drain timeout and 10 s more: \
                     a shutdown hook or an unload has not returned; exiting now"
                );
            });
        });
    if let Err(e) = watch {
        tracing::warn!(error = %e, "cannot start the stop watch; a hung shutdown hook will hang the stop");
    }
}

/// Runs the supervisor: it owns the listeners and keeps a serving process (this binary, with
/// the same arguments) running on them.
fn supervise(config: &Config) -> ExitCode {
    let runtime = match small_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let args = std::env::args_os().skip(1).collect();
    let code = match runtime.block_on(supervisor::run(config, args, flush_log)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            tracing::error!(error = %e, "supervisor cannot run");
            ExitCode::FAILURE
        }
    };
    // The relay writes the serving process's lines to stderr on a blocking thread: one stuck
    // in a write to a stderr nobody reads must not keep the supervisor from exiting. Its wait
    // is the log's, which the log's own end then shares.
    let wait = LOG_GUARD
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or(EXIT_WAIT, |guard| guard.exit_wait_left());
    runtime.shutdown_timeout(wait);
    code
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Admin(command) => return run_client(command),
    };
    init_tracing(cli.log_format);
    let code = serve(&args);
    drop(LOG_GUARD.lock().unwrap_or_else(|e| e.into_inner()).take());
    code
}

fn serve(args: &ServeArgs) -> ExitCode {
    raise_open_files_limit();
    let config = match load_config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("baton: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let supervisor = std::env::var(supervisor::SUPERVISOR_PID_ENV).ok();
    match &supervisor {
        Some(pid) => {
            if let Err(e) = supervisor::bind_to_supervisor(pid) {
                eprintln!("baton: {e}");
                return ExitCode::FAILURE;
            }
        }
        None if !args.no_supervisor => return supervise(&config),
        None => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("baton-io")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("baton: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run_host(config));
    STOPPED.store(true, std::sync::atomic::Ordering::SeqCst);
    // The drain is over: a blocking task still running (an unload, a file copy) must not keep
    // the process, and with it an upgrade or a restart, waiting.
    runtime.shutdown_timeout(EXIT_WAIT);
    code
}

/// Serves until a stop signal (or, as the new process of an upgrade, from the hand-over on).
async fn run_host(config: Config) -> ExitCode {
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    // Caught from the start too: SIGHUP's default action would end the process.
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let stop_limit = std::time::Duration::from_millis(config.shutdown_grace_ms)
        .saturating_add(config.drain_timeout())
        .saturating_add(SHUTDOWN_HOOKS_TIME);
    match Host::start(config).await {
        Ok(host) => {
            let certificates = host.certificates();
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    match &certificates {
                        Some(certificates) => certificates.reload_logged("SIGHUP"),
                        None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                    }
                }
            });
            if std::env::var_os(supervisor::UPGRADE_ENV).is_some() {
                // The new serving process of an upgrade: warm now; the old one hands over.
                supervisor::tell_supervisor();
                if host.sessions_in_memory() {
                    if !signals.handed_over().await {
                        return ExitCode::SUCCESS;
                    }
                    match host.take_over_sessions() {
                        Ok(sessions) => tracing::info!(sessions, "sessions taken over"),
                        Err(e) => tracing::error!(error = %e, "sessions not taken over"),
                    }
                }
            }
            host.run(async {
                let stop = signals.stop().await;
                exit_if_still_stopping_after(stop_limit);
                stop
            })
            .await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::Mimalloc;

    /// Sizes across every size class up to 8 KiB, then larger ones.
    fn sizes() -> impl Iterator<Item = usize> {
        (1..=8192).chain([12_345, 65_536 + 3, (1 << 20) + 5, (4 << 20) + 1])
    }

    /// Whether the `len` bytes at `block` all hold `byte`.
    ///
    /// # Safety
    /// `block` points to at least `len` initialized bytes.
    unsafe fn all(block: *const u8, len: usize, byte: u8) -> bool {
        // SAFETY: as the caller promised.
        unsafe { std::slice::from_raw_parts(block, len) }
            .iter()
            .all(|b| *b == byte)
    }

    #[test]
    fn every_block_has_the_alignment_asked_for_and_keeps_its_bytes() {
        let aligns = [1, 2, 4, 8, 16, 32, 64, 128, 4096];
        let mut checked = 0;
        for size in sizes() {
            for align in aligns {
                let layout = Layout::from_size_align(size, align).unwrap();
                let (grown, shrunk) = (size * 3 + 1, size / 2 + 1);
                // SAFETY: non-zero sizes; each block is written within its size, resized and freed
                // with the layout it has.
                unsafe {
                    let zeroed = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} at {align}");
                    assert!(!zeroed.is_null() && all(zeroed, size, 0), "zeroed {size}");
                    Mimalloc.dealloc(zeroed, layout);

                    let block = Mimalloc.alloc(layout);
                    assert!(!block.is_null());
                    assert_eq!(block as usize % align, 0, "{size} at {align}");
                    block.write_bytes(0xa5, size);
                    let block = Mimalloc.realloc(block, layout, grown);
                    assert_eq!(block as usize % align, 0, "{size} grown at {align}");
                    assert!(!block.is_null() && all(block, size, 0xa5), "{size} grown");
                    block.write_bytes(0x5a, grown);
                    let layout = Layout::from_size_align(grown, align).unwrap();
                    let block = Mimalloc.realloc(block, layout, shrunk);
                    assert_eq!(block as usize % align, 0, "{size} shrunk at {align}");
                    assert!(
                        !block.is_null() && all(block, shrunk, 0x5a),
                        "{size} shrunk"
                    );
                    Mimalloc.dealloc(block, Layout::from_size_align(shrunk, align).unwrap());
                }
                checked += 1;
            }
        }
        assert_eq!(checked, sizes().count() * aligns.len());
    }
}
