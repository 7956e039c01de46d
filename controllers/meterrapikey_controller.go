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
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/meterr/meterr-operator/api/v1alpha1"
	"github.com/meterr/meterr-operator/internal/apikey"
	"github.com/meterr/meterr-operator/internal/record"
)

const (
	// Finalizer lets the controller delete a key's record before the key goes.
	Finalizer = "auth.meterr.ai/key-record"

	// DataKeyAPIKey and DataKeyEnv hold the plaintext key in the workload Secret.
	DataKeyAPIKey = "api-key"
	DataKeyEnv    = "METERR_API_KEY"

	// AnnotationKeyID and AnnotationIssuedAt describe the key in the workload
	// Secret (non-secret; they let a record be rebuilt from the Secret).
	AnnotationKeyID    = "auth.meterr.ai/key-id"
	AnnotationIssuedAt = "auth.meterr.ai/issued-at"

	// ConditionReady is the condition every MeterrAPIKey carries.
	ConditionReady = "Ready"

	// Reasons of the Ready condition.
	ReasonReady          = "KeyReady"
	ReasonDisabled       = "Disabled"
	ReasonExpired        = "Expired"
	ReasonSecretConflict = "SecretConflict"
	ReasonReconcileError = "ReconcileError"

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
}

// +kubebuilder:rbac:groups=auth.meterr.ai,resources=meterrapikeys,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=auth.meterr.ai,resources=meterrapikeys/status,verbs=patch
// +kubebuilder:rbac:groups=auth.meterr.ai,resources=meterrapikeys/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one MeterrAPIKey's record, Secret and status in line.
func (r *MeterrAPIKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	mak := &authv1alpha1.MeterrAPIKey{}
	if err := r.Get(ctx, req.NamespacedName, mak); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !mak.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, mak)
	}
	if !controllerutil.ContainsFinalizer(mak, Finalizer) {
		controllerutil.AddFinalizer(mak, Finalizer)
		if err := r.Update(ctx, mak); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}

	orig := mak.DeepCopy()
	res, err := r.reconcile(ctx, mak)
	if err != nil {
		setReady(mak, metav1.ConditionFalse, ReasonReconcileError, err.Error())
	} else {
		mak.Status.ObservedGeneration = mak.Generation
	}
	if !equality.Semantic.DeepEqual(orig.Status, mak.Status) {
		if perr := r.Status().Patch(ctx, mak, client.MergeFrom(orig)); perr != nil {
			return ctrl.Result{}, errors.Join(err, fmt.Errorf("writing status: %w", perr))
		}
	}
	return res, err
}

