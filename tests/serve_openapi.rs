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
    fn check(&mut self, schema: &str, v: &Value) {
        let loc = format!("{DOC_URL}#/components/schemas/{schema}");
        let idx = self
            .compiler
            .compile(&loc, &mut self.schemas)
            .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e:?}"));
        if let Err(e) = self.schemas.validate(v, idx) {
            panic!("answer does not match {schema}: {e}\n{v:#}");
        }
    }
    fn rejects(&mut self, schema: &str, v: &Value) {
        let loc = format!("{DOC_URL}#/components/schemas/{schema}");
        let idx = self.compiler.compile(&loc, &mut self.schemas).unwrap();
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
    let c = client();
    let u = |p: &str| format!("{}{p}", server.url);

    let h: Value = c
        .get(u("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ck.check("Health", &h);
    let caps: Value = c
        .get(u("/v1/capabilities"))
        .bearer_auth(&write)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ck.check("Capabilities", &caps);

    let (body, secret) = new_key("k1", "sandbox", Some(10));
    ck.check("NewKey", &body);
    let r = c
        .post(u("/v1/keys"))
        .bearer_auth(&write)
        .header("Idempotency-Key", "a")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let k: Value = r.json().await.unwrap();
    ck.check("LiveKey", &k);
    let id = k["id"].as_str().unwrap().to_string();
    let page: Value = c
        .get(u("/v1/keys?limit=5"))
        .bearer_auth(&write)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ck.check("KeyPage", &page);
    let patch = json!({ "purpose": null, "labels": { "a": "b" } });
    ck.check("KeyPatch", &patch);
    let r = c
        .patch(u(&format!("/v1/keys/{id}")))
        .bearer_auth(&write)
        .header("If-Match", "\"1\"")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    ck.check("LiveKey", &r.json().await.unwrap());

    let ok: Value = c
        .post(u("/v1/verify"))
        .bearer_auth(&app)
        .json(&json!({ "key": secret }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["valid"], true);
    ck.check("Verdict", &ok);
    let bad: Value = c
        .post(u("/v1/verify"))
        .bearer_auth(&app)
        .json(&json!({ "key": "nope" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ck.check("Verdict", &bad);

    let lease: Value = c
        .post(u("/v1/locks"))
        .bearer_auth(&write)
        .json(&json!({ "holder": "me", "ttl_seconds": 30 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ck.check("Lease", &lease);
    let locked: Value = c
        .post(u("/v1/locks"))
        .bearer_auth(&write)
        .json(&json!({ "holder": "you", "ttl_seconds": 30 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ck.check("Error", &locked);
    assert_eq!(locked["code"], "locked");

    let ev: Value = c
        .get(u("/v1/events"))
        .bearer_auth(&write)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ck.check("EventPage", &ev);
    for (req, status) in [
        (c.get(u("/v1/keys")), 401),
        (c.get(u("/v1/keys")).bearer_auth(&app), 403),
        (c.get(u("/v1/keys/none")).bearer_auth(&write), 404),
        (
            c.patch(u(&format!("/v1/keys/{id}")))
                .bearer_auth(&write)
                .json(&patch),
            428,
        ),
        (
            c.patch(u(&format!("/v1/keys/{id}")))
                .bearer_auth(&write)
                .header("If-Match", "\"1\"")
                .json(&patch),
            412,
        ),
        (c.post(u("/v1/verify")).bearer_auth(&app).body("{"), 400),
        (
            c.post(u("/v1/verify"))
                .bearer_auth(&app)
                .json(&json!({ "key": 1 })),
            422,
        ),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        ck.check("Error", &r.json().await.unwrap());
    }
    // The schemas are not vacuous.
    ck.rejects("LiveKey", &json!({ "id": "x" }));
    let mut with_hash = k.clone();
    with_hash["secret_hash"] = json!("00");
    ck.rejects("LiveKey", &with_hash);
    ck.rejects("Verdict", &json!({ "valid": true, "reason": "ok" }));
    ck.rejects("Verdict", &json!({ "valid": false, "reason": "maybe" }));
}
