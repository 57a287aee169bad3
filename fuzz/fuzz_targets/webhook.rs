//! Any bytes as a webhook delivery: the signature check and the decoder
//! answer (accepted, refused, malformed), never panic; a body signed with
//! the secret always verifies, and a decoded item is one a runner can use.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plane_client::webhook::{self, WebhookSecret};

fuzz_target!(|data: &[u8]| {
    let secret = WebhookSecret::new("plane_wh_6103fc42ce5046c8ac068f3354d56fa4");
    // The first line, when it is text, doubles as a signature header.
    let header = data
        .split(|b| *b == b'\n')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok());
    let _ = webhook::verify(&secret, data, header);
    let signature = webhook::sign(&secret, data);
    assert!(webhook::verify(&secret, data, Some(&signature)).is_ok());
    if let Ok(delivery) = webhook::decode(data) {
        if let Some(item) = delivery.item {
            let hint = runtime::encode_hint(&item);
            assert_eq!(runtime::decode_hint(&hint).map(|i| i.id), Some(item.id));
        }
    }
});
