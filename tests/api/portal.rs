//! The customer portal: passwordless sign-in (the same answer for every address, links
//! stored hashed, single use, expiring), its own strict session cookie with CSRF, sign-in
//! requests limited per address and per client, and the admin's view of the last sign-in.

use crate::on_both_backends;
use crate::support::{ADMIN_KEY, Backend, TestApp};
use omi::store::{PortalLink, Store};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use sha2::{Digest, Sha256};

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

fn post_form(url: String, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    client().post(url).header("content-type", "application/x-www-form-urlencoded").body(body)
}

async fn request_link(app: &TestApp, email: &str) -> reqwest::Response {
    post_form(format!("{}/portal/login", app.base), &[("email", email)]).send().await.expect("post")
}

/// The newest sign-in link's token queued for `email` (no mailer in these tests: the email
/// waits in the outbox, which the test reads).
async fn queued_token(store: &Store, email: &str) -> Option<String> {
    let sql = "SELECT key_plaintext FROM email_outbox WHERE kind = 'portal_link' AND to_email = $1
               ORDER BY created_at DESC LIMIT 1";
    match store {
        Store::Sqlite(p) => sqlx::query_scalar(sql).bind(email).fetch_optional(p).await.expect("outbox"),
        Store::Postgres(p) => sqlx::query_scalar(sql).bind(email).fetch_optional(p).await.expect("outbox"),
    }
}

async fn stored_tokens(store: &Store, token_hash: &[u8]) -> i64 {
    let sql = "SELECT COUNT(*) FROM portal_login_tokens WHERE token_hash = $1";
    match store {
        Store::Sqlite(p) => sqlx::query_scalar(sql).bind(token_hash).fetch_one(p).await.expect("count"),
        Store::Postgres(p) => sqlx::query_scalar(sql).bind(token_hash).fetch_one(p).await.expect("count"),
    }
}

/// `GET /portal/login/{token}`: the emailed link, opened.
async fn redeem(app: &TestApp, token: &str) -> reqwest::Response {
    client().get(format!("{}/portal/login/{token}", app.base)).send().await.expect("redeem")
}

/// A signed-in customer's browser, in effect.
pub(crate) struct Customer {
    base: String,
    cookie: String,
}

impl Customer {
    /// Requests a link for `email`, reads it from the outbox and signs in with it.
    pub(crate) async fn sign_in(app: &TestApp, email: &str) -> Customer {
        assert_eq!(request_link(app, email).await.status(), StatusCode::OK);
        let token = queued_token(&app.state().store, email).await.expect("a queued link");
        let response = redeem(app, &token).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[LOCATION], "/portal");
        let set = response.headers()[SET_COOKIE].to_str().expect("cookie").to_string();
        for attribute in ["Path=/portal", "HttpOnly", "SameSite=Strict", "Max-Age=604800"] {
            assert!(set.contains(attribute), "{attribute} in {set}");
        }
        let cookie = set.split(';').next().expect("pair").to_string();
        assert!(cookie.starts_with("omi_portal="), "{cookie}");
        Customer { base: app.base.clone(), cookie }
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        client().get(format!("{}{path}", self.base)).header("cookie", &self.cookie).send().await.expect("get")
    }

    pub(crate) async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.text().await.expect("text")
    }

    pub(crate) async fn csrf(&self) -> String {
        let html = self.page("/portal").await;
        let (_, rest) = html.split_once("name=\"csrf\" value=\"").expect("a CSRF field");
        rest.split('"').next().expect("value").to_string()
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        post_form(format!("{}{path}", self.base), form).header("cookie", &self.cookie).send().await.expect("post")
    }
}

on_both_backends!(
    a_link_signs_in_once_and_the_answer_never_tells_who_is_a_customer,
    an_expired_link_is_refused,
    sign_in_requests_are_limited_per_address_and_per_client,
    each_customer_sees_only_their_own_account,
    customers_create_and_revoke_their_own_keys_only,
    customers_rotate_their_own_working_keys_only,
    a_rotation_from_the_portal_is_emailed_with_a_link_to_the_portal,
    billing_shows_the_customers_own_purchases_and_payments,
);

