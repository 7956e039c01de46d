// Package controllers reconciles MeterrAPIKeys into key records and workload Secrets.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	applymetav1 "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/csaupgrade"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

const (
	// FieldManager owns the fields the operator applies to the Secrets it
	// writes (server-side apply), and nothing else on them.
	FieldManager = "meterr-operator"

	// conflictRetry is how often a key blocked by a foreign Secret looks again:
	// that Secret carries none of our labels, so no watch event announces its
	// removal.
	conflictRetry = time.Minute
)

// Options configure the reconciler.
type Options struct {
	// RecordsNamespace holds every key record.
	RecordsNamespace string
	// TombstoneRetention is how long an expired key version stays in its
	// record, so its callers get expired_api_key rather than invalid_api_key.
	TombstoneRetention time.Duration
	// MaxConcurrentReconciles bounds parallel reconciles.
	MaxConcurrentReconciles int
	// MinRotationInterval is the least time between the last key delivered
	// and a rotation requested by spec.rotation.requestedAt; a faster request
	// waits. Zero means no minimum.
	MinRotationInterval time.Duration
	// RoutineEvents also records Normal events for the routine issues (the
	// first key, a scheduled or requested rotation). Off by default: each is
	// one more API request per key, and a rotation wave would write one per
	// key; the status, the log and meterr_keys_issued_total say the same.
	// Warnings (drift, conflicts, leaks) are always recorded.
	RoutineEvents bool
}

// MeterrAPIKeyReconciler issues, delivers, rotates and retires API keys.
type MeterrAPIKeyReconciler struct {
	// Client writes, and reads MeterrAPIKeys from the cache.
	client.Client
	// APIReader reads records and workload Secrets uncached: a rotation must
	// be decided on what the API server holds now, or a stale cache rotates twice.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	Options

	// mem remembers this manager's own writes (memo.go), so the reconciles
	// they trigger read nothing from the API server.
	mem memory
}

