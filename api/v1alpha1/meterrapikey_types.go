package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Permission is what a key may do: read, write or admin (admin grants everything).
// +kubebuilder:validation:Enum=read;write;admin
type Permission string

// The permissions a key can hold.
const (
	PermissionRead  Permission = "read"
	PermissionWrite Permission = "write"
	PermissionAdmin Permission = "admin"
)

// Environment is the environment a key belongs to. Production keys start with
// mtr_live_, staging and development keys with mtr_test_.
// +kubebuilder:validation:Enum=development;staging;production
type Environment string

// The environments.
const (
	EnvironmentDevelopment Environment = "development"
	EnvironmentStaging     Environment = "staging"
	EnvironmentProduction  Environment = "production"
)

// Tier is a rate limit tier: standard (1,000 requests per hour), pro (10,000)
// or enterprise (unlimited).
// +kubebuilder:validation:Enum=standard;pro;enterprise
type Tier string

// The rate limit tiers.
const (
	TierStandard   Tier = "standard"
	TierPro        Tier = "pro"
	TierEnterprise Tier = "enterprise"
)

// RequestsPerHour is the tier's limit: the one place the tiers' numbers are
// written, read by the controller when it writes a key record and by
// anything that explains one. 0 is unlimited (enterprise), and also the
// answer for an unknown tier, which the CRD's enum never lets through.
func (t Tier) RequestsPerHour() int64 {
	switch t {
	case TierStandard:
		return 1000
	case TierPro:
		return 10000
	}
	return 0
}

// IPOrCIDR is an IPv4 or IPv6 address or CIDR block in canonical form
// ("10.0.0.0/8", not "10.0.0.1/8"; "2001:db8::/32", not "2001:0db8::/32").
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:XValidation:rule="isCIDR(self) ? string(cidr(self).masked()) == self : (isIP(self) && string(ip(self)) == self)",message="must be an IP address or CIDR in canonical form, e.g. 10.0.0.0/8 or 2001:db8::/32 (host bits of a CIDR must be zero)"
type IPOrCIDR string

// Domain is checked by a CEL rule rather than a pattern, so a refusal says why
// in words instead of printing the regular expression.

// Domain is a lower-case ASCII host name (punycode for internationalised
// names) without scheme, port, path or trailing dot. A leading "*." matches
// subdomains at any depth but not the bare domain.
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:XValidation:rule="self.matches('^([*][.])?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?[.])*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')",message="must be a lower-case ASCII host name (punycode for internationalised names), optionally starting with '*.', without scheme, port, path or trailing dot, e.g. api.example.com or *.example.com"
type Domain string