async fn a_link_signs_in_once_and_the_answer_never_tells_who_is_a_customer(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let store = &app.state().store;
    app.create_key("ada@example.com").await;

    let known = request_link(&app, "Ada@Example.com").await;
    assert_eq!(known.status(), StatusCode::OK);
    assert!(known.headers()[CONTENT_SECURITY_POLICY].to_str().expect("csp").contains("default-src 'self'"));
    let known = known.text().await.expect("text");
    let unknown = request_link(&app, "nobody@example.com").await;
    assert_eq!(unknown.status(), StatusCode::OK);
    assert_eq!(unknown.text().await.expect("text"), known, "the same page for a stranger");
    assert!(known.contains("if that address has an account, a link is on its way"), "{known}");
    assert_eq!(queued_token(store, "nobody@example.com").await, None, "no email to a stranger");

    // The link is stored by its hash only.
    let token = queued_token(store, "ada@example.com").await.expect("a queued link");
    assert_eq!(stored_tokens(store, token.as_bytes()).await, 0, "no plaintext token in the table");
    assert_eq!(stored_tokens(store, &Sha256::digest(token.as_bytes())).await, 1);

    let response = redeem(&app, &token).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE].to_str().expect("cookie").split(';').next().expect("pair").to_string();
    assert_eq!(redeem(&app, &token).await.status(), StatusCode::GONE, "single use");
    assert_eq!(stored_tokens(store, &Sha256::digest(token.as_bytes())).await, 0, "used up");
    let customer = Customer { base: app.base.clone(), cookie: cookie.clone() };
    assert!(customer.page("/portal").await.contains("ada@example.com"));

    // The portal's cookie is not the admin's, nor the other way round.
    let admin = client().get(format!("{}/admin", app.base)).header("cookie", &cookie).send().await.expect("get");
    assert_eq!(admin.headers()[LOCATION], "/admin/login");
    let admin_login =
        post_form(format!("{}/admin/login", app.base), &[("key", ADMIN_KEY)]).send().await.expect("sign in");
    let admin_cookie = admin_login.headers()[SET_COOKIE].to_str().expect("cookie").split(';').next().expect("pair");
    let portal = client().get(format!("{}/portal", app.base)).header("cookie", admin_cookie).send().await.expect("get");
    assert_eq!(portal.headers()[LOCATION], "/portal/login");

    // The admin's customer page shows the sign-in.
    let id = store.customer_id_by_email("ada@example.com").await.expect("lookup").expect("customer");
    let detail = store.customer_detail(id).await.expect("detail");
    assert!(detail.portal_signed_in_at.is_some());
    let page = client()
        .get(format!("{}/admin/customers/{id}", app.base))
        .header("cookie", admin_cookie)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(page.contains("Last portal sign-in") && !page.contains("<dd>never</dd>"), "{page}");

    // Signing out takes the session's CSRF token, and ends the session for good.
    let wrong = customer.post("/portal/logout", &[("csrf", "forged")]).await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let csrf = customer.csrf().await;
    let out = customer.post("/portal/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE].to_str().expect("cookie").contains("Max-Age=0"));
    assert_eq!(customer.get("/portal").await.headers()[LOCATION], "/portal/login");
}

async fn an_expired_link_is_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let store = &app.state().store;
    app.create_key("ada@example.com").await;
    let customer_id = store.customer_id_by_email("ada@example.com").await.expect("lookup").expect("customer");
    let token = "ab".repeat(32);
    let token_hash = Sha256::digest(token.as_bytes());
    let link = PortalLink {
        customer_id,
        to_email: "ada@example.com",
        token_hash: &token_hash,
        token: &token,
        expires_at: chrono::Utc::now() - chrono::Duration::seconds(1),
    };
    store.queue_portal_link(&link).await.expect("queue");
    let response = redeem(&app, &token).await;
    assert_eq!(response.status(), StatusCode::GONE);
    assert!(response.headers().get(SET_COOKIE).is_none());
    assert!(response.text().await.expect("text").contains("used or has expired"));
    assert_eq!(stored_tokens(store, &token_hash).await, 0, "an expired link is gone once tried");
    assert_eq!(store.customer_detail(customer_id).await.expect("detail").portal_signed_in_at, None);
    let malformed = redeem(&app, "not-a-token").await;
    assert_eq!(malformed.status(), StatusCode::GONE);

    // A session past its seven days is no session.
    let fresh = PortalLink { expires_at: chrono::Utc::now() + chrono::Duration::minutes(15), ..link };
    store.queue_portal_link(&fresh).await.expect("queue");
    let cookie = "cd".repeat(32);
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    let redeemed =
        store.redeem_portal_link(&token_hash, &Sha256::digest(cookie.as_bytes()), past).await.expect("redeem");
    assert_eq!(redeemed, omi::store::Redeemed::SignedIn(customer_id));
    let stale = Customer { base: app.base.clone(), cookie: format!("omi_portal={cookie}") };
    assert_eq!(stale.get("/portal").await.headers()[LOCATION], "/portal/login");
}