// +kubebuilder:rbac:groups=auth.meterr.ai,resources=meterrapikeys,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=auth.meterr.ai,resources=meterrapikeys/status,verbs=patch
// +kubebuilder:rbac:groups=auth.meterr.ai,resources=meterrapikeys/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Reconcile brings one MeterrAPIKey's record, Secret and status in line.
func (r *MeterrAPIKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cached := &authv1alpha1.MeterrAPIKey{}
	if err := r.Get(ctx, req.NamespacedName, cached); err != nil {
		if apierrors.IsNotFound(err) {
			r.mem.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	memo := r.mem.get(req.NamespacedName, cached.UID)
	// The cache may not have our last finalizer or status patch yet: work
	// on what that patch returned, or this reconcile writes it again.
	mak := memo.latest(cached)
	if !mak.DeletionTimestamp.IsZero() {
		if err := r.finalize(ctx, mak); err != nil {
			return ctrl.Result{}, err
		}
		r.mem.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}

	if mak.Namespace != r.RecordsNamespace {
		// No "issuing" status write before the first key: the CRD defaults
		// status.observedGeneration to 0, which kstatus reads as InProgress
		// until the first reconcile's status says otherwise.
		if err := r.addFinalizer(ctx, mak, memo); err != nil {
			return ctrl.Result{}, err
		}
	}

	// One snapshot, one status patch at the end, whatever happened.
	var res ctrl.Result
	var err error
	orig := mak.DeepCopy()
	if mak.Namespace == r.RecordsNamespace {
		// Never issued: no finalizer, no record, no Secret.
		msg := fmt.Sprintf("MeterrAPIKeys in the records namespace %s are never issued: it holds the key records, and only the operator writes there. Create the key in an application namespace", r.RecordsNamespace)
		if !isReady(mak, metav1.ConditionFalse, authv1alpha1.ReasonRecordsNamespace) {
			r.Recorder.Eventf(mak, nil, corev1.EventTypeWarning, authv1alpha1.ReasonRecordsNamespace, "Refuse", msg)
		}
		setReady(mak, metav1.ConditionFalse, authv1alpha1.ReasonRecordsNamespace, msg)
		setCondition(mak, authv1alpha1.ConditionStalled, metav1.ConditionTrue, authv1alpha1.ReasonRecordsNamespace, msg)
		meta.RemoveStatusCondition(&mak.Status.Conditions, authv1alpha1.ConditionReconciling)
		mak.Status.ObservedGeneration = mak.Generation
	} else {
		res, err = r.reconcile(ctx, mak, memo)
		if errors.Is(err, errStale) {
			// Decided on a view that has changed since: read again,
			// leaving the status as it is.
			memo.stale()
			return ctrl.Result{}, err
		}
		if err != nil {
			setReady(mak, metav1.ConditionFalse, authv1alpha1.ReasonReconcileError, err.Error())
			setCondition(mak, authv1alpha1.ConditionReconciling, metav1.ConditionTrue, authv1alpha1.ReasonReconcileError, "retrying after an error: "+err.Error())
		} else {
			mak.Status.ObservedGeneration = mak.Generation
		}
	}
	if perr := r.patchStatus(ctx, orig, mak, memo); perr != nil {
		return ctrl.Result{}, errors.Join(err, perr)
	}
	return res, err
}

// patchStatus writes mak's status when it differs from orig's: the one way
// this controller writes status.
func (r *MeterrAPIKeyReconciler) patchStatus(ctx context.Context, orig, mak *authv1alpha1.MeterrAPIKey, memo *keyMemo) error {
	if equality.Semantic.DeepEqual(orig.Status, mak.Status) {
		return nil
	}
	before := mak.ResourceVersion
	if err := r.Status().Patch(ctx, mak, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	memo.rememberKey(mak, before)
	return nil
}

// addFinalizer adds the finalizer with a patch of the finalizer list alone:
// an Update would send back the whole object, re-serialised (720h becomes
// 720h0m0s), and take ownership of the spec from whoever applied it.
func (r *MeterrAPIKeyReconciler) addFinalizer(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, memo *keyMemo) error {
	if controllerutil.ContainsFinalizer(mak, authv1alpha1.Finalizer) {
		return nil
	}
	before := mak.ResourceVersion
	patch := client.MergeFromWithOptions(mak.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(mak, authv1alpha1.Finalizer)
	if err := r.Patch(ctx, mak, patch); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	memo.rememberKey(mak, before)
	return nil
}

// reconcile does the work and fills mak.Status; the caller writes it.
func (r *MeterrAPIKeyReconciler) reconcile(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, memo *keyMemo) (ctrl.Result, error) {
	log := logr.FromContextOrDiscard(ctx)
	now := r.Clock.Now()

	recSecret, rec, wlSecret, wl, err := r.load(ctx, mak, memo)
	if err != nil {
		return ctrl.Result{}, err
	}
	// A record deleted by hand is rebuilt from the key the workload still
	// holds, but only from a key issued to this very resource: its status
	// names the key, and the Secret's controller is this resource (UID
	// included). Anything else in the Secret may be a key learnt from
	// another tenant; it is replaced, never recorded.
	if rec == nil && rebuildable(mak, wl) {
		rec = r.rebuildRecord(mak, wlSecret, wl, now)
		r.Recorder.Eventf(mak, nil, corev1.EventTypeWarning, authv1alpha1.ReasonRecordRebuilt, "Rebuild",
			"the key record was missing: rebuilt it from the workload Secret; older key versions are no longer accepted")
	}

	// Revocations first: the record says "revoked" before anything else
	// happens, so the auth servers refuse the reported versions even if
	// this reconcile goes no further (a crash, an error delivering the
	// replacement). The requests are removed only after the record is written.
	revocations := applyRevocations(rec, revocationRequests(mak), now)
	for i, d := range revocations {
		if d.index >= 0 {
			revocations[i].wasCurrent = wl.intact && rec.Keys[d.index].Hash == wl.hash.String()
		}
		if d.fresh {
			if recSecret, err = r.writeRecord(ctx, mak, memo, recSecret, rec); err != nil {
				return ctrl.Result{}, err
			}
			break
		}
	}

	if wl.exists && !wl.owned {
		msg := fmt.Sprintf("Secret %s/%s exists and is not owned by this MeterrAPIKey; it is never overwritten. Delete it or set spec.secretName", mak.Namespace, secretName(mak))
		if !isReady(mak, metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict) {
			r.Recorder.Eventf(mak, nil, corev1.EventTypeWarning, authv1alpha1.ReasonSecretConflict, "Deliver", msg)
		}
		setReady(mak, metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict, msg)
		setCondition(mak, authv1alpha1.ConditionStalled, metav1.ConditionTrue, authv1alpha1.ReasonSecretConflict, msg)
		meta.RemoveStatusCondition(&mak.Status.Conditions, authv1alpha1.ConditionReconciling)
		// Revocations were recorded above; nothing can be delivered.
		mak.Status.CompromisedKeys = compromisedStatus(mak.Status.CompromisedKeys, rec)
		r.revocationEvents(mak, revocations, "")
		if err := r.clearRevocationRequests(ctx, mak, revocations); err != nil {
			return ctrl.Result{}, err
		}
		// A version written for a Secret that turned out to be foreign
		// (created when the cache showed none) never reached a workload.
		if rec != nil {
			if kept := dropUndelivered(rec.Keys, "", mak.Status.CurrentKey); len(kept) != len(rec.Keys) {
				rec.Keys = kept
				if _, err := r.writeRecord(ctx, mak, memo, recSecret, rec); err != nil {
					return ctrl.Result{}, err
				}
			}
		}
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}

	d := decideIssue(mak, rec, wl, now)
	var delayed gate
	if d.issue && d.reason != authv1alpha1.ReasonIssued && d.reason != authv1alpha1.ReasonKeyCompromised {
		if delayed = rotationGate(mak, rec, d.reason, r.MinRotationInterval, now); delayed.delayed() {
			d.issue = false
		}
	}
	currentHash, replacement := "", ""
	if d.issue {
		delivered := ""
		if wl.intact {
			delivered = wl.hash.String()
		}
		var v record.Version
		v, rec, recSecret, wlSecret, wl, err = r.issue(ctx, mak, memo, recSecret, rec, wlSecret, delivered, now)
		if err != nil {
			return ctrl.Result{}, err
		}
		currentHash, replacement = v.Hash, v.ID
		keysIssued.WithLabelValues(d.reason).Inc()
		log.Info("issued key", "reason", d.reason, "keyID", v.ID)
		switch {
		case d.drift:
			r.Recorder.Eventf(mak, nil, corev1.EventTypeWarning, d.reason, "Issue", "%s (key %s)", d.message, v.ID)
		case r.RoutineEvents || !routineIssue(d.reason):
			r.Recorder.Eventf(mak, nil, corev1.EventTypeNormal, d.reason, "Issue", "%s (key %s)", d.message, v.ID)
		}
		// The settle step below works on what issue wrote: no read, no decode.
	} else if wl.intact {
		currentHash = wl.hash.String()
	}

	// Settle: policy, expiries of superseded versions, tombstones, metadata.
	if rec == nil {
		// decideIssue issues a key whenever there is no record, and the
		// gate never holds back a key without a record.
		return ctrl.Result{}, errors.New("key record missing after issuing a key")
	}
	desired := &record.Record{Owner: ownerOf(mak), Policy: policyFor(mak),
		Keys: settleVersions(rec.Keys, findVersion(rec, currentHash), overlap(mak), r.TombstoneRetention, now)}
	if _, err := r.writeRecord(ctx, mak, memo, recSecret, desired); err != nil {
		return ctrl.Result{}, err
	}
	if len(revocations) > 0 {
		r.revocationEvents(mak, revocations, replacement)
		if err := r.clearRevocationRequests(ctx, mak, revocations); err != nil {
			return ctrl.Result{}, err
		}
	}
	if i := findVersion(desired, currentHash); i >= 0 && !d.issue { // issue has just applied it
		if err := r.applyWorkload(ctx, mak, memo, wlSecret, wl, desired.Keys[i].NotBefore.Time); err != nil {
			return ctrl.Result{}, err
		}
	}
	if err := r.deleteOldSecret(ctx, mak); err != nil {
		return ctrl.Result{}, err
	}

	mak.Status.SecretName = secretName(mak)
	cur, prev := statusFor(mak, desired, currentHash, now)
	if cur != nil || !delayed.delayed() {
		// While a drift repair waits, the status keeps naming the last key
		// delivered: it stays valid, and it is what a rebuild may trust.
		mak.Status.CurrentKey = cur
	}
	mak.Status.PreviousKeys = prev
	mak.Status.CompromisedKeys = compromisedStatus(mak.Status.CompromisedKeys, desired)
	meta.RemoveStatusCondition(&mak.Status.Conditions, authv1alpha1.ConditionStalled)
	meta.RemoveStatusCondition(&mak.Status.Conditions, authv1alpha1.ConditionReconciling)
	switch {
	case mak.Spec.Disabled:
		setReady(mak, metav1.ConditionFalse, authv1alpha1.ReasonDisabled, "the key is disabled: every version is refused and rotation is paused")
	case expired(mak, now):
		setReady(mak, metav1.ConditionFalse, authv1alpha1.ReasonExpired, "spec.expiresAt has passed: every version is refused")
	case delayed.delayed():
		msg := fmt.Sprintf("%s; %s, so it waits until %s", d.message, delayed.why, delayed.until.UTC().Format(time.RFC3339))
		if cur == nil {
			setReady(mak, metav1.ConditionFalse, authv1alpha1.ReasonRotationDelayed, msg)
			setCondition(mak, authv1alpha1.ConditionReconciling, metav1.ConditionTrue, authv1alpha1.ReasonRotationDelayed, msg)
		} else {
			setReady(mak, metav1.ConditionTrue, authv1alpha1.ReasonRotationDelayed, msg)
		}
	default:
		setReady(mak, metav1.ConditionTrue, authv1alpha1.ReasonReady, "the current key is recorded and delivered to Secret "+secretName(mak))
	}

	next := nextDeadline(mak, desired, currentHash, r.TombstoneRetention, now)
	if delayed.delayed() && (next.IsZero() || delayed.until.Before(next)) {
		next = delayed.until
	}
	if !next.IsZero() {
		return ctrl.Result{RequeueAfter: next.Sub(now)}, nil
	}
	return ctrl.Result{}, nil
}

// rebuildable reports whether a missing record may be rebuilt from the key in
// the workload Secret: this resource controls the Secret (by UID) and its
// status names that very key as the one it was issued.
func rebuildable(mak *authv1alpha1.MeterrAPIKey, wl workload) bool {
	return wl.intact && wl.owned && mak.Status.CurrentKey != nil &&
		mak.Status.CurrentKey.ID == wl.hash.ID() && !isCompromised(mak, wl.hash.ID())
}

// issue writes a new key: first to the record, then to the workload Secret,
// so every key a workload can ever read is already accepted. It returns the
// new version, the record it wrote, both Secrets as written and the
// workload as it now stands; the plaintext leaves this function only in the
// workload Secret and its workload.
func (r *MeterrAPIKeyReconciler) issue(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, memo *keyMemo,
	recSecret *corev1.Secret, rec *record.Record, wlSecret *corev1.Secret, deliveredHash string, now time.Time,
) (record.Version, *record.Record, *corev1.Secret, *corev1.Secret, workload, error) {
	key, err := apikey.Generate(environment(mak))
	if err != nil {
		return record.Version{}, nil, nil, nil, workload{}, fmt.Errorf("generating key: %w", err)
	}
	issuedAt := now.Truncate(time.Second)
	h := apikey.HashOf(key)
	v := record.NewVersionOf(key, h, issuedAt)

	next := &record.Record{Owner: ownerOf(mak), Policy: policyFor(mak)}
	if rec != nil {
		next.Keys = dropUndelivered(rec.Keys, deliveredHash, mak.Status.CurrentKey)
	}
	next.Keys = append(next.Keys, v)
	if recSecret, err = r.writeRecord(ctx, mak, memo, recSecret, next); err != nil {
		return record.Version{}, nil, nil, nil, workload{}, err
	}
	wl := workload{exists: true, owned: true, intact: true, key: key, hash: h}
	s, err := r.writeWorkload(ctx, mak, memo, wlSecret, wl, issuedAt)
	if err != nil {
		return record.Version{}, nil, nil, nil, workload{}, err
	}
	return v, next, recSecret, s, wl, nil
}

func (r *MeterrAPIKeyReconciler) rebuildRecord(mak *authv1alpha1.MeterrAPIKey, s *corev1.Secret, wl workload, now time.Time) *record.Record {
	issuedAt := now.Truncate(time.Second)
	if c := mak.Status.CurrentKey; c != nil && !c.IssuedAt.IsZero() {
		issuedAt = c.IssuedAt.Time
	} else if t, err := time.Parse(time.RFC3339, s.Annotations[authv1alpha1.AnnotationIssuedAt]); err == nil {
		issuedAt = t
	}
	return &record.Record{Owner: ownerOf(mak), Policy: policyFor(mak), Keys: []record.Version{record.NewVersionOf(wl.key, wl.hash, issuedAt)}}
}

// load returns the key record and the workload Secret: from the memory of
// this manager's own writes when the cache shows them unchanged since
// (memo.go), as absent when neither the memory nor the cache knows either
// (a new key: the creates that follow fail if the cache was wrong), and
// otherwise as read uncached.
func (r *MeterrAPIKeyReconciler) load(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, memo *keyMemo) (
	*corev1.Secret, *record.Record, *corev1.Secret, workload, error) {
	recMeta, err := r.cachedMeta(ctx, r.RecordsNamespace, record.Name(mak.Namespace, mak.Name, mak.UID))
	if err != nil {
		return nil, nil, nil, workload{}, err
	}
	wlMeta, err := r.cachedMeta(ctx, mak.Namespace, secretName(mak))
	if err != nil {
		return nil, nil, nil, workload{}, err
	}
	if recTrusted, wlTrusted := memo.record.trusted(recMeta), memo.workload.trusted(wlMeta); recTrusted && wlTrusted {
		recSecret := memo.record.secret()
		if rec, err := record.Decode(recSecret); err == nil {
			return recSecret, rec, memo.workload.secret(), memo.wl, nil
		}
	}
	if !memo.mustRead && memo.record == nil && memo.workload == nil && recMeta == nil && wlMeta == nil {
		return nil, nil, nil, workload{}, nil
	}
	memo.mustRead = false
	recSecret, rec, err := r.readRecord(ctx, mak, memo)
	if err != nil {
		return nil, nil, nil, workload{}, err
	}
	wlSecret, wl, err := r.readWorkload(ctx, mak, memo)
	if err != nil {
		return nil, nil, nil, workload{}, err
	}
	return recSecret, rec, wlSecret, wl, nil
}

// cachedMeta is the cache's metadata of a Secret, nil when it shows none
// (the cache holds only Secrets labelled as the operator's).
func (r *MeterrAPIKeyReconciler) cachedMeta(ctx context.Context, namespace, name string) (*metav1.PartialObjectMetadata, error) {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, m); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading Secret %s/%s from the cache: %w", namespace, name, err)
	}
	return m, nil
}

// readRecord reads the key record uncached; a missing record is (nil, nil, nil).
func (r *MeterrAPIKeyReconciler) readRecord(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, memo *keyMemo) (*corev1.Secret, *record.Record, error) {
	memo.record = nil
	s := &corev1.Secret{}
	name := record.Name(mak.Namespace, mak.Name, mak.UID)
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.RecordsNamespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("reading key record %s/%s: %w", r.RecordsNamespace, name, err)
	}
	rec, err := record.Decode(s)
	if err != nil {
		// An unreadable record is replaced as if it were missing; the
		// Secret's key is recovered from the workload Secret.
		logr.FromContextOrDiscard(ctx).Error(err, "discarding unreadable key record")
		return s, nil, nil
	}
	memo.record = memo.record.remember(s, false)
	return s, rec, nil
}

// readWorkload reads the workload Secret uncached (a foreign Secret of that
// name carries none of our labels, so the cache would not show it; and the
// cache holds no Secret data at all).
func (r *MeterrAPIKeyReconciler) readWorkload(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, memo *keyMemo) (*corev1.Secret, workload, error) {
	memo.workload = nil
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: mak.Namespace, Name: secretName(mak)}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, workload{}, nil
		}
		return nil, workload{}, fmt.Errorf("reading workload Secret %s/%s: %w", mak.Namespace, secretName(mak), err)
	}
	wl := workload{exists: true, owned: metav1.IsControlledBy(s, mak)}
	key := string(s.Data[authv1alpha1.DataKeyAPIKey])
	if apikey.Parse(key) == nil && string(s.Data[authv1alpha1.DataKeyEnv]) == key &&
		apikey.IsLive(key) == (environment(mak) == apikey.EnvProduction) {
		wl.key, wl.hash, wl.intact = key, apikey.HashOf(key), true
	}
	if wl.owned {
		memo.rememberWorkload(s, wl, false)
	}
	return s, wl, nil
}

