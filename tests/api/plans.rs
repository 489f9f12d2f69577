//! What a plan sells: its `models` (globs over the name asked for and `provider/model` where it
//! is routed) on every endpoint and in `/v1/models`, and its `max_keys` in the admin API.

use crate::endpoints::with_anthropic;
use crate::on_both_backends;
use crate::support::{Backend, TestApp, next_request_event};
use omi::config::{Config, PlanConfig};
use omi::customers::EmailAddress;
use omi::domain::allowed_models::AllowedModels;
use serde_json::{Value, json};

/// `pro` sells gpt-4o-mini, the small embeddings and Claude Haiku on the `anthropic` provider;
/// `open` sets no `models`: every routed model.
fn with_plans(config: &mut Config) {
    with_anthropic(config);
    let models = ["gpt-4o-mini", "text-embedding-3-small", "anthropic/claude-haiku-4-5"];
    let models = AllowedModels::try_from(models.map(String::from).to_vec()).expect("valid patterns");
    config.plans = vec![
        PlanConfig { name: "pro".into(), monthly_price_usd: 29.0, models: Some(models), ..PlanConfig::default() },
        PlanConfig { name: "open".into(), monthly_price_usd: 99.0, ..PlanConfig::default() },
    ];
}

async fn key_on(app: &TestApp, email: &str, plan: &str) -> String {
    let email = EmailAddress::parse(email).expect("email");
    let (key, _) = omi::keys::issue(&app.state().store, &email, plan, None, None).await.expect("issue");
    key.expose().to_string()
}

async fn post(app: &TestApp, path: &str, key: &str, body: Value) -> reqwest::Response {
    let request = app.http.post(format!("{}/v1{path}", app.base)).bearer_auth(key).json(&body);
    let request = request.header("x-provider-key", crate::endpoints::ANTHROPIC_KEY);
    request.send().await.expect("send")
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

fn messages(model: &str) -> Value {
    json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]})
}

/// On each endpoint, streamed or not, a model outside the plan is a 403 `model_not_allowed`
/// booked as such, and the upstream receives nothing; the models inside it answer. A pattern
/// admits the name as asked or `provider/model` as routed: `claude-haiku-4-5` is in
/// `anthropic/claude-haiku-4-5`, while `openai/gpt-4o-mini` is not `gpt-4o-mini` as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outside_the_plan_is_refused_on_every_endpoint_before_anything_goes_upstream() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, with_plans).await else { return };
    let key = app.create_key("ada@example.com").await;
    let mut rx = app.state().events.subscribe("test", 64);
    let refused = [
        ("/chat/completions", chat("gpt-4o")),
        (
            "/chat/completions",
            json!({"stream": true, "model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        ("/chat/completions", chat("openai/gpt-4o-mini")),
        ("/chat/completions", chat("anthropic/claude-sonnet-4-5")),
        ("/embeddings", json!({"model": "text-embedding-3-large", "input": "Hi"})),
        ("/completions", json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once"})),
        ("/responses", json!({"model": "gpt-4o", "input": "Hi"})),
        ("/responses", json!({"model": "gpt-4o", "input": "Hi", "stream": true})),
        ("/messages", messages("anthropic/claude-sonnet-4-5")),
        ("/messages", messages("claude-opus-4-1")),
    ];
    for (path, body) in refused {
        let response = post(&app, path, &key, body.clone()).await;
        assert_eq!(response.status(), 403, "{path} {body}");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], "model_not_allowed", "{path} {body}");
        assert_eq!(error["error"]["type"], "permission_error");
        let model = body["model"].as_str().expect("model");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("`{model}`")) && message.contains("/v1/models"), "{message}");
        let event = next_request_event(&mut rx).await;
        assert_eq!((event.status, event.error_code), (403, Some("model_not_allowed")), "{path}");
    }
    assert!(app.mock.upstream.seen().is_empty(), "nothing refused went upstream");

    let allowed = [
        ("/chat/completions", chat("gpt-4o-mini")),
        ("/chat/completions", chat("claude-haiku-4-5")),
        ("/embeddings", json!({"model": "text-embedding-3-small", "input": "Hi"})),
        ("/completions", json!({"model": "gpt-4o-mini", "prompt": "Once"})),
        ("/responses", json!({"model": "gpt-4o-mini", "input": "Hi"})),
        ("/messages", messages("claude-haiku-4-5")),
        ("/messages", messages("anthropic/claude-haiku-4-5")),
    ];
    for (path, body) in allowed {
        let response = post(&app, path, &key, body.clone()).await;
        assert_eq!(response.status(), 200, "{path} {body}");
        response.bytes().await.expect("body");
    }
    assert_eq!(app.mock.upstream.seen().len(), 7, "each allowed request went upstream once");

    // A plan without `models` sells every routed model.
    let open = key_on(&app, "bob@example.com", "open").await;
    assert_eq!(post(&app, "/chat/completions", &open, chat("gpt-4o")).await.status(), 200);
}