/// Every portal page, as a stranger: sent to sign in, whatever the path; and no page holds an
/// inline script or style (the CSP would refuse them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_portal_page_needs_a_session() {
    const PAGES: &[&str] =
        &["/portal", "/portal/keys", "/portal/billing", "/portal/quickstart", "/portal/usage.csv", "/portal/nope"];
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else { return };
    for path in PAGES {
        let response = client().get(format!("{}{path}", app.base)).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[LOCATION], "/portal/login", "{path}");
    }
    let id = uuid::Uuid::now_v7();
    let posts = ["/portal/keys".to_string(), format!("/portal/keys/{id}/revoke"), format!("/portal/keys/{id}/rotate")];
    for path in posts.into_iter().chain(["/portal/logout".to_string()]) {
        let response = post_form(format!("{}{path}", app.base), &[("csrf", "x")]).send().await.expect("post");
        assert_eq!(response.headers()[LOCATION], "/portal/login", "{path}");
    }
    app.create_key("ada@example.com").await;
    let ada = Customer::sign_in(&app, "ada@example.com").await;
    for path in PAGES.iter().filter(|p| !p.ends_with(".csv") && !p.ends_with("nope")) {
        let html = ada.page(path).await;
        assert!(!html.contains("<script") && !html.contains("style=") && !html.contains("<style"), "{path}");
    }
    assert_eq!(ada.get("/portal/nope").await.status(), StatusCode::NOT_FOUND);
}

async fn sign_in_requests_are_limited_per_address_and_per_client(backend: Backend) {
    use omi::portal::session::{ATTEMPTS_PER_ADDRESS, ATTEMPTS_PER_CLIENT};
    let Some(app) = TestApp::spawn(backend).await else { return };
    app.create_key("ada@example.com").await;
    for _ in 0..ATTEMPTS_PER_ADDRESS {
        assert_eq!(request_link(&app, "ada@example.com").await.status(), StatusCode::OK);
    }
    // The address's budget is spent whether or not it has an account: no tell either way.
    let refused = request_link(&app, "ada@example.com").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.text().await.expect("text").contains("Too many sign-in requests"));
    let mut sent = ATTEMPTS_PER_ADDRESS + 1;
    while sent < ATTEMPTS_PER_CLIENT {
        let other = format!("stranger{sent}@example.com");
        assert_eq!(request_link(&app, &other).await.status(), StatusCode::OK, "request {sent}");
        sent += 1;
    }
    let refused = request_link(&app, "someone-new@example.com").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "this client's budget is spent");
}

async fn each_customer_sees_only_their_own_account(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let (ada_key, bob_key) = (app.create_key("ada@example.com").await, app.create_key("bob@example.com").await);
    for _ in 0..2 {
        assert_eq!(app.chat(&ada_key, crate::support::chat_body(false)).send().await.expect("send").status(), 200);
    }
    assert_eq!(app.chat(&bob_key, crate::support::chat_body(false)).send().await.expect("send").status(), 200);
    crate::accountant::wait_for_records(&app.state().store, 3).await;
    let (ada, bob) =
        (Customer::sign_in(&app, "ada@example.com").await, Customer::sign_in(&app, "bob@example.com").await);
    let (ada_page, bob_page) = (ada.page("/portal").await, bob.page("/portal").await);
    assert!(ada_page.contains("ada@example.com") && !ada_page.contains("bob@example.com"));
    assert!(bob_page.contains("bob@example.com") && !bob_page.contains("ada@example.com"));
    assert!(ada_page.contains("<dt>Requests</dt><dd>2</dd>"), "{ada_page}");
    assert!(bob_page.contains("<dt>Requests</dt><dd>1</dd>"), "{bob_page}");
    assert!(ada_page.contains("<td>gpt-4o-mini</td><td class=\"num\">2</td>"), "by model: {ada_page}");
    assert!(ada_page.contains("<svg class=\"chart-svg\""), "the daily chart");

    // The CSV has this month's one day with Ada's two requests; an earlier month has none.
    let month = omi::agents::accountant::report::current_month();
    let csv = ada.page(&format!("/portal/usage.csv?month={month}")).await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(csv.starts_with("day,requests,"), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with(&format!("{today},2,"))), "{csv}");
    assert!(ada.page("/portal?month=2020-01").await.contains("<dt>Requests</dt><dd>0</dd>"));
    assert_eq!(ada.get("/portal?month=January").await.status(), StatusCode::BAD_REQUEST);
}

