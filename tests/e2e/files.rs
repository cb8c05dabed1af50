//! The Files API over HTTP: upload, retrieve, list with pagination, download, delete, and the
//! error envelopes of each misuse.

use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_retrieve_list_download_delete() {
    let sim = default_sim().await;
    let app = serve(&sim, &[]);
    let c = &app.client;
    let content = chat_lines(3);

    let up = c.upload_raw(content.clone().into_bytes(), "../../etc/passwd", Some("batch")).await;
    assert_eq!(up.status, 200, "{}", up.body);
    let f = &up.body;
    let id = f["id"].as_str().unwrap();
    assert!(id.starts_with("file-"));
    assert_eq!(f["object"], "file");
    assert_eq!(f["bytes"], content.len() as i64);
    assert_eq!(f["purpose"], "batch");
    assert_eq!(f["status"], "processed");
    assert_eq!(f["filename"], "passwd", "path components are stripped from file names");
    assert!(f["created_at"].as_i64().unwrap() > 1_700_000_000);
    let keys: Vec<_> = f.as_object().unwrap().keys().cloned().collect();
    for k in ["id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status", "status_details"] {
        assert!(keys.contains(&k.to_string()), "missing {k}");
    }
    assert!(up.headers.contains_key("x-request-id"));

    let got = c.get(&format!("/v1/files/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body, f);
    assert_eq!(c.content(id).await, content);

    // Pagination: four more files, newest first by default.
    let mut ids = vec![id.to_string()];
    for _ in 0..3 {
        ids.push(c.upload(&chat_lines(1)).await);
    }
    let other = c.upload_raw(b"{}".to_vec(), "notes.txt", Some("user_data")).await;
    assert_eq!(other.status, 200);
    let page1 = c.get("/v1/files?purpose=batch&limit=2").await;
    assert_eq!(page1.status, 200);
    assert_eq!(page1.body["object"], "list");
    let data: Vec<&str> = page1.body["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(data, vec![ids[3].as_str(), ids[2].as_str()]);
    assert_eq!(page1.body["has_more"], true);
    assert_eq!(page1.body["first_id"], ids[3]);
    assert_eq!(page1.body["last_id"], ids[2]);
    let page2 = c.get(&format!("/v1/files?purpose=batch&limit=2&after={}", ids[2])).await;
    let data: Vec<&str> = page2.body["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(data, vec![ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(page2.body["has_more"], false);
    // A filter no stored purpose can match (PostgreSQL text cannot even hold a NUL) is an empty page.
    let none = c.get("/v1/files?purpose=batch%00x").await;
    assert_eq!(none.status, 200, "{}", none.body);
    assert_eq!(none.body["data"], serde_json::json!([]));
    let asc = c.get("/v1/files?order=asc").await;
    let all: Vec<&str> = asc.body["data"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0], ids[0]);
    assert_eq!(all[4], other.body["id"].as_str().unwrap());

    let del = c.delete(&format!("/v1/files/{id}")).await;
    assert_eq!(del.status, 200);
    assert_eq!(del.body, serde_json::json!({"id": id, "object": "file", "deleted": true}));
    let e = error_of(&c.get(&format!("/v1/files/{id}")).await, 404);
    assert_eq!(e["type"], "invalid_request_error");
    error_of(&c.get(&format!("/v1/files/{id}/content")).await, 404);
    error_of(&c.delete(&format!("/v1/files/{id}")).await, 404);
    assert!(!app.data_dir().join("files/files").join(id).exists(), "body removed with the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_misuse_gets_clear_errors_and_stores_nothing() {
    let sim = default_sim().await;
    let app = serve(&sim, &["--max-upload-bytes", "1000"]);
    let c = &app.client;

    let e = error_of(&c.upload_raw(b"{}".to_vec(), "a.jsonl", None).await, 400);
    assert_eq!(e["param"], "purpose");
    let e = error_of(&c.upload_raw(b"{}".to_vec(), "a.jsonl", Some("nonsense")).await, 400);
    assert_eq!(e["param"], "purpose");
    let form = reqwest::multipart::Form::new().text("purpose", "batch");
    let resp = c.http.post(c.url("/v1/files")).multipart(form).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["param"], "file");
    let resp = c.http.post(c.url("/v1/files")).json(&serde_json::json!({"purpose": "batch"})).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400, "a JSON body is not an upload");
    let big = c.upload_raw(vec![b'x'; 5000], "big.jsonl", Some("batch")).await;
    let e = error_of(&big, 413);
    assert!(e["message"].as_str().unwrap().contains("1000"));

    let list = c.get("/v1/files").await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 0, "nothing was stored");
    let stored: Vec<_> = std::fs::read_dir(app.data_dir().join("files/tmp")).unwrap().collect();
    assert!(stored.is_empty(), "no temporary body left behind");

    error_of(&c.get("/v1/files/file-doesnotexist").await, 404);
    error_of(&c.get("/v1/files/..%2F..%2Fetc%2Fpasswd/content").await, 404);
    let e = error_of(&c.get("/v1/files?limit=0").await, 400);
    assert_eq!(e["param"], "limit");
    let e = error_of(&c.get("/v1/files?order=sideways").await, 400);
    assert_eq!(e["param"], "order");
    let e = error_of(&c.get("/v1/nope").await, 404);
    assert_eq!(e["code"], "unknown_url");
    assert_eq!(c.get("/health").await.status, 200, "still serving");
}