async fn listed(app: &TestApp, key: &str) -> Vec<(String, String)> {
    let response = app.http.get(format!("{}/v1/models", app.base)).bearer_auth(key).send().await.expect("send");
    assert_eq!(response.status(), 200);
    let list: Value = response.json().await.expect("json");
    let data = list["data"].as_array().expect("data");
    data.iter().map(|m| (m["id"].as_str().expect("id").into(), m["owned_by"].as_str().expect("owner").into())).collect()
}

/// `/v1/models` lists what the key may call: by its plan's `models`, judged as a request for
/// each listed model would be; a plan without them lists every listed model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_list_shows_only_what_the_keys_plan_allows() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        with_plans(c);
        let starter = AllowedModels::try_from(vec!["anthropic/*".to_string(), "gpt-*".to_string()]).expect("valid");
        c.plans.push(PlanConfig { name: "starter".into(), models: Some(starter), ..PlanConfig::default() });
    })
    .await
    else {
        return;
    };
    let pair = |id: &str, owner: &str| (id.to_string(), owner.to_string());
    let every = vec![
        pair("gpt-4o-mini", "openai"),
        pair("text-embedding-3-small", "openai"),
        pair("claude-haiku-4-5", "anthropic"),
    ];
    let open = key_on(&app, "bob@example.com", "open").await;
    assert_eq!(listed(&app, &open).await, every);
    let unconfigured = key_on(&app, "cy@example.com", "legacy").await;
    assert_eq!(listed(&app, &unconfigured).await, every, "a plan not in the configuration has no model list");
    let pro = app.create_key("ada@example.com").await;
    assert_eq!(listed(&app, &pro).await, every, "pro's three models");
    let starter = key_on(&app, "dee@example.com", "starter").await;
    assert_eq!(
        listed(&app, &starter).await,
        vec![pair("gpt-4o-mini", "openai"), pair("claude-haiku-4-5", "anthropic")]
    );
}

on_both_backends!(max_keys_is_refused_by_the_admin_api_and_the_dashboard_until_a_key_is_revoked);

/// `pro` allows two keys a customer: the third is a 409 `max_keys_reached` in OpenAI's error
/// shape (and a 409 page on the dashboard), also when five are asked at once (exactly two are
/// made); revoked keys do not count, and neither do another customer's keys or another plan's.
async fn max_keys_is_refused_by_the_admin_api_and_the_dashboard_until_a_key_is_revoked(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        with_plans(c);
        c.plans[0].max_keys = Some(2);
    })
    .await
    else {
        return;
    };
    let create = |email: &str, plan: &str| {
        app.admin(reqwest::Method::POST, "/admin/api/keys").json(&json!({"email": email, "plan": plan})).send()
    };
    let answers = futures_util::future::join_all((0..5).map(|_| create("ada@example.com", "pro"))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.as_ref().expect("send").status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 409, 409, 409], "racing creations are counted one after the other");
    let refused = create("ada@example.com", "pro").await.expect("send");
    assert_eq!(refused.status(), 409);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "max_keys_reached", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ada@example.com") && message.contains("`pro`") && message.contains("max_keys"),
        "{message}"
    );
    let dashboard = crate::dashboard::Admin::sign_in(&app.base).await;
    let csrf = dashboard.csrf().await;
    let form = [("csrf", csrf.as_str()), ("email", "ada@example.com"), ("plan", "pro")];
    let page = dashboard.post("/admin/keys", &form).await;
    assert_eq!(page.status(), 409, "the dashboard's form too");
    assert!(page.text().await.expect("page").contains("(its max_keys); revoke one first"));

    assert_eq!(create("ada@example.com", "open").await.expect("send").status(), 201, "another plan");
    assert_eq!(create("bob@example.com", "pro").await.expect("send").status(), 201, "another customer");
    let store = &app.state().store;
    let on_pro = |keys: &[omi::store::KeyListing]| {
        keys.iter().filter(|k| k.email == "ada@example.com" && k.plan == "pro").map(|k| k.id).collect::<Vec<_>>()
    };
    let held = on_pro(&store.list_keys().await.expect("list"));
    assert_eq!(held.len(), 2, "nothing refused was stored");
    let revoke = app.admin(reqwest::Method::DELETE, &format!("/admin/api/keys/{}", held[0])).send().await;
    assert_eq!(revoke.expect("send").status(), 200);
    assert_eq!(create("ada@example.com", "pro").await.expect("send").status(), 201, "a revoked key frees its place");
    assert_eq!(on_pro(&store.list_keys().await.expect("list")).len(), 3, "two live and the revoked one");
}
