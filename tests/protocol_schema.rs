//! `probes/protocol.schema.json` is generated from the `leakhound-protocol` types, and the
//! Python probe's tests validate what a real probe sends against it
//! (probes/python/tests/test_protocol_schema.py). This test fails when the file is stale;
//! `LEAKHOUND_BLESS=1 cargo test --test protocol_schema` rewrites it.

use std::path::Path;

#[test]
fn the_protocol_schema_file_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/protocol.schema.json");
    let mut fresh = serde_json::to_string_pretty(&leakhound_protocol::json_schema()).unwrap();
    fresh.push('\n');
    if std::env::var_os("LEAKHOUND_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == fresh,
        "{} is stale: the leakhound-protocol types changed; run \
         LEAKHOUND_BLESS=1 cargo test --test protocol_schema and commit the file \
         (then the Python probe's test checks it still matches what the probe sends)",
        path.display()
    );
}

#[test]
fn the_schema_closes_every_object_and_names_each_message() {
    let schema = leakhound_protocol::json_schema().to_value();
    for name in ["Hello", "SnapshotReply", "FinalReport", "ProbeData", "Task"] {
        let def = &schema["$defs"][name];
        assert_eq!(def["additionalProperties"], false, "{name}: {def}");
        assert!(def["properties"].is_object(), "{name}: {def}");
    }
    assert_eq!(schema["oneOf"].as_array().map(Vec::len), Some(3));
}