// onlyKeys returns the entries of m whose keys are in keep.
func onlyKeys(m map[string]string, keep map[string]bool) map[string]string {
	out := make(map[string]string, len(keep))
	for k := range keep {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

// writeRecord writes the record when its content differs, and returns the
// record Secret as written. A new record is created, so a record the cache
// had not shown yet is never overwritten blind; an existing one is applied
// (server-side apply, under FieldManager) at the resource version it was
// read or last written at. Only the operator writes the records namespace.
func (r *MeterrAPIKeyReconciler) writeRecord(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, memo *keyMemo,
	existing *corev1.Secret, rec *record.Record) (*corev1.Secret, error) {
	data, err := record.Encode(rec)
	if err != nil {
		return nil, fmt.Errorf("encoding key record %s: %w", record.Name(mak.Namespace, mak.Name, mak.UID), err)
	}
	owner := ownerOf(mak).String()
	// No write when the content is in place. (Records written before
	// server-side apply are taken over by the next change of content:
	// nobody else writes the records namespace.)
	if existing != nil && string(existing.Data[record.DataKey]) == string(data) && hasAll(existing.Labels, record.Labels()) &&
		existing.Annotations[authv1alpha1.AnnotationOwner] == owner {
		return existing, nil
	}
	name := record.Name(mak.Namespace, mak.Name, mak.UID)
	if existing == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.RecordsNamespace, Name: name, Labels: record.Labels(),
				Annotations: map[string]string{authv1alpha1.AnnotationOwner: owner}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{record.DataKey: data},
		}
		if err := r.Create(ctx, s, client.FieldOwner(FieldManager)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return nil, fmt.Errorf("key record %s/%s exists although it was not seen: %w: %w", r.RecordsNamespace, name, errStale, err)
			}
			return nil, fmt.Errorf("writing key record %s/%s: %w", r.RecordsNamespace, name, err)
		}
		s.ManagedFields = nil
		memo.record = memo.record.remember(s, true)
		return s, nil
	}
	ac := applycorev1.Secret(name, r.RecordsNamespace).
		WithType(corev1.SecretTypeOpaque).
		WithLabels(record.Labels()).
		WithAnnotations(map[string]string{authv1alpha1.AnnotationOwner: owner}).
		WithData(map[string][]byte{record.DataKey: data})
	if existing.ResourceVersion != "" {
		ac.WithResourceVersion(existing.ResourceVersion)
	}
	if err := r.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		if apierrors.IsConflict(err) {
			return nil, fmt.Errorf("key record %s/%s changed since it was read: %w: %w", r.RecordsNamespace, name, errStale, err)
		}
		return nil, fmt.Errorf("writing key record %s/%s: %w", r.RecordsNamespace, name, err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: r.RecordsNamespace, Name: name, Labels: record.Labels(),
			Annotations: map[string]string{authv1alpha1.AnnotationOwner: owner}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{record.DataKey: data},
	}
	if ac.ResourceVersion != nil && ac.UID != nil {
		s.ResourceVersion, s.UID = *ac.ResourceVersion, *ac.UID
		memo.record = memo.record.remember(s, false)
	}
	return s, nil
}

