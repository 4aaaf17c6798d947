fn main() {
    println!("mispctl {}", env!("CARGO_PKG_VERSION"));
}
