//! Manifest text (any bytes, read as UTF-8 with invalid sequences replaced) → objects → the
//! full translation → the table. Nothing may panic; the table's lookup must agree with its
//! reference explanation; translating the same snapshot again gives the same diagnostics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translate::{translate, Options, Translator};

fn options() -> [Options; 2] {
    [
        Options::default(),
        Options {
            watch_ingress_without_class: true,
            now: Some(1_750_000_000),
            allowed_response_headers: vec!["X-Frame-Options".into()],
            ..Options::nginx_compat()
        },
    ]
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let snapshot = portcullis_fuzz::snapshot_of(&text, "fuzz");
    for options in options() {
        let fresh = translate(&snapshot, &options);
        portcullis_fuzz::check_table(&fresh.table, &["/", "/api/x"]);
        let mut translator = Translator::new();
        let first = translator.translate(&snapshot, &options);
        let again = translator.translate(&snapshot, &options);
        assert_eq!(first.diagnostics, fresh.diagnostics);
        assert_eq!(again.diagnostics, fresh.diagnostics);
        assert_eq!(again.table.route_count(), fresh.table.route_count());
    }
});
