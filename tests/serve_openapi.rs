//! `schemas/openapi.yaml` stays true: every route the server serves is documented (and
//! nothing else is), and real answers of a running `keyward serve` validate against the
//! document's schemas (boon, JSON Schema 2020-12 as OpenAPI 3.1 uses it).

mod serve_common;
use serde_json::{Value, json};
use serve_common::*;

const DOC_URL: &str = "urn:keyward:openapi";

fn doc() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/openapi.yaml"))
            .expect("schemas/openapi.yaml");
    serde_yaml::from_str(&text).expect("openapi.yaml is YAML")
}

struct Checker {
    schemas: boon::Schemas,
    compiler: boon::Compiler,
}

impl Checker {
    fn new(doc: &Value) -> Checker {
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        compiler.enable_format_assertions();
        compiler.add_resource(DOC_URL, doc.clone()).unwrap();
        Checker {
            schemas: boon::Schemas::new(),
            compiler,
        }
    }
    fn compile(&mut self, schema: &str) -> boon::SchemaIndex {
        let loc = format!("{DOC_URL}#/components/schemas/{schema}");
        self.compiler
            .compile(&loc, &mut self.schemas)
            .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e:?}"))
    }
    fn check(&mut self, schema: &str, v: &Value) {
        let idx = self.compile(schema);
        if let Err(e) = self.schemas.validate(v, idx) {
            panic!("answer does not match {schema}: {e}\n{v:#}");
        }
    }
    fn rejects(&mut self, schema: &str, v: &Value) {
        let idx = self.compile(schema);
        assert!(
            self.schemas.validate(v, idx).is_err(),
            "{schema} accepted {v}"
        );
    }
}

#[test]
fn every_served_route_is_documented_and_nothing_else() {
    let d = doc();
    assert_eq!(d["openapi"], "3.1.0");
    let paths = d["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (p, item) in paths {
        for m in ["get", "post", "patch", "put", "delete"] {
            if item.get(m).is_some() {
                documented.push((m.to_uppercase(), p.clone()));
            }
        }
    }
    let mut served: Vec<(String, String)> = keyward::server::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    documented.sort();
    assert_eq!(served, documented);
    // Every operation documents its error answers as JSON errors.
    for (m, p) in &documented {
        let op = &paths[p][m.to_lowercase()];
        assert!(op["operationId"].is_string(), "{m} {p}");
        if p.starts_with("/v1/") {
            assert!(op["responses"].get("401").is_some(), "{m} {p} lacks 401");
            assert!(op["responses"].get("403").is_some(), "{m} {p} lacks 403");
        }
    }
}

#[tokio::test]
async fn real_answers_match_the_document() {
    let d = doc();
    let mut ck = Checker::new(&d);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("tokens.yaml");
    let write = make_token(&t, "ci-apply", "write");
    let app = make_token(&t, "app", "verify");
    let server = Server::start(dir.path(), &[]);
    let api = Api::new(&server);

    ck.check("Health", &json_of(api.c.get(api.url("/healthz"))).await);
    let caps = json_of(api.get("/v1/capabilities", &write)).await;
    ck.check("Capabilities", &caps);

    let (body, secret) = new_key("k1", "sandbox", Some(10));
    ck.check("NewKey", &body);
    let create = api.post("/v1/keys", &write).header("Idempotency-Key", "a");
    let r = send(create.json(&body)).await;
    assert_eq!(r.status(), 201);
    let k: Value = r.json().await.unwrap();
    ck.check("LiveKey", &k);
    let id = k["id"].as_str().unwrap().to_string();
    ck.check(
        "KeyPage",
        &json_of(api.get("/v1/keys?limit=5", &write)).await,
    );
    let patch = json!({ "purpose": null, "labels": { "a": "b" } });
    ck.check("KeyPatch", &patch);
    let key_path = format!("/v1/keys/{id}");
    let r = send(
        api.patch(&key_path, &write)
            .header("If-Match", "\"1\"")
            .json(&patch),
    )
    .await;
    assert_eq!(r.status(), 200);
    ck.check("LiveKey", &r.json().await.unwrap());

    let verify = |key: Value| json_of(api.post("/v1/verify", &app).json(&json!({ "key": key })));
    let ok = verify(json!(secret)).await;
    assert_eq!(ok["valid"], true);
    ck.check("Verdict", &ok);
    ck.check("Verdict", &verify(json!("nope")).await);

    ck.check("EventPage", &json_of(api.get("/v1/events", &write)).await);
    for (req, status) in [
        (api.c.get(api.url("/v1/keys")), 401),
        (api.get("/v1/keys", &app), 403),
        (api.get("/v1/keys/none", &write), 404),
        (api.patch(&key_path, &write).json(&patch), 428),
        (
            api.patch(&key_path, &write)
                .header("If-Match", "\"1\"")
                .json(&patch),
            412,
        ),
        (api.post("/v1/verify", &app).body("{"), 400),
        (api.post("/v1/verify", &app).json(&json!({ "key": 1 })), 422),
    ] {
        let r = send(req).await;
        assert_eq!(r.status().as_u16(), status);
        ck.check("Error", &r.json().await.unwrap());
    }

    let lock = |holder: &str| {
        json_of(
            api.post("/v1/locks", &write)
                .json(&json!({ "holder": holder, "ttl_seconds": 30 })),
        )
    };
    let lease = lock("me").await;
    ck.check("Lease", &lease);
    let locked = lock("you").await;
    ck.check("Error", &locked);
    assert_eq!(locked["code"], "locked");
    let lease_id = lease["id"].as_str().unwrap();
    let renew = api
        .post(&format!("/v1/locks/{lease_id}/renew"), &write)
        .json(&json!({ "ttl_seconds": 60 }));
    ck.check("Lease", &json_of(renew).await);
    // While the lease is held: a change without it is `locked`, under another one
    // `lease_lost`, under it a change.
    let change = |lease: Option<&str>| {
        let r = api
            .patch(&key_path, &write)
            .header("If-Match", "\"2\"")
            .json(&json!({ "purpose": "leased" }));
        match lease {
            Some(l) => r.header("X-Keyward-Lease", l),
            None => r,
        }
    };
    for (lease, code) in [(None, "locked"), (Some("0123456789abcdef"), "lease_lost")] {
        let r = send(change(lease)).await;
        assert_eq!(r.status().as_u16(), 409);
        let e: Value = r.json().await.unwrap();
        ck.check("Error", &e);
        assert_eq!(e["code"], code, "{e}");
    }
    let r = send(change(Some(lease_id))).await;
    assert_eq!(r.status(), 200);
    ck.check("LiveKey", &r.json().await.unwrap());
    // The schemas are not vacuous.
    ck.rejects("LiveKey", &json!({ "id": "x" }));
    let mut with_hash = k.clone();
    with_hash["secret_hash"] = json!("00");
    ck.rejects("LiveKey", &with_hash);
    ck.rejects("Verdict", &json!({ "valid": true, "reason": "ok" }));
    ck.rejects("Verdict", &json!({ "valid": false, "reason": "maybe" }));
}
