//! `tlskeys`: loads and unloads a module many times in one process, the way the host does
//! (private copy, `dlopen`, instantiate and handle on a thread that is joined, `dlclose`), and
//! prints how many pthread keys are left after each batch. Shows whether a module leaks a key
//! per load and where the per-process limit lies.

use std::path::PathBuf;

use anyhow::Context;
use baton_host::loader::{
    MemoryIo, Module, ModuleRequest, PTHREAD_KEYS_MAX, mapped_regions, pthread_keys_in_use,
};

fn free_keys() -> String {
    pthread_keys_in_use().map_or_else(
        || "unknown".to_owned(),
        |n| (PTHREAD_KEYS_MAX - n).to_string(),
    )
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let module: PathBuf = args
        .next()
        .context("usage: tlskeys MODULE.so [LOADS]")?
        .into();
    let loads: usize = args.next().map_or(Ok(1100), |n| n.parse())?;
    let target = args.next().unwrap_or_else(|| "/".to_owned());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let dir = tempfile::tempdir()?;
    println!("loads,free_pthread_keys,still_mapped,reclaimed_by_last_close");
    println!("0,{},0,0", free_keys());
    for i in 1..=loads {
        let copy = dir.path().join(format!("copy-{i}.so"));
        std::fs::copy(&module, &copy)?;
        let module = std::sync::Arc::new(Module::open(&copy, &copy)?);
        let worker = {
            let module = std::sync::Arc::clone(&module);
            let (path, query) = (path.to_owned(), query.to_owned());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let (path, query) = (path.as_str(), query.as_str());
                let instance = module.instantiate(b"{}").map_err(anyhow::Error::msg)?;
                let response = instance.handle(
                    &ModuleRequest {
                        path,
                        query,
                        ..ModuleRequest::default()
                    },
                    &mut MemoryIo::default(),
                );
                let _ = response;
                Ok(())
            })
        };
        worker.join().expect("worker thread")?;
        let module = std::sync::Arc::into_inner(module).context("module still shared")?;
        let reclaimed = module.close().map_err(anyhow::Error::msg)?;
        let mapped = mapped_regions(&copy)?.len();
        std::fs::remove_file(&copy)?;
        if i % 50 == 0 || mapped > 0 || i == loads {
            println!("{i},{},{mapped},{reclaimed}", free_keys());
        }
    }
    Ok(())
}