// applyWorkload keeps the workload Secret's key, labels and annotations in
// line with the spec, writing only when something the operator owns differs.
func (r *MeterrAPIKeyReconciler) applyWorkload(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, memo *keyMemo,
	s *corev1.Secret, wl workload, issuedAt time.Time) error {
	keyID := wl.hash.ID()
	labels, annotations := workloadMeta(mak, keyID, issuedAt)
	if hasAll(s.Labels, labels) && hasAll(s.Annotations, annotations) && s.Type == corev1.SecretTypeOpaque {
		ownedLabels, ownedAnnotations, applied := ownedMetadata(s, FieldManager)
		if applied && sameKeys(ownedLabels, labels) && sameKeys(ownedAnnotations, annotations) {
			return nil
		}
	}
	if wl.key == "" {
		// Remembered without its key: read it, and write only if it is
		// still the key this decision was made on.
		var err error
		if s, wl, err = r.readWorkload(ctx, mak, memo); err != nil {
			return err
		}
		if !wl.owned || !wl.intact || wl.hash.ID() != keyID {
			return fmt.Errorf("workload Secret %s/%s changed since it was read: %w", mak.Namespace, secretName(mak), errStale)
		}
	}
	_, err := r.writeWorkload(ctx, mak, memo, s, wl, issuedAt)
	return err
}

