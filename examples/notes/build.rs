//! Rebuilds the module when a file is added to (or removed from) `static/`: the embedded assets
//! are listed at compile time.

fn main() {
    println!("cargo:rerun-if-changed=static");
}
