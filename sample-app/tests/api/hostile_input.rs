//! Hostile input gets a 4xx with `{"error", "detail"}`: never a 5xx, a panic or a hang.

use crate::helpers::{assert_error, spawn_app};

#[actix_web::test]
async fn malformed_or_mistyped_order_json_is_a_400_naming_the_problem() {
    let app = spawn_app().await;
    for (body, mentions) in [
        ("{\"item\": \"widget\", \"quantity\": ", "EOF"),
        ("not json at all", "expected"),
        ("{\"item\": 42, \"quantity\": 1}", "invalid type"),
        (
            "{\"item\": \"widget\", \"quantity\": \"three\"}",
            "invalid type",
        ),
        ("{\"item\": \"widget\"}", "quantity"),
        (
            "{\"item\": \"widget\", \"quantity\": 1, \"price\": 3}",
            "price",
        ),
        (
            "{\"item\": \"widget\", \"quantity\": 1e400}",
            "out of range",
        ),
        ("[]", "expected struct"),
    ] {
        let response = app.post_json("/api/orders", body).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 400, "{body} → {text}");
        assert!(
            text.contains("invalid_json") && text.contains(mentions),
            "{body} → {text}"
        );
    }
}

#[actix_web::test]
async fn out_of_range_orders_are_a_422_naming_the_field() {
    let app = spawn_app().await;
    let long_item = "x".repeat(65);
    for (body, field) in [
        (
            "{\"item\": \"widget\", \"quantity\": 0}".to_owned(),
            "quantity",
        ),
        (
            "{\"item\": \"widget\", \"quantity\": -5}".to_owned(),
            "quantity",
        ),
        (
            "{\"item\": \"widget\", \"quantity\": 101}".to_owned(),
            "quantity",
        ),
        (
            "{\"item\": \"widget\", \"quantity\": 99999999999999}".to_owned(),
            "quantity",
        ),
        ("{\"item\": \"\", \"quantity\": 1}".to_owned(), "item"),
        ("{\"item\": \"   \", \"quantity\": 1}".to_owned(), "item"),
        (
            format!("{{\"item\": \"{long_item}\", \"quantity\": 1}}"),
            "item",
        ),
    ] {
        let response = app.post_json("/api/orders", &body).await;
        let text = response.text().await.unwrap();
        assert!(
            text.contains("invalid_order") && text.contains(field),
            "{body} → {text}"
        );
    }
    let response = app
        .post_json("/api/orders", "{\"item\": \"widget\", \"quantity\": 0}")
        .await;
    assert_eq!(assert_error(response, 422).await, "invalid_order");
}

#[actix_web::test]
async fn a_multi_megabyte_body_is_refused_with_413() {
    let app = spawn_app().await;
    let huge = format!(
        "{{\"item\": \"{}\", \"quantity\": 1}}",
        "x".repeat(4 * 1024 * 1024)
    );
    let response = app.post_json("/api/orders", &huge).await;
    assert_eq!(assert_error(response, 413).await, "payload_too_large");
}

#[actix_web::test]
async fn a_body_that_is_not_json_by_content_type_is_a_415() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/orders"))
        .header("content-type", "text/plain")
        .body("{\"item\": \"widget\", \"quantity\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(response, 415).await, "unsupported_media_type");
}

#[actix_web::test]
async fn an_unknown_error_type_is_a_400_listing_the_valid_ones() {
    let app = spawn_app().await;
    let response = app.get("/error?type=teapot").await;
    assert_eq!(assert_error(response, 400).await, "invalid_error_type");
}

#[actix_web::test]
async fn profile_seconds_must_be_a_small_positive_whole_number() {
    let app = spawn_app().await;
    for seconds in ["-1", "0", "61", "99999999999999999999999", "abc", "1.5", ""] {
        let response = app
            .get(&format!("/debug/pprof/profile?seconds={seconds}"))
            .await;
        assert_eq!(
            assert_error(response, 400).await,
            "invalid_seconds",
            "seconds={seconds}"
        );
    }
}

#[actix_web::test]
async fn burst_length_must_be_bounded() {
    let app = spawn_app().await;
    for ms in ["0", "2001", "-3", "lots"] {
        let response = app.get(&format!("/generate-load?ms={ms}")).await;
        assert_eq!(assert_error(response, 400).await, "invalid_ms", "ms={ms}");
    }
}

#[actix_web::test]
async fn order_ids_that_are_not_numbers_are_a_400_and_unknown_ids_a_404() {
    let app = spawn_app().await;
    assert_eq!(
        assert_error(app.get("/api/orders/abc").await, 400).await,
        "invalid_order_id"
    );
    assert_eq!(
        assert_error(app.get("/api/orders/-1").await, 400).await,
        "invalid_order_id"
    );
    assert_eq!(
        assert_error(app.get("/api/orders/424242").await, 404).await,
        "order_not_found"
    );
}

#[actix_web::test]
async fn a_very_long_unknown_path_is_a_404_with_a_short_detail() {
    let app = spawn_app().await;
    let path = format!("/{}", "a".repeat(16 * 1024));
    let response = app.get(&path).await;
    assert_eq!(response.status(), 404);
    let text = response.text().await.unwrap();
    assert!(
        text.len() < 400,
        "the error body echoes the whole path: {} bytes",
        text.len()
    );
    assert!(text.contains("not_found"));
}

#[actix_web::test]
async fn a_method_the_route_does_not_have_is_a_405_with_a_json_body() {
    let app = spawn_app().await;
    let response = app
        .client
        .delete(app.url("/api/orders/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(response, 405).await, "method_not_allowed");
    let response = app.client.get(app.url("/api/orders")).send().await.unwrap();
    assert_eq!(assert_error(response, 405).await, "method_not_allowed");
}

#[actix_web::test]
async fn external_without_a_downstream_is_a_clear_502() {
    let app = spawn_app().await;
    let response = app.get("/external").await;
    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("downstream_not_configured") && text.contains("SAMPLE_APP_DOWNSTREAM_URL"),
        "{text}"
    );
}