/// The key listed on a keys page with `prefix`, by the id in its revoke form.
fn key_id_on_page(html: &str, prefix: &str) -> String {
    let (before, _) = html.split_once(&format!("aria-label=\"Revoke {prefix}\"")).expect("the key's revoke button");
    let (_, id) = before.rsplit_once("/portal/keys/").expect("its form");
    id.split('/').next().expect("id").to_string()
}

async fn customers_create_and_revoke_their_own_keys_only(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.plans = vec![omi::config::PlanConfig { name: "pro".into(), max_keys: Some(2), ..Default::default() }];
    })
    .await
    else {
        return;
    };
    let store = &app.state().store;
    let (ada_key, bob_key) = (app.create_key("ada@example.com").await, app.create_key("bob@example.com").await);
    let (ada, bob) =
        (Customer::sign_in(&app, "ada@example.com").await, Customer::sign_in(&app, "bob@example.com").await);
    let bob_listing = store.search_keys(&omi::store::KeySearch::default(), 10, 0).await.expect("keys");
    let bob_id = bob_listing.iter().find(|k| k.email == "bob@example.com").expect("bob's key").id.to_string();

    // Ada sees her key only; Bob's key id is "no such key" to her, and Bob's key keeps working.
    let page = ada.page("/portal/keys").await;
    assert!(page.contains(&ada_key[..12]) && !page.contains(&bob_key[..12]), "{page}");
    assert!(!page.contains(&bob_id));
    let csrf = ada.csrf().await;
    let other = ada.post(&format!("/portal/keys/{bob_id}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let missing = ada.post(&format!("/portal/keys/{}/revoke", uuid::Uuid::now_v7()), &[("csrf", &csrf)]).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(other.text().await.expect("text"), missing.text().await.expect("text"), "no tell");
    assert_eq!(app.chat(&bob_key, crate::support::chat_body(false)).send().await.expect("send").status(), 200);

    // The quickstart names her key by its prefix, never Bob's.
    let quickstart = ada.page("/portal/quickstart").await;
    assert!(quickstart.contains(&format!("{}…", &ada_key[..12])) && !quickstart.contains(&bob_key[..12]));
    assert!(quickstart.contains("/v1/chat/completions") && quickstart.contains("new OpenAI("), "{quickstart}");

    // Forms without the session's CSRF token change nothing.
    let forged = ada.post("/portal/keys", &[("csrf", "forged"), ("name", "x")]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let bob_csrf = bob.csrf().await;
    let crossed = ada.post("/portal/keys", &[("csrf", &bob_csrf), ("name", "x")]).await;
    assert_eq!(crossed.status(), StatusCode::FORBIDDEN, "another session's token");

    // A new key is shown once; the plan's max_keys (2) holds.
    let created = ada.post("/portal/keys", &[("csrf", &csrf), ("name", "ci <runner>")]).await;
    assert_eq!(created.status(), StatusCode::OK);
    let html = created.text().await.expect("text");
    let (_, rest) = html.split_once("<code id=\"new-key\">").expect("the new key");
    let new_key = rest.split('<').next().expect("key").to_string();
    assert!(new_key.starts_with("omi_"), "{new_key}");
    assert_eq!(app.chat(&new_key, crate::support::chat_body(false)).send().await.expect("send").status(), 200);
    let third = ada.post("/portal/keys", &[("csrf", &csrf), ("name", "three")]).await;
    assert_eq!(third.status(), StatusCode::CONFLICT);
    let page = ada.page("/portal/keys").await;
    assert!(page.contains("ci &#60;runner&#62;") && !page.contains(&new_key), "named, escaped, never shown again");

    // Revoking her own new key: refused at once by the gateway.
    let new_id = key_id_on_page(&page, &new_key[..new_key.len().min(12)]);
    let revoked = ada.post(&format!("/portal/keys/{new_id}/revoke"), &[("csrf", &csrf)]).await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    let refused = app.chat(&new_key, crate::support::chat_body(false)).send().await.expect("send").status();
    assert!(refused == StatusCode::UNAUTHORIZED || refused == StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(app.chat(&ada_key, crate::support::chat_body(false)).send().await.expect("send").status(), 200);
}

/// The key shown once on a "key created" page.
fn shown_key(html: &str) -> String {
    let (_, rest) = html.split_once("<code id=\"new-key\">").expect("the new key");
    rest.split('<').next().expect("key").to_string()
}

async fn customers_rotate_their_own_working_keys_only(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let store = &app.state().store;
    let (ada_key, bob_key) = (app.create_key("ada@example.com").await, app.create_key("bob@example.com").await);
    let (ada, bob) =
        (Customer::sign_in(&app, "ada@example.com").await, Customer::sign_in(&app, "bob@example.com").await);
    let works = |key: String| {
        let request = app.chat(&key, crate::support::chat_body(false));
        async move { request.send().await.expect("send").status() == StatusCode::OK }
    };
    let (ada_id, bob_id) = (
        key_id_on_page(&ada.page("/portal/keys").await, &ada_key[..12]),
        key_id_on_page(&bob.page("/portal/keys").await, &bob_key[..12]),
    );
    assert!(ada.page("/portal/keys").await.contains(&format!("aria-label=\"Rotate {}\"", &ada_key[..12])));
    let csrf = ada.csrf().await;

    // Another customer's key id, an unknown one: the same 404; Bob's key is untouched.
    let other = ada.post(&format!("/portal/keys/{bob_id}/rotate"), &[("csrf", &csrf), ("grace_secs", "0")]).await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let unknown = uuid::Uuid::now_v7();
    let missing = ada.post(&format!("/portal/keys/{unknown}/rotate"), &[("csrf", &csrf), ("grace_secs", "0")]).await;
    assert_eq!(other.text().await.expect("text"), missing.text().await.expect("text"), "no tell");
    assert!(works(bob_key.clone()).await);

    // Without the session's CSRF token, or with a grace past the limit, nothing changes.
    let bob_csrf = bob.csrf().await;
    for forged in ["forged", bob_csrf.as_str()] {
        let refused =
            ada.post(&format!("/portal/keys/{ada_id}/rotate"), &[("csrf", forged), ("grace_secs", "0")]).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    let too_long = (omi::keys::MAX_GRACE_SECS + 1).to_string();
    for grace in [too_long.as_str(), "-1", "soon"] {
        let refused =
            ada.post(&format!("/portal/keys/{ada_id}/rotate"), &[("csrf", &csrf), ("grace_secs", grace)]).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{grace}");
    }
    assert!(works(ada_key.clone()).await);
    assert!(crate::key_api::outbox_replacements(store).await.is_empty(), "nothing rotated yet");

    // Grace 0: the new key is shown once and works, the old one is refused at once; the
    // customer is emailed about the old key, by its prefix.
    let rotated = ada.post(&format!("/portal/keys/{ada_id}/rotate"), &[("csrf", &csrf), ("grace_secs", "0")]).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let html = rotated.text().await.expect("text");
    assert!(
        html.contains(&format!("It replaces <code>{}…</code>, which stops working now.", &ada_key[..12])),
        "{html}"
    );
    let new_key = shown_key(&html);
    assert!(new_key.starts_with("omi_") && new_key != ada_key, "{new_key}");
    assert!(works(new_key.clone()).await, "the new key works");
    let refused = app.chat(&ada_key, crate::support::chat_body(false)).send().await.expect("send").status();
    assert_eq!(refused, StatusCode::UNAUTHORIZED, "the old key is refused after grace 0");
    assert_eq!(crate::key_api::outbox_replacements(store).await, vec![ada_key[..12].to_string()]);
    let page = ada.page("/portal/keys").await;
    assert!(!page.contains(&new_key), "never shown again");
    assert!(page.contains("<td>expired</td>"), "the replaced key is listed as expired: {page}");
    assert!(!page.contains(&format!("aria-label=\"Rotate {}\"", &ada_key[..12])), "the old key is no longer rotatable");

    // Only a working key rotates: the key just replaced is refused.
    let again = ada.post(&format!("/portal/keys/{ada_id}/rotate"), &[("csrf", &csrf), ("grace_secs", "0")]).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);

    // A grace of an hour: both keys work until then.
    let new_id = key_id_on_page(&page, &new_key[..12]);
    let graced = ada.post(&format!("/portal/keys/{new_id}/rotate"), &[("csrf", &csrf), ("grace_secs", "3600")]).await;
    assert_eq!(graced.status(), StatusCode::OK);
    let html = graced.text().await.expect("text");
    assert!(html.contains(&format!("It replaces <code>{}…</code>, which stops working at ", &new_key[..12])), "{html}");
    let newest = shown_key(&html);
    assert!(works(newest).await && works(new_key).await, "the old key works through its grace");
}

/// The quickstart's Anthropic SDK snippet: with a provider of kind `anthropic` only, naming the
/// gateway's root (the SDK adds `/v1/messages`), the provider's model and the key's prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_shows_the_anthropic_sdk_only_with_an_anthropic_provider() {
    let Some(plain) = TestApp::spawn(Backend::Sqlite).await else { return };
    let key = plain.create_key("ada@example.com").await;
    let page = Customer::sign_in(&plain, "ada@example.com").await.page("/portal/quickstart").await;
    assert!(page.contains("new OpenAI(") && !page.contains("anthropic"), "{page}");

    let Some(app) = TestApp::spawn_with(Backend::Sqlite, crate::endpoints::with_anthropic).await else { return };
    let key_on_anthropic = app.create_key("ada@example.com").await;
    let page = Customer::sign_in(&app, "ada@example.com").await.page("/portal/quickstart").await;
    assert!(page.contains("pip install anthropic"), "{page}");
    let expected = format!(
        "client = anthropic.Anthropic(base_url=&#34;{}&#34;, api_key=&#34;{}…&#34;)",
        app.state().config.public_base(),
        &key_on_anthropic[..12]
    );
    assert!(page.contains(&expected), "{expected} in {page}");
    assert!(page.contains("model=&#34;claude-haiku-4-5&#34;"), "{page}");
    assert!(!page.contains(&key[..12]));
}

/// A fake Postmark that keeps what it is sent: `POST /email` (the API) and `GET /sent` (every
/// email so far, as Postmark received it), where the browser test reads its sign-in link.
async fn postmark_sink() -> String {
    use axum::routing::{get, post};
    use std::sync::{Arc, Mutex};
    let sent: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let (keep, show) = (sent.clone(), sent);
    let app = axum::Router::new()
        .route(
            "/email",
            post(move |axum::Json(email): axum::Json<serde_json::Value>| async move {
                keep.lock().unwrap().push(email);
                axum::Json(serde_json::json!({"ErrorCode": 0, "Message": "OK", "MessageID": "e2e"}))
            }),
        )
        .route("/sent", get(move || async move { axum::Json(show.lock().unwrap().clone()) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    url
}

/// The first email the fake Postmark at `postmark` received with this subject (polling the
/// sink, not the gateway: its per-IP limit is not spent).
async fn sent_email(postmark: &str, subject: &str) -> serde_json::Value {
    for _ in 0..100 {
        let sent: Vec<serde_json::Value> =
            reqwest::get(format!("{postmark}/sent")).await.expect("sink").json().await.expect("json");
        if let Some(email) = sent.into_iter().find(|m| m["Subject"] == subject) {
            return email;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no email {subject:?} reached the fake Postmark");
}

/// With `public_url` set, the outbox sends the portal's rotation email as the API's, and it
/// links to `{public_url}/portal`.
async fn a_rotation_from_the_portal_is_emailed_with_a_link_to_the_portal(backend: Backend) {
    let postmark = postmark_sink().await;
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.postmark_server_token = Some(secrecy::SecretString::from("pm-server-token"));
        c.postmark_api_url = Some(postmark.clone());
        c.email_from = Some("keys@omi.example".into());
        c.public_url = Some("http://omi.example/".into());
    })
    .await
    else {
        return;
    };
    let key = app.create_key("ada@example.com").await;
    assert_eq!(request_link(&app, "ada@example.com").await.status(), StatusCode::OK);
    let link = sent_email(&postmark, "Your OMI sign-in link").await;
    let text = link["TextBody"].as_str().expect("text");
    let (_, token) = text.split_once("http://omi.example/portal/login/").expect("the link, at the public URL");
    let response = redeem(&app, &token[..64]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE].to_str().expect("cookie").split(';').next().expect("pair").to_string();
    let ada = Customer { base: app.base.clone(), cookie };

    let id = key_id_on_page(&ada.page("/portal/keys").await, &key[..12]);
    let csrf = ada.csrf().await;
    let rotated = ada.post(&format!("/portal/keys/{id}/rotate"), &[("csrf", &csrf), ("grace_secs", "86400")]).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let new_key = shown_key(&rotated.text().await.expect("text"));
    let email = sent_email(&postmark, "Your OMI API key was replaced").await;
    assert_eq!(email["To"], "ada@example.com");
    let text = email["TextBody"].as_str().expect("text");
    assert!(
        text.contains(&format!("{}… was replaced", &key[..12])) && text.contains(&format!("\n{new_key}\n")),
        "{text}"
    );
    assert!(text.contains("http://omi.example/portal\n"), "{text}");
    assert!(email["HtmlBody"].as_str().expect("html").contains("<a href=\"http://omi.example/portal\">"));
}

/// The e2e script: a link requested and read from the fake Postmark, usage that matches the
/// requests made, a key created and revoked (then refused), the customer's key rotated with
/// grace 0 (the new key works, the old one is refused, the rotation is emailed), a phone, sign-out, a used link
/// refused; screenshots. Any request to another host, CSP violation or page error fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_signs_in_to_the_portal() {
    let e2e = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    if let Err(why) = crate::dashboard::browser_prerequisites(&e2e) {
        crate::support::service_missing("the headless browser", &why);
        return;
    }
    let postmark = postmark_sink().await;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.postmark_server_token = Some(secrecy::SecretString::from("pm-server-token"));
        c.postmark_api_url = Some(postmark.clone());
        c.email_from = Some("keys@omi.example".into());
    })
    .await
    else {
        return;
    };
    let key = app.create_key("grace@example.com").await;
    let screenshots =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("e2e-screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshot folder");
    let run = tokio::process::Command::new("node")
        .arg(e2e.join("portal.mjs"))
        .env("OMI_BASE_URL", &app.base)
        .env("OMI_POSTMARK_URL", &postmark)
        .env("OMI_CUSTOMER_EMAIL", "grace@example.com")
        .env("OMI_CUSTOMER_KEY", &key)
        .env("OMI_SCREENSHOTS", &screenshots)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(180), run)
        .await
        .expect("the browser run ends")
        .expect("node runs");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "browser run failed:\n{report}");
    println!("{report}screenshots in {}", screenshots.display());
    assert!(screenshots.join("portal-usage.png").exists() && screenshots.join("portal-key-rotated.png").exists());
}

