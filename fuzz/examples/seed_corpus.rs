//! Writes the seed corpus (`fuzz/corpus/<target>/`): every route's request as the client
//! encodes it, answers of each shape to every route, the shipped scenarios, and signed and
//! broken JWTs. Run from the repository root after adding a route or a scenario:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus`.

use std::path::Path;

use fleetsim_core::api::{ALL_ERROR_KINDS, ApiError, Credential, Request};
use fleetsim_core::codec::{self, ResponseContext};
use fleetsim_core::crypto::{PrivateKey, jwt};
use fleetsim_fuzz::{every_call, request_input, response_input};

fn main() -> std::io::Result<()> {
    let root = Path::new("fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)
    };
    for (i, call) in every_call().into_iter().enumerate() {
        let label = codec::route_label(&call);
        let request = Request {
            credential: Credential::Basic {
                user: "VstsAgent".into(),
                password: "pat".into(),
            },
            call,
        };
        let wire = codec::encode_request(&request, "/DefaultCollection");
        write(
            "codec_request",
            &format!("{i:02}-{label}"),
            &request_input(&wire),
        )?;
        for (shape, body) in [
            ("object", &b"{}"[..]),
            ("list", br#"{"count":0,"value":[]}"#),
        ] {
            write(
                "codec_response",
                &format!("{i:02}-{label}-{shape}"),
                &response_input(i, 200, body),
            )?;
        }
    }
    let ctx = ResponseContext::default();
    for kind in ALL_ERROR_KINDS {
        let wire = codec::encode_error(&ApiError::new(*kind, "seed"), &ctx);
        let name = format!("error-{}", wire.status);
        write(
            "codec_response",
            &format!("{name}-{kind:?}"),
            &response_input(0, wire.status, &wire.body),
        )?;
    }
    for entry in std::fs::read_dir("scenarios")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            write("scenario", &name, &std::fs::read(&path)?)?;
        }
    }
    let key = PrivateKey::generate(2048).map_err(std::io::Error::other)?;
    let claims = jwt::Claims {
        iss: "client-1".into(),
        sub: "client-1".into(),
        aud: "http://127.0.0.1/_apis/oauth2/token".into(),
        nbf: 1_700_000_000,
        exp: 1_700_000_300,
        jti: "6f1e2a3b-0000-4000-8000-000000000001".into(),
    };
    let signed = jwt::sign(&key, &claims);
    write("jwt", "signed", signed.as_bytes())?;
    // The signed token's claims and signature under the header {"alg":"none","typ":"JWT"}.
    let rest = signed.split_once('.').map_or("", |(_, rest)| rest);
    write(
        "jwt",
        "alg-none",
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{rest}").as_bytes(),
    )?;
    write("jwt", "empty-parts", b"..")?;
    Ok(())
}