// writeWorkload writes the workload Secret: the key under both data keys,
// the operator's and the template's labels and annotations, and the
// controller reference. A new Secret is created, which fails if any Secret
// of that name exists (the cache shows only ours); an existing one is
// applied (server-side apply under FieldManager, which owns exactly these:
// labels and annotations others add survive, and template entries removed
// from the spec disappear), at the UID and resource version it was read or
// last written at. It returns the Secret as written.
func (r *MeterrAPIKeyReconciler) writeWorkload(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, memo *keyMemo,
	existing *corev1.Secret, wl workload, issuedAt time.Time) (*corev1.Secret, error) {
	keyID := wl.hash.ID()
	labels, annotations := workloadMeta(mak, keyID, issuedAt)
	data := map[string][]byte{authv1alpha1.DataKeyAPIKey: []byte(wl.key), authv1alpha1.DataKeyEnv: []byte(wl.key)}
	gvk := authv1alpha1.GroupVersion.WithKind("MeterrAPIKey")
	name := secretName(mak)
	if existing == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: mak.Namespace, Name: name, Labels: labels, Annotations: annotations,
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(mak, gvk)}},
			Type: corev1.SecretTypeOpaque,
			Data: data,
		}
		if err := r.Create(ctx, s, client.FieldOwner(FieldManager)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return nil, fmt.Errorf("a Secret %s/%s exists although none was seen: %w: %w", mak.Namespace, name, errStale, err)
			}
			return nil, fmt.Errorf("writing workload Secret %s/%s: %w", mak.Namespace, name, err)
		}
		memo.rememberWorkload(s, wl, true)
		return s, nil
	}
	if err := r.foldCreateOwnership(ctx, existing, labels, annotations); err != nil {
		return nil, err
	}
	ac := applycorev1.Secret(name, mak.Namespace).
		WithType(corev1.SecretTypeOpaque).
		WithLabels(labels).
		WithAnnotations(annotations).
		WithData(data).
		WithOwnerReferences(applymetav1.OwnerReference().
			WithAPIVersion(gvk.GroupVersion().String()).WithKind(gvk.Kind).
			WithName(mak.Name).WithUID(mak.UID).
			WithController(true).WithBlockOwnerDeletion(true))
	// Preconditions: the Secret this reconcile read and found ours (not one
	// deleted and re-created by someone else meanwhile), unchanged since.
	if existing.UID != "" {
		ac.WithUID(existing.UID)
	}
	if existing.ResourceVersion != "" {
		ac.WithResourceVersion(existing.ResourceVersion)
	}
	if err := r.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsInvalid(err) || apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("workload Secret %s/%s changed since it was read: %w: %w", mak.Namespace, name, errStale, err)
		}
		return nil, fmt.Errorf("writing workload Secret %s/%s: %w", mak.Namespace, name, err)
	}
	out := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: mak.Namespace, Name: name,
		Labels: labels, Annotations: annotations}, Type: corev1.SecretTypeOpaque, Data: data}
	if ac.UID != nil && ac.ResourceVersion != nil {
		out.UID, out.ResourceVersion = *ac.UID, *ac.ResourceVersion
		// Ours are exactly what was applied (the response's labels and
		// annotations also hold others', which are not kept).
		out.ManagedFields = []metav1.ManagedFieldsEntry{appliedEntry(labels, annotations)}
		memo.rememberWorkload(out, wl, false)
	}
	return out, nil
}