// MeterrAPIKeySpec declares an API key: what it may do, where it may be used,
// how fast, and how it rotates.
type MeterrAPIKeySpec struct {
	// Permissions the key grants: a non-empty set of read, write and admin.
	// admin grants every permission.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	// +listType=set
	Permissions []Permission `json:"permissions"`

	// Environment of the key: development, staging or production. Immutable,
	// because the key's prefix depends on it (mtr_live_ for production,
	// mtr_test_ otherwise). An auth server started with --environment refuses
	// keys of any other environment.
	// +kubebuilder:default=production
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="environment is immutable: the key's prefix depends on it; create a new MeterrAPIKey instead"
	// +optional
	Environment Environment `json:"environment,omitempty"`

	// RateLimit sets the key's hourly request limit. Counted per MeterrAPIKey
	// in fixed windows aligned to the UTC clock hour; rotation does not reset it.
	// +kubebuilder:default={}
	// +optional
	RateLimit RateLimit `json:"rateLimit,omitempty"`

	// Restrictions limit where the key may be used from.
	// +optional
	Restrictions *Restrictions `json:"restrictions,omitempty"`

	// Rotation controls how often the key is replaced and how long the
	// previous key keeps working.
	// +kubebuilder:default={}
	// +optional
	Rotation Rotation `json:"rotation,omitempty"`

	// ExpiresAt (RFC 3339) ends the key for good: after it every version is
	// refused with expired_api_key and the key no longer rotates.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// Disabled refuses every version of the key at once (invalid_api_key) and
	// pauses rotation. Clearing it restores them.
	// +optional
	Disabled bool `json:"disabled,omitempty"`

	// SecretName is the workload Secret, in the same namespace, that receives
	// the plaintext key under the data keys "api-key" and "METERR_API_KEY".
	// Defaults to the resource's name. A Secret of that name that this key
	// does not own is never overwritten. Changing it issues a fresh key into
	// the new Secret and deletes the old one; the previous key stays valid for
	// the overlap.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="must be a valid Secret name: lower-case alphanumerics, '-' and '.', starting and ending with an alphanumeric (an RFC 1123 subdomain)"
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// SecretTemplate adds labels and annotations to the workload Secret. The
	// operator's own keys (the auth.meterr.ai/ prefix and
	// app.kubernetes.io/managed-by) are refused here. Labels and annotations
	// that other tools add to the Secret are left alone; entries removed from
	// the template are removed from the Secret.
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`
}

// RateLimit is a key's hourly request limit.
type RateLimit struct {
	// Tier: standard (1,000 requests per hour), pro (10,000) or enterprise
	// (unlimited).
	// +kubebuilder:default=standard
	// +optional
	Tier Tier `json:"tier,omitempty"`

	// RequestsPerHour overrides the tier's number (at least 1).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	// +optional
	RequestsPerHour *int64 `json:"requestsPerHour,omitempty"`
}

// Restrictions limit where a key may be used from. An empty list restricts nothing.
type Restrictions struct {
	// IPAllowlist: the client IP must fall in one of these addresses or CIDRs.
	// The client IP is the TCP peer, or, behind a trusted proxy
	// (--trusted-proxies), the right-most untrusted X-Forwarded-For address;
	// over gRPC (Envoy ext_authz), the address the gateway states, only when
	// the gateway is trusted (--trusted-proxies, or a client certificate
	// verified against --grpc-client-ca). A request refused here does not
	// count against the rate limit.
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +optional
	IPAllowlist []IPOrCIDR `json:"ipAllowlist,omitempty"`

	// Domains: the host of the request's Origin (else Referer) header must
	// match one of these. "*.example.com" matches a.example.com and
	// a.b.example.com but not example.com. A request with neither header is refused.
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Domains []Domain `json:"domains,omitempty"`
}

// Rotation's rules: both durations are defaulted before the rules run; has()
// guards them anyway. They skip a duration the pattern already refused, so a
// typo gets one error, not a CEL conversion error besides. "Shorter than the
// period" is reported on overlap, the field a user usually has to change.

// Rotation controls how often a key is replaced.
// +kubebuilder:validation:XValidation:rule="!has(self.period) || !has(self.overlap) || !self.period.matches('^([0-9]+([.][0-9]+)?(h|m|s|ms|us|ns))+$') || !self.overlap.matches('^([0-9]+([.][0-9]+)?(h|m|s|ms|us|ns))+$') || duration(self.overlap) < duration(self.period)",message="rotation.overlap must be shorter than rotation.period",messageExpression="'rotation.overlap (' + self.overlap + ') must be shorter than rotation.period (' + self.period + ')'",fieldPath=".overlap"
type Rotation struct {
	// Period between automatic rotations (Go duration, at least 1h).
	// Default 2160h (90 days).
	// +kubebuilder:default="2160h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(h|m|s|ms|us|ns))+$') || duration(self) >= duration('1h')",message="rotation.period must be at least 1h",messageExpression="'rotation.period must be at least 1h, not ' + self"
	// +optional
	Period *metav1.Duration `json:"period,omitempty"`

	// Overlap is how long the previous key keeps working after a new one is
	// delivered: long enough for mounted Secrets to refresh and for pods that
	// read the key from an environment variable to restart. "0s" makes a
	// rotation an emergency revocation. Must be shorter than the period.
	// Default 168h (7 days).
	// +kubebuilder:default="168h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+$`
	// +optional
	Overlap *metav1.Duration `json:"overlap,omitempty"`

	// RequestedAt (RFC 3339) triggers one rotation from GitOps: once it is in
	// the past and the current key was issued before it (compared in whole
	// seconds), the key rotates once, with the overlap in force then. A future
	// value takes effect when its time comes; re-applying the same value never
	// rotates again.
	// +optional
	RequestedAt *metav1.Time `json:"requestedAt,omitempty"`
}

// SecretTemplate holds metadata copied onto the workload Secret.
type SecretTemplate struct {
	// Label values are not checked here: a CEL check of map values costs too
	// much without a length bound on them, which a map[string]string cannot
	// carry. A bad value fails when the Secret is written.

	// Labels added to the workload Secret. Keys must be valid label keys;
	// the prefix auth.meterr.ai/ and app.kubernetes.io/managed-by are reserved
	// for the operator.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",message="label keys must be qualified names: an optional DNS subdomain prefix and '/', then at most 63 characters (alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric)"
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('auth.meterr.ai/') && k != 'app.kubernetes.io/managed-by')",message="label keys with the prefix auth.meterr.ai/ and app.kubernetes.io/managed-by are reserved for the operator",messageExpression="'label key ' + self.filter(k, k.startsWith('auth.meterr.ai/') || k == 'app.kubernetes.io/managed-by')[0] + ' is reserved for the operator: the auth.meterr.ai/ prefix and app.kubernetes.io/managed-by are its own'"
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations added to the workload Secret. Keys must be valid annotation
	// keys; the prefix auth.meterr.ai/ is reserved for the operator.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k.lowerAscii()).hasValue())",message="annotation keys must be qualified names: an optional DNS subdomain prefix and '/', then at most 63 characters (alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric)"
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.lowerAscii().startsWith('auth.meterr.ai/'))",message="annotation keys with the prefix auth.meterr.ai/ are reserved for the operator",messageExpression="'annotation key ' + self.filter(k, k.lowerAscii().startsWith('auth.meterr.ai/'))[0] + ' is reserved for the operator: the auth.meterr.ai/ prefix is its own'"
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// MeterrAPIKeyStatus is the observed state of a key. It never holds a plaintext key.
type MeterrAPIKeyStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready is True when the current key is issued, recorded and
	// delivered and the key is usable (reason KeyReady, or RotationDelayed
	// while a rotation waits for the minimum interval between rotations);
	// False with reason Disabled, Expired, SecretConflict, RecordsNamespace or
	// ReconcileError otherwise. Reconciling is True while the operator is
	// still working towards Ready (the first key, or a retry after an error);
	// Stalled is True when it cannot go on without a change by someone else
	// (SecretConflict, RecordsNamespace). Tools that compute kstatus (Argo CD,
	// Flux, kubectl wait) read these.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// CurrentKey is the key now in the workload Secret.
	// +optional
	CurrentKey *CurrentKeyStatus `json:"currentKey,omitempty"`

	// PreviousKeys are older versions still accepted until their expiresAt.
	// +listType=atomic
	// +optional
	PreviousKeys []PreviousKeyStatus `json:"previousKeys,omitempty"`

	// SecretName is the workload Secret that holds the current key.
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// CompromisedKeys lists the key versions reported leaked (by
	// `meterr-operator revoke` or a secret-scanning intake), newest last.
	// Each is refused from the moment it was reported and never accepted
	// again; a reported current key was replaced at once. The source of
	// truth is the key record, which only the operator writes: editing
	// this list revokes nothing and re-admits nothing.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +optional
	CompromisedKeys []CompromisedKeyStatus `json:"compromisedKeys,omitempty"`
}

