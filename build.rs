// The migrations are embedded at compile time (`embed_migrations!` in
// src/store/mod.rs), which cargo cannot see: without this, a new migration
// directory leaves an incremental build with the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