// foldCreateOwnership hands the fields of the create that made the Secret
// (an Update entry of FieldManager) to FieldManager's apply, when that
// create owns a label or annotation the apply is about to leave out: an
// apply never removes fields another entry owns, so a template entry
// removed from the spec would otherwise stay on the Secret for good.
// client-go's csaupgrade does the folding; it costs a read and a patch, once.
func (r *MeterrAPIKeyReconciler) foldCreateOwnership(ctx context.Context, existing *corev1.Secret, labels, annotations map[string]string) error {
	created, found, readable := ownedBy(existing, FieldManager, metav1.ManagedFieldsOperationUpdate)
	if !found || (readable && subsetOf(created.labels, labels) && subsetOf(created.annotations, annotations)) {
		return nil
	}
	live := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(existing), live); err != nil {
		return fmt.Errorf("reading workload Secret %s/%s: %w", existing.Namespace, existing.Name, err)
	}
	if live.UID != existing.UID {
		return fmt.Errorf("workload Secret %s/%s was replaced: %w", existing.Namespace, existing.Name, errStale)
	}
	patch, err := csaupgrade.UpgradeManagedFieldsPatch(live, sets.New(FieldManager), FieldManager)
	if err != nil || patch == nil {
		return err
	}
	if err := r.Patch(ctx, live, client.RawPatch(types.JSONPatchType, patch)); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsInvalid(err) {
			return fmt.Errorf("workload Secret %s/%s changed since it was read: %w: %w", existing.Namespace, existing.Name, errStale, err)
		}
		return fmt.Errorf("handing the workload Secret's created fields to the apply: %w", err)
	}
	existing.ResourceVersion = live.ResourceVersion
	return nil
}