// reconcile does the work and fills mak.Status; the caller writes it.
func (r *MeterrAPIKeyReconciler) reconcile(ctx context.Context, mak *authv1alpha1.MeterrAPIKey) (ctrl.Result, error) {
	log := logr.FromContextOrDiscard(ctx)
	now := r.Clock.Now()

	recSecret, rec, err := r.readRecord(ctx, mak)
	if err != nil {
		return ctrl.Result{}, err
	}
	wlSecret, wl, err := r.readWorkload(ctx, mak)
	if err != nil {
		return ctrl.Result{}, err
	}
	if wl.exists && !wl.owned {
		msg := fmt.Sprintf("Secret %s/%s exists and is not owned by this MeterrAPIKey; it is never overwritten. Delete it or set spec.secretName", mak.Namespace, secretName(mak))
		if !isReady(mak, metav1.ConditionFalse, ReasonSecretConflict) {
			r.Recorder.Eventf(mak, nil, corev1.EventTypeWarning, ReasonSecretConflict, "Deliver", msg)
		}
		setReady(mak, metav1.ConditionFalse, ReasonSecretConflict, msg)
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}

	// A record deleted by hand is rebuilt from the key the workload still holds.
	if rec == nil && wl.intact {
		rec = r.rebuildRecord(mak, wlSecret, wl.key, now)
		r.Recorder.Eventf(mak, nil, corev1.EventTypeWarning, ReasonRecordRebuilt, "Rebuild",
			"the key record was missing: rebuilt it from the workload Secret; older key versions are no longer accepted")
	}

	d := decideIssue(mak, rec, wl, now)
	currentHash := ""
	if d.issue {
		var v record.Version
		v, recSecret, wlSecret, err = r.issue(ctx, mak, recSecret, rec, wlSecret, now)
		if err != nil {
			return ctrl.Result{}, err
		}
		currentHash = v.Hash
		keysIssued.WithLabelValues(d.reason).Inc()
		log.Info("issued key", "reason", d.reason, "keyID", v.ID)
		evType := corev1.EventTypeNormal
		if d.drift {
			evType = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(mak, nil, evType, d.reason, "Issue", "%s (key %s)", d.message, v.ID)
		// The settle step below works on what issue wrote: the API server's
		// answers to its writes, so no read is needed.
		if rec, err = record.Decode(recSecret); err != nil {
			return ctrl.Result{}, err
		}
	} else {
		currentHash = apikey.HashOf(wl.key).String()
	}

	// Settle: policy, expiries of superseded versions, tombstones, metadata.
	if rec == nil {
		return ctrl.Result{}, errors.New("key record missing after issuing a key")
	}
	desired := &record.Record{Owner: ownerOf(mak), Policy: policyFor(mak),
		Keys: settleVersions(rec.Keys, findVersion(rec, currentHash), overlap(mak), r.TombstoneRetention, now)}
	if _, err := r.writeRecord(ctx, mak, recSecret, desired); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.writeWorkloadMeta(ctx, mak, wlSecret); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.deleteOldSecret(ctx, mak); err != nil {
		return ctrl.Result{}, err
	}

	mak.Status.SecretName = secretName(mak)
	mak.Status.CurrentKey, mak.Status.PreviousKeys = statusFor(mak, desired, currentHash, now)
	switch {
	case mak.Spec.Disabled:
		setReady(mak, metav1.ConditionFalse, ReasonDisabled, "the key is disabled: every version is refused and rotation is paused")
	case expired(mak, now):
		setReady(mak, metav1.ConditionFalse, ReasonExpired, "spec.expiresAt has passed: every version is refused")
	default:
		setReady(mak, metav1.ConditionTrue, ReasonReady, "the current key is recorded and delivered to Secret "+secretName(mak))
	}

	if next := nextDeadline(mak, desired, currentHash, r.TombstoneRetention, now); !next.IsZero() {
		return ctrl.Result{RequeueAfter: next.Sub(now)}, nil
	}
	return ctrl.Result{}, nil
}

// issue writes a new key: first to the record, then to the workload Secret,
// so every key a workload can ever read is already accepted. It returns the
// new version and both Secrets as written; the plaintext leaves this
// function only in the workload Secret.
func (r *MeterrAPIKeyReconciler) issue(ctx context.Context, mak *authv1alpha1.MeterrAPIKey,
	recSecret *corev1.Secret, rec *record.Record, wlSecret *corev1.Secret, now time.Time) (record.Version, *corev1.Secret, *corev1.Secret, error) {
	key, err := apikey.Generate(environment(mak))
	if err != nil {
		return record.Version{}, nil, nil, fmt.Errorf("generating key: %w", err)
	}
	issuedAt := now.Truncate(time.Second)
	v := record.NewVersion(key, issuedAt)

	next := &record.Record{Owner: ownerOf(mak), Policy: policyFor(mak)}
	if rec != nil {
		next.Keys = append(next.Keys, rec.Keys...)
	}
	next.Keys = append(next.Keys, v)
	if recSecret, err = r.writeRecord(ctx, mak, recSecret, next); err != nil {
		return record.Version{}, nil, nil, err
	}

	s := wlSecret
	if s == nil {
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: mak.Namespace, Name: secretName(mak)}}
	}
	s.Type = corev1.SecretTypeOpaque
	s.Data = map[string][]byte{DataKeyAPIKey: []byte(key), DataKeyEnv: []byte(key)}
	s.StringData = nil
	s.Labels, s.Annotations = workloadMeta(mak, v.ID, issuedAt)
	if err := controllerutil.SetControllerReference(mak, s, r.Scheme()); err != nil {
		return record.Version{}, nil, nil, fmt.Errorf("owning workload Secret: %w", err)
	}
	if wlSecret == nil {
		err = r.Create(ctx, s)
	} else {
		err = r.Update(ctx, s)
	}
	if err != nil {
		return record.Version{}, nil, nil, fmt.Errorf("writing workload Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return v, recSecret, s, nil
}

func (r *MeterrAPIKeyReconciler) rebuildRecord(mak *authv1alpha1.MeterrAPIKey, s *corev1.Secret, key string, now time.Time) *record.Record {
	issuedAt := now.Truncate(time.Second)
	if t, err := time.Parse(time.RFC3339, s.Annotations[AnnotationIssuedAt]); err == nil {
		issuedAt = t
	}
	return &record.Record{Owner: ownerOf(mak), Policy: policyFor(mak), Keys: []record.Version{record.NewVersion(key, issuedAt)}}
}

// readRecord reads the key record uncached; a missing record is (nil, nil, nil).
func (r *MeterrAPIKeyReconciler) readRecord(ctx context.Context, mak *authv1alpha1.MeterrAPIKey) (*corev1.Secret, *record.Record, error) {
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
	return s, rec, nil
}

// readWorkload reads the workload Secret uncached (a foreign Secret of that
// name carries none of our labels, so the cache would not show it).
func (r *MeterrAPIKeyReconciler) readWorkload(ctx context.Context, mak *authv1alpha1.MeterrAPIKey) (*corev1.Secret, workload, error) {
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: mak.Namespace, Name: secretName(mak)}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, workload{}, nil
		}
		return nil, workload{}, fmt.Errorf("reading workload Secret %s/%s: %w", mak.Namespace, secretName(mak), err)
	}
	wl := workload{exists: true, owned: metav1.IsControlledBy(s, mak)}
	key := string(s.Data[DataKeyAPIKey])
	if apikey.Parse(key) == nil && string(s.Data[DataKeyEnv]) == key &&
		apikey.IsLive(key) == (environment(mak) == apikey.EnvProduction) {
		wl.key, wl.intact = key, true
	}
	return s, wl, nil
}