async fn billing_shows_the_customers_own_purchases_and_payments(backend: Backend) {
    use crate::billing::{ORDER, SECRET, deliver, order_created};
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.lemonsqueezy_signing_secret = Some(secrecy::SecretString::from(SECRET));
    })
    .await
    else {
        return;
    };
    assert_eq!(deliver(&app, &order_created(ORDER, 1)).await.status(), 200);
    app.create_key("bob@example.com").await;
    let (ada, bob) =
        (Customer::sign_in(&app, "ada@example.com").await, Customer::sign_in(&app, "bob@example.com").await);
    let page = ada.page("/portal/billing").await;
    assert!(page.contains(&format!("<td>{ORDER}</td>")) && page.contains("29.00 USD"), "{page}");
    assert!(!page.contains("Manage or cancel"), "no subscription event yet: no links");
    // A subscription event carries Lemon Squeezy's links: the billing page links to them; one
    // that is not https (it would become a link in the page) is dropped.
    let mut event = crate::billing::subscription("subscription_created", ORDER, "active", 1, None);
    event["data"]["attributes"]["urls"] = serde_json::json!({
        "customer_portal": "https://example.lemonsqueezy.com/billing?expires=1&signature=s",
        "update_payment_method": "javascript:alert(1)",
    });
    assert_eq!(deliver(&app, &event).await.status(), 200);
    let page = ada.page("/portal/billing").await;
    assert!(page.contains("href=\"https://example.lemonsqueezy.com/billing?expires=1&#38;signature=s\""), "{page}");
    assert!(
        page.contains("Manage or cancel") && !page.contains("javascript:") && !page.contains("Update payment method"),
        "{page}"
    );
    let page = bob.page("/portal/billing").await;
    assert!(page.contains("No purchases on record.") && !page.contains("29.00 USD"), "{page}");
    assert!(!page.contains("lemonsqueezy.com/billing"), "never another customer's links");
}
