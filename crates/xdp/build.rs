//! Compiles `bpf/relay.bpf.c` with clang into `$OUT_DIR/relay.bpf.o`, embedded by `lib.rs`.
//! Without clang the crate still builds: the object is empty and `FastPath::load` says the
//! relay was built without it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("relay.bpf.o");
    let src = "bpf/relay.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // Debian keeps <asm/types.h> under the multiarch directory, which clang's BPF target does
    // not search by default.
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", src, "-o"])
        .arg(&obj)
        .output();
    let why = match output {
        Ok(o) if o.status.success() => String::new(),
        Ok(o) => format!(
            "{clang} could not compile {src}: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ),
        Err(e) => format!("cannot run {clang} ({e}); install clang and libbpf-dev"),
    };
    if !why.is_empty() {
        println!("cargo:warning=no XDP fast path in this build: {why}");
        std::fs::write(&obj, b"").expect("write an empty object");
    }
    std::fs::write(out.join("relay.bpf.why"), why).expect("write the reason");
}
