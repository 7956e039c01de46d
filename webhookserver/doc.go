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
// (authz.Decider.Decide). Around it, a request goes one way through four
// rooms, each a package with a depguard rule of its own (.golangci.yml):
//
//   - frontend/httpapi (HTTP verify and forward-auth, NGINX mode chosen by
//     ?mode=nginx) and frontend/extauthz (Envoy's ext_authz Check over
//     gRPC) convert their protocol's request into one request.Request;
//   - request holds the facts of a request and the rules that read them:
//     the credential, the one trust rule for the client address
//     (request.Trust), the origin host, the route rules and the original
//     request a forward-auth request describes;
//   - answer is the one path: answer.Core.Decide looks the key up, decides,
//     counts and observes the decision (metrics, decision log) once for
//     every front-end and returns one answer.Answer (status, error code,
//     headers to add and remove, body, rate-limit state), whose parts every
//     rendering uses (answer.WriteHTTP for HTTP; frontend/nginx for NGINX's
//     auth_request; extauthz.Response for Envoy);
//   - webhookserver itself, the process: NewServer, Run (a list of
//     components started and drained in one loop), options, TLS, the gRPC
//     server, the process's metrics, and Explain for whois.
//
// No front-end reads another's private fields: they meet only at
// request.Request and answer.Answer.
//
// Around the handler, each job is a package of its own: records watches
// the key-record Secrets and loads them into the index (and drops a removed
// key's counter); ratelimit counts requests per key, in memory or shared in
// Redis; sweeper enforces the API port's connection timeouts with one sweep
// instead of a timer per deadline (--deadline-sweep); keepalive serves an
// HTTP/1.1 keep-alive connection after net/http has answered its first
// request, without net/http's per-request work (--keepalive-takeover);
// gctune sizes GOGC to the live heap (--gc-tuning); exepages gives back,
// once the records are loaded, the pages of the executable that start-up
// touched (--release-startup-pages). The TLS certificate is
// read again when its files change, checked at each handshake (tls.go).
//
// Run wires them and starts the whole server against a cluster; NewServer and
// index.New build the same front-ends without Kubernetes, for tests and
// development.
//
// Import rules: webhookserver imports its subpackages, never the other way
// round; the front-ends import answer and request (httpapi also nginx, the
// rendering it chooses), answer imports request, request and index import
// authz, authz none of them; ratelimit, records, sweeper, keepalive and
// gctune import none of the others. Nothing here imports the controllers.
package webhookserver

// The auth server reads key records, and only key records, in the records
// namespace. The Role generated from this marker is namespaced.
// +kubebuilder:rbac:groups="",namespace=meterr-system,resources=secrets,verbs=get;list;watch