// writeRecord creates or updates the record when its content differs, and
// returns the record Secret as the API server holds it.
func (r *MeterrAPIKeyReconciler) writeRecord(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, existing *corev1.Secret, rec *record.Record) (*corev1.Secret, error) {
	data, err := record.Encode(rec)
	if err != nil {
		return nil, fmt.Errorf("encoding key record: %w", err)
	}
	s := existing
	if s == nil {
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.RecordsNamespace, Name: record.Name(mak.Namespace, mak.Name, mak.UID)}}
	} else if string(s.Data[record.DataKey]) == string(data) && maps.Equal(s.Labels, record.Labels()) &&
		s.Annotations[record.AnnotationOwner] == ownerOf(mak).String() {
		return s, nil
	}
	s.Labels = record.Labels()
	s.Annotations = map[string]string{record.AnnotationOwner: ownerOf(mak).String()}
	s.Type = corev1.SecretTypeOpaque
	s.Data = map[string][]byte{record.DataKey: data}
	if existing == nil {
		err = r.Create(ctx, s)
	} else {
		err = r.Update(ctx, s)
	}
	if err != nil {
		return nil, fmt.Errorf("writing key record %s/%s: %w", s.Namespace, s.Name, err)
	}
	return s, nil
}

// writeWorkloadMeta keeps the workload Secret's labels and annotations in
// line with spec.secretTemplate without touching the key.
func (r *MeterrAPIKeyReconciler) writeWorkloadMeta(ctx context.Context, mak *authv1alpha1.MeterrAPIKey, s *corev1.Secret) error {
	if s == nil {
		return nil
	}
	issuedAt, _ := time.Parse(time.RFC3339, s.Annotations[AnnotationIssuedAt])
	labels, annotations := workloadMeta(mak, s.Annotations[AnnotationKeyID], issuedAt)
	if maps.Equal(labels, s.Labels) && maps.Equal(annotations, s.Annotations) {
		return nil
	}
	s.Labels, s.Annotations = labels, annotations
	if err := r.Update(ctx, s); err != nil {
		return fmt.Errorf("updating workload Secret %s/%s metadata: %w", s.Namespace, s.Name, err)
	}
	return nil
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
	if !controllerutil.ContainsFinalizer(mak, Finalizer) {
		return nil
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.RecordsNamespace, Name: record.Name(mak.Namespace, mak.Name, mak.UID)}}
	if err := r.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting key record %s/%s: %w", s.Namespace, s.Name, err)
	}
	controllerutil.RemoveFinalizer(mak, Finalizer)
	if err := r.Update(ctx, mak); err != nil {
		return fmt.Errorf("removing finalizer: %w", client.IgnoreNotFound(err))
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
	labels[record.LabelManagedBy] = record.ManagedByValue
	annotations[AnnotationKeyID] = keyID
	if !issuedAt.IsZero() {
		annotations[AnnotationIssuedAt] = issuedAt.UTC().Format(time.RFC3339)
	}
	return labels, annotations
}

// setReady sets the Ready condition, stamped with the generation it describes.
func setReady(mak *authv1alpha1.MeterrAPIKey, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&mak.Status.Conditions, metav1.Condition{
		Type: ConditionReady, Status: status, Reason: reason, Message: message, ObservedGeneration: mak.Generation,
	})
}

func isReady(mak *authv1alpha1.MeterrAPIKey, status metav1.ConditionStatus, reason string) bool {
	c := meta.FindStatusCondition(mak.Status.Conditions, ConditionReady)
	return c != nil && c.Status == status && c.Reason == reason
}

// CacheOptions limits the manager's cache to Secrets the operator manages,
// instead of every Secret in the cluster.
func CacheOptions() cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{record.LabelManagedBy: record.ManagedByValue})},
	}}
}

// SetupWithManager registers the controller. Records live in another
// namespace and cannot carry owner references, so their events are mapped
// back through the owner annotation.
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
	return ctrl.NewControllerManagedBy(mgr).
		For(&authv1alpha1.MeterrAPIKey{}).
		Owns(&corev1.Secret{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(mapRecordToKey),
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
				return o.GetNamespace() == r.RecordsNamespace && o.GetLabels()[record.LabelRecord] == "true"
			}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.MaxConcurrentReconciles)}).
		Named("meterrapikey").
		Complete(r)
}

func mapRecordToKey(_ context.Context, o client.Object) []reconcile.Request {
	ns, name, ok := splitOwner(o.GetAnnotations()[record.AnnotationOwner])
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
}

func splitOwner(s string) (string, string, bool) {
	ns, name, ok := strings.Cut(s, "/")
	return ns, name, ok && ns != "" && name != ""
}