// routineIssue reports the reasons whose Normal event is recorded only
// with Options.RoutineEvents.
func routineIssue(reason string) bool {
	switch reason {
	case authv1alpha1.ReasonIssued, authv1alpha1.ReasonRotationDue, authv1alpha1.ReasonRotationRequested:
		return true
	}
	return false
}

// deleteOldSecret removes the Secret a previous spec.secretName named, if we own it.
func (r *MeterrAPIKeyReconciler) deleteOldSecret(ctx context.Context, mak *authv1alpha1.MeterrAPIKey) error {
	old := mak.Status.SecretName
	if old == "" || old == secretName(mak) {
		return nil
	}
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: mak.Namespace, Name: old}, s); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(s, mak) {
		return nil
	}
	if err := r.Delete(ctx, s, client.Preconditions{UID: &s.UID}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting previous workload Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// finalize deletes the key record, so every version is refused at once, then
// lets the MeterrAPIKey go. The workload Secret goes with it by owner reference.
func (r *MeterrAPIKeyReconciler) finalize(ctx context.Context, mak *authv1alpha1.MeterrAPIKey) error {
	if !controllerutil.ContainsFinalizer(mak, authv1alpha1.Finalizer) {
		return nil
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.RecordsNamespace, Name: record.Name(mak.Namespace, mak.Name, mak.UID)}}
	if err := r.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting key record %s/%s: %w", s.Namespace, s.Name, err)
	}
	patch := client.MergeFromWithOptions(mak.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(mak, authv1alpha1.Finalizer)
	if err := client.IgnoreNotFound(r.Patch(ctx, mak, patch)); err != nil {
		return fmt.Errorf("removing finalizer: %w", err)
	}
	return nil
}

