fn main() {
    println!("mispd {}", env!("CARGO_PKG_VERSION"));
}
