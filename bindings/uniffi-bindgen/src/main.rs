//! `uniffi-bindgen`: generates the Kotlin and Swift sources from the compiled
//! `distsync_bindings` library (see `bindings/generate.sh`).

fn main() {
    uniffi::uniffi_bindgen_main()
}
