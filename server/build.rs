//! Builds the tiny C helper that gives INCRBYFLOAT/HINCRBYFLOAT Redis's exact
//! `long double` arithmetic and formatting (Rust has no 80-bit float).
fn main() {
    println!("cargo:rerun-if-changed=csrc/ldouble.c");
    cc::Build::new()
        .file("csrc/ldouble.c")
        .opt_level(2)
        .compile("anykv_ldouble");
}
