// Package authz is the auth server's decision core: how a request is
// decided, as a pure function of plain facts.
//
// It holds the shared small types (Permission, the decision Code of
// DESIGN.md's error table), policy compilation (Compile turns a RecordSpec
// into a Policy and its key versions), the restriction matchers (IP
// allowlist, domain patterns) and the decision itself (Decider.Decide): the
// entry the index found for the presented key, the client address and origin
// host already worked out, the permission the request needs, a Limiter and
// the time go in; a Decision comes out, saying allowed or the error code,
// the key's identity and its rate-limit state. Nothing here renders an
// answer: the front-ends (HTTP verify and forward-auth, Envoy ext_authz over
// gRPC, in package webhookserver) render the same Decision, each its own way.
//
// Import rules: authz imports only the standard library and the
// Kubernetes-free leaves internal/apikey and internal/quota. It imports no Kubernetes package
// (k8s.io/..., sigs.k8s.io/...), directly or indirectly (deps_test.go keeps
// it so), none of the other auth server packages (the index, the rate
// limiters, the front-ends import authz, never the other way round), and not
// internal/record, whose types carry Kubernetes ones: the index converts a
// record into a RecordSpec.
package authz
