package v1alpha1

// The names below are contracts: users, GitOps tools (kstatus), alerts and
// older or newer operator versions read them on live objects, so their values
// never change. They live with the API rather than with the controller so
// that everything else (the auth server, the subcommands, the record format)
// can name them without importing a plane.

// Finalizer lets the controller delete a key's record before the key goes.
const Finalizer = "auth.meterr.ai/key-record"

// The workload Secret a MeterrAPIKey delivers.
const (
	// DataKeyAPIKey and DataKeyEnv hold the plaintext key in the workload Secret.
	DataKeyAPIKey = "api-key"
	DataKeyEnv    = "METERR_API_KEY"

	// AnnotationKeyID and AnnotationIssuedAt describe the key in the workload
	// Secret (non-secret; they let a record be rebuilt from the Secret).
	AnnotationKeyID    = "auth.meterr.ai/key-id"
	AnnotationIssuedAt = "auth.meterr.ai/issued-at"
)

// Labels and annotations of the Secrets the operator manages.
const (
	// LabelManagedBy is the standard label on every Secret the operator
	// manages; the manager's cache holds only Secrets that carry it.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is LabelManagedBy's value.
	ManagedByValue = "meterr-operator"

	// LabelRecord marks a Secret as a key record; the auth server selects on it.
	LabelRecord = "auth.meterr.ai/key-record"
	// LabelFormat carries the record's format version.
	LabelFormat = "auth.meterr.ai/record-format"
	// AnnotationOwner names the MeterrAPIKey ("namespace/name") a record
	// belongs to, so the controller can map record events back to it.
	AnnotationOwner = "auth.meterr.ai/owner"
)

// Condition types of a MeterrAPIKey's status.
const (
	// ConditionReady is the condition every MeterrAPIKey carries.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the operator is still working
	// towards Ready, and ConditionStalled while it cannot go on without a
	// change by someone else. kstatus (Argo CD, Flux, kubectl wait) reads
	// them as InProgress and Failed.
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
)

// Last used (issue 26): a previous key version still called near the end of
// its overlap.
const (
	// ConditionPreviousKeyInUse is True, with reason
	// ReasonPreviousKeyStillInUse, while a previous version was used within
	// the last --overlap-warning-window before its overlap ends; False, with
	// reason ReasonPreviousKeyUnused, once it was True and no longer holds.
	ConditionPreviousKeyInUse = "PreviousKeyInUse"
	// ReasonPreviousKeyStillInUse is also the Warning Event's reason.
	ReasonPreviousKeyStillInUse = "PreviousKeyStillInUse"
	ReasonPreviousKeyUnused     = "PreviousKeyUnused"
)

// Reasons of the Ready condition.
const (
	ReasonReady          = "KeyReady"
	ReasonDisabled       = "Disabled"
	ReasonExpired        = "Expired"
	ReasonSecretConflict = "SecretConflict"
	ReasonReconcileError = "ReconcileError"
	// ReasonRecordsNamespace: a MeterrAPIKey in the records namespace is
	// never issued (its workload Secret would sit beside the records).
	ReasonRecordsNamespace = "RecordsNamespace"
	// ReasonIssuing: the first reconcile of a key has begun.
	ReasonIssuing = "Issuing"
	// ReasonRotationDelayed: the key is usable, and a rotation waits for
	// the minimum interval or for a free version slot.
	ReasonRotationDelayed = "RotationDelayed"
)

// Reasons a new key is issued; also the reasons of the events that say so.
const (
	ReasonIssued            = "KeyIssued"
	ReasonRotationDue       = "RotationDue"
	ReasonRotationRequested = "RotationRequested"
	ReasonSecretMissing     = "SecretMissing"
	ReasonSecretModified    = "SecretModified"
	ReasonSecretRenamed     = "SecretRenamed"
	// ReasonRecordRebuilt is the event of a record rebuilt from the workload Secret.
	ReasonRecordRebuilt = "RecordRebuilt"
	// ReasonKeyCompromised is the Warning event of a key version reported
	// leaked, and the reason of the emergency rotation that replaces a
	// reported current key.
	ReasonKeyCompromised = "KeyCompromised"
	// ReasonRevocationIgnored is the Warning event of a revocation request
	// that names no version of the key.
	ReasonRevocationIgnored = "RevocationIgnored"
)

// Revocation requests. A request is an annotation on the MeterrAPIKey whose
// key is AnnotationRevokePrefix followed by the key id, and whose value is a
// RevocationRequest in JSON. It carries the key's SHA-256 (proof of holding
// the key, since only the operator and the auth server can read the
// records), never the key. The controller acts on it, then removes it.
const AnnotationRevokePrefix = "auth.meterr.ai/revoke-"

// RevocationRequest is the value of a revocation request annotation.
type RevocationRequest struct {
	// Hash is the hex SHA-256 of the reported key.
	Hash string `json:"hash"`
	// Source: cli, gitlab, github.
	Source string `json:"source"`
	// Location is where the key was found (a URL, a file path); shown in
	// the Event, never stored in the record.
	Location string `json:"location,omitempty"`
}
