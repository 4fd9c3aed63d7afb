//! The SDK on the host: output, the model and the host API wrappers against the fakes.

use super::*;

#[test]
fn host_side_helpers_collect_output_and_fake_the_model() {
    testing::set_model_reply(&["a", "b"]);
    let pieces: Result<Vec<String>, String> =
        ai::generate(&ai::Request::new("x")).unwrap().collect();
    for p in pieces.unwrap() {
        emit(&p);
    }
    assert_eq!(testing::take_output(), ["a", "b"]);
    fail("nope");
    assert_eq!(testing::take_failure().as_deref(), Some("nope"));
}

#[test]
fn host_api_wrappers_run_against_the_fakes() {
    testing::reset();
    testing::set_file("$DOCUMENTS/a.txt", "hello");
    assert_eq!(fs::read_to_string("$DOCUMENTS/a.txt").unwrap(), "hello");
    let err = fs::read_to_string("$DOCUMENTS/missing").unwrap_err();
    assert_eq!(err.code, "not_found");
    fs::write("$APP_DATA/out/r.md", "# r").unwrap();
    assert_eq!(testing::file("$APP_DATA/out/r.md").as_deref(), Some("# r"));
    assert_eq!(
        fs::list("$APP_DATA").unwrap(),
        [fs::Entry {
            name: "out".into(),
            dir: true,
            size: 0
        }]
    );

    testing::set_http_response(
        "https://api.example.com/x",
        http::Response {
            status: 200,
            body: "hi".into(),
            ..Default::default()
        },
    );
    let response = http::fetch(&http::Request::get("https://api.example.com/x")).unwrap();
    assert_eq!((response.status, response.body.as_str()), (200, "hi"));
    let denied = http::fetch(&http::Request::get("https://evil.example.net/")).unwrap_err();
    assert!(denied.is_permission_denied());

    let csv = tools::parse_csv("a,b\n1,\"x, y\"\n").unwrap();
    assert_eq!(csv.headers, ["a", "b"]);
    assert_eq!(csv.rows, [["1", "x, y"]]);
    testing::set_pdf_text("$DOCUMENTS/r.pdf", "report");
    assert_eq!(tools::pdf_text("$DOCUMENTS/r.pdf").unwrap(), "report");

    storage::set("n", &serde_json::json!(3)).unwrap();
    assert_eq!(storage::get("n").unwrap(), Some(serde_json::json!(3)));
    assert_eq!(storage::keys().unwrap(), ["n"]);
    storage::delete("n").unwrap();
    assert_eq!(storage::get("n").unwrap(), None);

    assert_eq!(env::get().unwrap().app_id, "test-app");
    testing::set_error("storage.set", HostError::new("too_large", "full"));
    assert_eq!(
        storage::set("k", &serde_json::json!(1)).unwrap_err().code,
        "too_large"
    );
}
