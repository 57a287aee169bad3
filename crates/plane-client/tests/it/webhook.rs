//! The recorded real deliveries (`tests/fixtures/webhook-*.json`, with the
//! secret that signed them): their signatures verify over the raw bytes,
//! a changed byte does not, and each decodes to the work item it carries.

use std::path::PathBuf;

use plane_client::webhook::{self, WebhookError, WebhookSecret};
use plane_client::{StateRef, same_name};
use serde_json::Value;

fn recorded(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn every_recorded_delivery_verifies_and_decodes() {
    let mut seen = 0;
    for name in [
        "webhook-issue-state-change.json",
        "webhook-issue-two-field-change.json",
    ] {
        let file = recorded(name);
        let secret = WebhookSecret::new(file["webhook"]["secret_key"].as_str().unwrap());
        let item_id = file["trigger"]["body"]["id"].as_str().unwrap();
        for delivery in file["deliveries"].as_array().unwrap() {
            let raw = delivery["raw_body"].as_str().unwrap().as_bytes();
            let signature = delivery["headers"]["X-Plane-Signature"].as_str().unwrap();
            assert_eq!(webhook::sign(&secret, raw), signature, "{name}");
            webhook::verify(&secret, raw, Some(signature)).unwrap();
            let mut tampered = raw.to_vec();
            tampered[10] ^= 1;
            assert_eq!(
                webhook::verify(&secret, &tampered, Some(signature)),
                Err(WebhookError::BadSignature)
            );
            let decoded = webhook::decode(raw).unwrap();
            assert_eq!(
                (decoded.event.as_str(), decoded.action.as_str()),
                ("issue", "updated")
            );
            assert_eq!(
                decoded.project.as_deref(),
                file["trigger"]["body"]["project"].as_str()
            );
            let item = decoded
                .item
                .expect("an issue delivery carries its work item");
            assert_eq!(item.id, item_id);
            let StateRef::Expanded(state) = &item.state else {
                panic!("a delivery's state is expanded");
            };
            assert!(same_name(
                &state.name,
                delivery["body"]["data"]["state"]["name"].as_str().unwrap()
            ));
            assert_eq!(
                decoded.field.as_deref(),
                delivery["body"]["activity"]["field"].as_str()
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 3, "the fixtures hold three deliveries");
}

#[test]
fn what_is_not_a_delivery_is_malformed_and_other_events_carry_no_item() {
    for garbage in [&b""[..], b"{", b"[]", b"{\"event\": 1}", b"\xff\xfe"] {
        assert!(matches!(
            webhook::decode(garbage),
            Err(WebhookError::Malformed(_))
        ));
    }
    let comment = br#"{"event": "issue_comment", "action": "created", "data": {"id": "c1", "project": "p1"}}"#;
    let decoded = webhook::decode(comment).unwrap();
    assert_eq!(
        (decoded.item, decoded.project.as_deref()),
        (None, Some("p1"))
    );
    let deleted = br#"{"event": "issue", "action": "deleted", "data": {"id": "a1"}}"#;
    assert_eq!(webhook::decode(deleted).unwrap().item, None);
}