func ownerOf(mak *authv1alpha1.MeterrAPIKey) record.Owner {
	return record.Owner{Namespace: mak.Namespace, Name: mak.Name, UID: mak.UID}
}

// workloadMeta is the workload Secret's labels and annotations: the
// template's, overridden by the operator's own.
func workloadMeta(mak *authv1alpha1.MeterrAPIKey, keyID string, issuedAt time.Time) (map[string]string, map[string]string) {
	labels, annotations := map[string]string{}, map[string]string{}
	if t := mak.Spec.SecretTemplate; t != nil {
		maps.Copy(labels, t.Labels)
		maps.Copy(annotations, t.Annotations)
	}
	labels[authv1alpha1.LabelManagedBy] = authv1alpha1.ManagedByValue
	annotations[authv1alpha1.AnnotationKeyID] = keyID
	if !issuedAt.IsZero() {
		annotations[authv1alpha1.AnnotationIssuedAt] = issuedAt.UTC().Format(time.RFC3339)
	}
	return labels, annotations
}

// setReady sets the Ready condition, stamped with the generation it describes.
func setReady(mak *authv1alpha1.MeterrAPIKey, status metav1.ConditionStatus, reason, message string) {
	setCondition(mak, authv1alpha1.ConditionReady, status, reason, message)
}

func setCondition(mak *authv1alpha1.MeterrAPIKey, typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&mak.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: message, ObservedGeneration: mak.Generation,
	})
}

func isReady(mak *authv1alpha1.MeterrAPIKey, status metav1.ConditionStatus, reason string) bool {
	c := meta.FindStatusCondition(mak.Status.Conditions, authv1alpha1.ConditionReady)
	return c != nil && c.Status == status && c.Reason == reason
}

// CacheOptions limits what the manager caches. Secrets are cached as
// metadata only, only those labelled as the operator's, and of their
// annotations only the record owner's: tenants write Secrets of any size
// with any labels, and their data must not fill the manager's memory. Data
// is read through the API reader when needed. Managed fields are dropped
// from every cached object.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {
				Label:     labels.SelectorFromSet(labels.Set{authv1alpha1.LabelManagedBy: authv1alpha1.ManagedByValue}),
				Transform: slimSecretMeta,
			},
		},
	}
}

// slimSecretMeta keeps of a cached Secret what the controllers look at.
func slimSecretMeta(in any) (any, error) {
	switch o := in.(type) {
	case *metav1.PartialObjectMetadata:
		o.ManagedFields = nil
		if owner, ok := o.Annotations[authv1alpha1.AnnotationOwner]; ok {
			o.Annotations = map[string]string{authv1alpha1.AnnotationOwner: owner}
		} else {
			o.Annotations = nil
		}
	case *corev1.Secret:
		// Not expected (every watch is metadata-only): never keep data.
		o.ManagedFields, o.Data, o.StringData = nil, nil, nil
	}
	return in, nil
}

// SetupWithManager registers the controller. Records live in another
// namespace and cannot carry owner references, so their events are mapped
// back through the owner annotation. Secrets are watched metadata-only.
func (r *MeterrAPIKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("meterr-operator")
	}
	// A second manager in one process (tests) keeps the first collector.
	if err := metrics.Registry.Register(&KeyStateCollector{Reader: mgr.GetCache(), Clock: r.Clock}); err != nil &&
		!errors.As(err, &prometheus.AlreadyRegisteredError{}) {
		return fmt.Errorf("registering key metrics: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&authv1alpha1.MeterrAPIKey{}).
		Owns(&corev1.Secret{}, builder.OnlyMetadata).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(mapRecordToKey),
			builder.OnlyMetadata,
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
				return o.GetNamespace() == r.RecordsNamespace && o.GetLabels()[authv1alpha1.LabelRecord] == "true"
			}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.MaxConcurrentReconciles)}).
		Named("meterrapikey").
		Complete(r)
}

func mapRecordToKey(_ context.Context, o client.Object) []reconcile.Request {
	ns, name, ok := splitOwner(o.GetAnnotations()[authv1alpha1.AnnotationOwner])
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
}

func splitOwner(s string) (string, string, bool) {
	ns, name, ok := strings.Cut(s, "/")
	return ns, name, ok && ns != "" && name != ""
}
