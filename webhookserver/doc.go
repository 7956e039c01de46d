// Package webhookserver is the meterr auth server: the data plane that
// verifies API keys.
//
// It watches the key-record Secrets in one namespace (package record), keeps an
// in-memory index from each key's SHA-256 hash to the compiled policy of its
// MeterrAPIKey (package index), and answers two kinds of HTTP request:
//
//   - GET /v1/auth/verify: "is this key valid, and what may it do?"
//   - /v1/auth/check[/<original path>]: forward authentication for proxies
//     (Envoy ext_authz, Envoy Gateway, Istio, Traefik, Caddy, ingress-nginx,
//     NGINX auth_request), which may also require a permission.
//
// A decision is, in this order: authenticate the key (401), apply the key's
// restrictions (environment, client IP, domain: 403, not counted against the
// quota), count the request against the key's hourly limit (429), check the
// required permission (403, counted). The hot path is one SHA-256, one map
// lookup and the limiter; nothing on it talks to the Kubernetes API, and
// nothing ever logs, prints or labels a plaintext key or a key hash.
//
// The decision itself, and the rules above, are package authz's
// (authz.Decider.Decide): this package is the front-end around it. Every
// front-end converts its own request into one Request (request.go: the
// credential, the connection's peer and what it claims, the headers, the
// permission required): HTTP verify and forward-auth in server.go, Envoy's
// ext_authz Check in grpc.go. Server.decide (answer.go) is the one path
// for all of them: it looks the key up, works out the client address (by
// the one trust rule, Server.clientAddr) and origin host only when the key's
// restrictions need them, asks authz for the Decision, counts and logs it,
// and returns one Answer: status, error code, headers to add and to remove,
// body, rate-limit state. The front-end renders the Answer: as the HTTP
// answer (server.go; nginx.go for NGINX's auth_request) or as an Envoy
// CheckResponse (grpc.go). Everything an answer shows is rendered here: the
// error bodies, the header values and the 200 answer's fragments, the
// latter once per policy class (see classText).
//
// Around the handler, each job is a package of its own: records watches
// the key-record Secrets and loads them into the index (and drops a removed
// key's counter); ratelimit counts requests per key, in memory or shared in
// Redis; sweeper enforces the API port's connection timeouts with one sweep
// instead of a timer per deadline (--deadline-sweep); keepalive serves an
// HTTP/1.1 keep-alive connection after net/http has answered its first
// request, without net/http's per-request work (--keepalive-takeover);
// gctune sizes GOGC to the live heap (--gc-tuning). The TLS certificate is
// read again when its files change, checked at each handshake (tls.go).
//
// Run wires them and starts the whole server against a cluster; NewServer and
// index.New build the same HTTP handler without Kubernetes, for tests and
// development.
//
// Import rules: webhookserver imports its subpackages, never the other way
// round; index imports authz, authz none of them; ratelimit, records,
// sweeper, keepalive and gctune import none of the others. Nothing here imports
// the controllers.
package webhookserver

// The auth server reads key records, and only key records, in the records
// namespace. The Role generated from this marker is namespaced.
// +kubebuilder:rbac:groups="",namespace=meterr-system,resources=secrets,verbs=get;list;watch