// CompromisedKeyStatus describes a key version reported leaked, without revealing it.
type CompromisedKeyStatus struct {
	// ID is the key version's identifier.
	ID string `json:"id"`
	// ReportedAt is when the report was acted on: the version is refused from then on.
	ReportedAt metav1.Time `json:"reportedAt"`
	// Source says who reported it: cli, gitlab, github.
	Source string `json:"source"`
}

// CurrentKeyStatus describes the current key without revealing it.
type CurrentKeyStatus struct {
	// ID is a short non-secret identifier derived from the key's hash; the
	// auth server returns it as key_id.
	ID string `json:"id"`
	// Hint is the key's first characters, e.g. "mtr_live_AbCd…".
	Hint string `json:"hint"`
	// IssuedAt is when the key was issued.
	IssuedAt metav1.Time `json:"issuedAt"`
	// RotatesAt is when the key is next rotated automatically.
	// +optional
	RotatesAt *metav1.Time `json:"rotatesAt,omitempty"`
	// LastUsedAt is when an auth server last accepted a request with this
	// version, to the second, reported by every replica and written at most
	// once a --last-used-interval (default 1m) while it moves; absent: never
	// used since the operator started recording (refused requests do not
	// count). It never moves back.
	// +optional
	LastUsedAt *metav1.Time `json:"lastUsedAt,omitempty"`
}

// PreviousKeyStatus describes an older key still accepted.
type PreviousKeyStatus struct {
	// ID is the key's identifier.
	ID string `json:"id"`
	// Hint is the key's first characters.
	Hint string `json:"hint"`
	// ExpiresAt is when the key stops working.
	ExpiresAt metav1.Time `json:"expiresAt"`
	// LastUsedAt is when an auth server last accepted a request with this
	// version, to the second, reported by every replica and written at most
	// once a --last-used-interval (default 1m) while it moves; absent: never
	// used since the operator started recording (refused requests do not
	// count). It never moves back.
	// +optional
	LastUsedAt *metav1.Time `json:"lastUsedAt,omitempty"`
}

// MeterrAPIKey declares an API key for the meterr API. The operator issues the
// key into a workload Secret, records only its hash for the auth server, and
// rotates it with an overlap.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mak,categories=meterr
// +kubebuilder:printcolumn:name="Environment",type=string,JSONPath=`.spec.environment`
// +kubebuilder:printcolumn:name="Permissions",type=string,JSONPath=`.spec.permissions`
// +kubebuilder:printcolumn:name="Tier",type=string,JSONPath=`.spec.rateLimit.tier`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Key",type=string,JSONPath=`.status.currentKey.hint`,priority=1
// +kubebuilder:printcolumn:name="Next Rotation",type=string,JSONPath=`.status.currentKey.rotatesAt`
// +kubebuilder:printcolumn:name="Last Used",type=date,JSONPath=`.status.currentKey.lastUsedAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeterrAPIKey struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec MeterrAPIKeySpec `json:"spec"`
	// Status is the observed state of the key; it never holds a plaintext
	// key. A new key's status reads observedGeneration 0 (a default) until
	// the operator's first reconcile, so kstatus users (Flux, kubectl wait,
	// the Argo CD check in docs/argocd.md) see it as in progress.
	// +kubebuilder:default={observedGeneration: 0}
	// +optional
	Status MeterrAPIKeyStatus `json:"status,omitempty"`
}

// MeterrAPIKeyList is a list of MeterrAPIKeys.
// +kubebuilder:object:root=true
type MeterrAPIKeyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeterrAPIKey `json:"items"`
}
